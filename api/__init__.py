"""The HTTP API (FastAPI, ``/api/v1``), audit reports and the public display page.

``foursave.api.main.create_app`` builds the app; routes live in ``api/routes/``, the role
checks in ``api/deps.py``, keys in ``api/keys.py`` and the display snapshot in
``api/snapshot.py``.  Reports are built in ``reports/`` (``foursave.reports``); the API
only renders what that package returns.
"""
