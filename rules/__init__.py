"""The rules engine: four-saving ledger, PV performance, demand watch and alerts.

Not built yet: see the issue "Rules engine: the four-saving ledger, PV performance,
demand watch and alerts with a real lifecycle".
"""
