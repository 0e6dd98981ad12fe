"""Upload the dashboards and the data source to an existing Grafana (grafana-client).

Idempotent: the data source and every dashboard keep their uid, so a second push
updates instead of duplicating.  Authentication: a service-account token
(``FOURSAVE_GRAFANA_TOKEN``) or a user and password (``--user``,
``FOURSAVE_GRAFANA_PASSWORD``).
"""

from __future__ import annotations

import logging

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError

from foursave.dashboards.build import (
    DASHBOARDS,
    DEFAULT_TIMEZONE,
    DS_UID,
    dashboard_json,
    datasource_json,
)

log = logging.getLogger("foursave.dashboards")
FOLDER_UID = "foursave"


def push(
    url: str,
    credential,
    influx_url: str,
    database: str,
    tz: str = DEFAULT_TIMEZONE,
    influx_login: tuple[str, str] | None = None,
    retention: bool = False,
) -> list[str]:
    """Push the data source (logging in to InfluxDB as ``influx_login``, the reader's
    user and password, when given), the folder and every dashboard (in time zone
    ``tz``; ``retention``: reading the readings and rollups where
    ``services.influxdb.retention`` puts them); returns what was done."""
    api = GrafanaApi.from_url(url, credential)
    done = []
    user, password = influx_login if influx_login else (None, None)
    ds = datasource_json(influx_url, database, user, password)
    try:
        api.datasource.get_datasource_by_uid(DS_UID)
        api.datasource.update_datasource_by_uid(DS_UID, ds)
        done.append(f"data source {DS_UID} updated")
    except GrafanaClientError as exc:
        if exc.status_code != 404:
            raise
        api.datasource.create_datasource(ds)
        done.append(f"data source {DS_UID} created")
    try:
        api.folder.get_folder(FOLDER_UID)
    except GrafanaClientError as exc:
        if exc.status_code != 404:
            raise
        api.folder.create_folder("foursave", uid=FOLDER_UID)
        done.append("folder foursave created")
    for name in DASHBOARDS:
        body = dashboard_json(name, tz, retention)
        body.pop("id", None)
        api.dashboard.update_dashboard(
            {
                "dashboard": body,
                "folderUid": FOLDER_UID,
                "overwrite": True,
                "message": "foursave dashboards push",
            }
        )
        done.append(f"dashboard {body['uid']} pushed")
    return done
