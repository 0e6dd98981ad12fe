"""The rules engine: four-saving ledger, PV performance, demand watch and alerts
(``foursave rules``).  Pure computation lives in modules of its own (``formulas``,
``pv``, ``demand``); the engine (``engine.py``) reads InfluxDB through the query layer
(``foursave.core.influxql``) and writes derived measurements back."""
