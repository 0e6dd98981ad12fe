"""The kernel every part of foursave shares: configuration schema, glossary, the reading
model and MQTT codec, topics, the InfluxDB client, clocks and the time kernel.  It
imports nothing else of foursave (``tests/test_layout.py``)."""
