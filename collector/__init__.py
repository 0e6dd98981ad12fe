"""Modbus polling, register-map profiles, SunSpec discovery, MQTT publishing with
store-and-forward (``foursave collect``), and the MQTT -> InfluxDB ingester
(``foursave ingest``)."""
