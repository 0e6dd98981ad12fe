"""foursave: building-energy and solar monitoring for the Tainan four-saving programme.

One import namespace. The design card's folders stay at the top of the repository and
install as sub-packages (``pyproject.toml``, ``[tool.setuptools.package-dir]``):

========================  =====================  ==========================================
folder                    import name            may import
========================  =====================  ==========================================
``core/``                 ``foursave.core``      the standard library and third parties only
``collector/``            ``foursave.collector`` core
``simulators/``           ``foursave.simulators`` core, collector (profiles, register planning)
``rules/``                ``foursave.rules``     core
``reports/``              ``foursave.reports``   core, rules
``api/``                  ``foursave.api``       core, rules, reports
``dashboards/``           ``foursave.dashboards`` core
``foursave/``             ``foursave``           everything: the composition root
                                                 (``app.py``), the CLI, the demo and the
                                                 local mosquitto / influxd launcher, and
                                                 the broker's accounts (``brokerconf.py``)
========================  =====================  ==========================================

``tests/test_layout.py`` checks the table against the code.
"""

__version__ = "0.1.0"
