"""Grafana dashboards as code (grafana-foundation-sdk builders in ``build.py``), their
generated JSON (``json/``), the provisioning files and the push over Grafana's HTTP API
(``foursave dashboards``)."""
