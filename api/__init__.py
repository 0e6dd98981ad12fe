"""The HTTP API (FastAPI, ``/api/v1``), audit reports and the public display page.

``api.main.create_app`` builds the app; routes live in ``api/routes/``, the role checks
in ``api/deps.py``, keys in ``api/keys.py``, the display snapshot in ``api/snapshot.py``
and the report pipeline in ``api/reports/``.
"""
