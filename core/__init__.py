"""What every part of foursave shares: configuration, glossary, MQTT topics and codec,
the InfluxDB client, clocks and the launcher for local services."""
