"""Grafana dashboards as code, their generated JSON and provisioning files.

Not built yet: see the issue "Grafana for the facilities engineers".
"""
