"""The HTTP API (FastAPI, ``/api/v1``), audit reports and the public display page.

Not built yet: see the issue "What people see: the HTTP API with roles, the public
display screen, and the audit committee's reports".
"""
