"""Start a real mosquitto and a real influxd as local processes (demo and tests).

No Docker engine exists on the development machines (docs/design.md): the binaries come from
the Debian packages ``mosquitto`` and ``influxdb`` and run on the given ports with
their data in the given directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import getpass
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


class ServiceError(RuntimeError):
    pass


def die_with_parent() -> None:
    """``preexec_fn`` for children of a launcher: on Linux the kernel sends them SIGTERM
    when the thread that started them dies, so a launcher killed with SIGKILL (or a
    crashed test run) leaves no orphaned broker, database or service behind.  Call
    only from the main thread's Popen: the signal follows the starting thread."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


_handed_out: set[int] = set()


def free_port() -> int:
    """A port nobody listens on now, never the same twice in this process (the OS may
    hand a just-released port out again before its first user binds it)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _find(binary: str, *extra: str) -> str:
    for cand in (shutil.which(binary), *extra):
        if cand and Path(cand).exists():
            return cand
    raise ServiceError(
        f"{binary} not found; install the Debian package "
        f"({'mosquitto' if binary == 'mosquitto' else 'influxdb'}) or run ./scripts/test"
    )


def wait_until(predicate, timeout_s: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"{what}: process exited with code {proc.returncode}")
        time.sleep(delay)  # polling a child process we started; nothing to wait on
        delay = min(delay * 1.5, 0.25)
    raise ServiceError(f"{what}: not ready after {timeout_s:.0f} s")


@dataclass
class LocalService:
    name: str
    argv: list[str]
    host: str
    port: int
    workdir: Path
    log_path: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def ready(self) -> bool:
        return port_open(self.host, self.port)

    def start(self, timeout_s: float = 30.0) -> LocalService:
        if self.proc and self.proc.poll() is None:
            return self
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        main = threading.current_thread() is threading.main_thread()
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
            preexec_fn=die_with_parent if main else None,
        )
        log.close()
        try:
            wait_until(self.ready, timeout_s, f"{self.name} on port {self.port}", self.proc)
        except BaseException:  # never leave a half-started server behind
            self.proc.kill()
            self.proc.wait()
            raise
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        # the port must be free before anybody restarts us
        with contextlib.suppress(ServiceError):
            wait_until(lambda: not port_open(self.host, self.port), 5, f"{self.name} stop")

    @property
    def running(self) -> bool:
        return bool(self.proc and self.proc.poll() is None)

    def reload(self) -> None:
        """SIGHUP: mosquitto reads its password file and ACL again."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@dataclass(frozen=True)
class BrokerTls:
    """A TLS listener's files (PEM); with ``require_certificate`` a client must show a
    certificate signed by ``ca_file``."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    require_certificate: bool = False

    def lines(self) -> list[str]:
        return [
            f"cafile {self.ca_file}",
            f"certfile {self.cert_file}",
            f"keyfile {self.key_file}",
            f"require_certificate {'true' if self.require_certificate else 'false'}",
        ]


def mosquitto(
    port: int,
    datadir: Path,
    host: str = "127.0.0.1",
    *,
    auth_dir: Path | None = None,
    tls: BrokerTls | None = None,
    anonymous_dev: bool = False,
    extra_conf: str = "",
) -> LocalService:
    """A mosquitto on ``port`` whose clients log in with the accounts and ACL that
    ``foursave broker-config`` wrote into ``auth_dir`` (``passwd``, ``acl``; send the
    service SIGHUP to reload them: ``reload()``).  Without accounts only the explicitly
    named ``anonymous_dev`` lets everyone in: a benchmark's throw-away broker.
    ``extra_conf``: more of mosquitto.conf, last (a district's ``bridge.conf``)."""
    if auth_dir is None and not anonymous_dev:
        raise ServiceError("mosquitto: give the accounts (auth_dir) or ask for anonymous_dev")
    datadir.mkdir(parents=True, exist_ok=True)
    if auth_dir is not None:
        access = [
            "allow_anonymous false",
            f"password_file {auth_dir / 'passwd'}",
            f"acl_file {auth_dir / 'acl'}",
        ]
    else:
        access = ["allow_anonymous true"]
    conf = datadir / "mosquitto.conf"
    conf.write_text(
        "\n".join(
            [
                f"listener {port} {host}",
                *(tls.lines() if tls else []),
                *access,
                # as root mosquitto would drop to user 'mosquitto', who cannot write here
                f"user {getpass.getuser()}",
                "persistence true",
                f"persistence_location {datadir}/",
                "autosave_interval 5",
                # the ingester acknowledges only after InfluxDB accepted a batch: let
                # several batches be in flight, and keep everything else queued (and
                # persisted) for its session rather than in the ingester's memory
                "max_inflight_messages 10000",
                "max_queued_messages 0",
                "max_queued_bytes 0",
                "log_dest stderr",
                "log_type error",
                "log_type warning",
                "",
            ]
        )
        + extra_conf
    )
    return LocalService(
        "mosquitto",
        [_find("mosquitto", "/usr/sbin/mosquitto"), "-c", str(conf)],
        host,
        port,
        datadir,
        datadir / "mosquitto.log",
    )


def influxd(
    port: int,
    datadir: Path,
    host: str = "127.0.0.1",
    *,
    auth: bool = False,
    tls: tuple[str | Path, str | Path] | None = None,
    ca_file: str | Path | None = None,
) -> LocalService:
    """influxd on ``host:port`` with its data under ``datadir``.  ``auth``: users and
    passwords are checked (``[http] auth-enabled``; the first user must be an admin,
    ``foursave influx-setup`` makes them).  ``tls``: (certificate, private key) PEM
    files, served as https; the readiness check trusts ``ca_file`` (without one it
    only checks that https answers).  ``/ping`` needs no credentials in 1.x, so the
    readiness check works with auth on too."""
    datadir.mkdir(parents=True, exist_ok=True)
    rpc_port = free_port()
    conf = datadir / "influxdb.conf"
    http = [f"  auth-enabled = {'true' if auth else 'false'}"]
    if tls is not None:
        cert, key = (Path(p).resolve() for p in tls)
        http += [
            "  https-enabled = true",
            f'  https-certificate = "{cert}"',
            f'  https-private-key = "{key}"',
        ]
    http_extra = "\n".join(http)
    conf.write_text(
        f"""reporting-disabled = true
bind-address = "{host}:{rpc_port}"
[meta]
  dir = "{datadir}/meta"
[data]
  dir = "{datadir}/data"
  wal-dir = "{datadir}/wal"
  query-log-enabled = false
  cache-snapshot-write-cold-duration = "1m"
[coordinator]
  query-timeout = "60s"
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "{host}:{port}"
  log-enabled = false
  max-body-size = 0
{http_extra}
[continuous_queries]
  log-enabled = false
[logging]
  level = "warn"
"""
    )
    svc = LocalService(
        "influxd",
        [_find("influxd", "/usr/bin/influxd"), "-config", str(conf)],
        host,
        port,
        datadir,
        datadir / "influxd.log",
    )
    scheme = "https" if tls is not None else "http"
    verify: bool | ssl.SSLContext = False
    if tls is not None and ca_file is not None:
        verify = ssl.create_default_context(cafile=str(ca_file))

    def ready() -> bool:
        try:
            url = f"{scheme}://{host}:{port}/ping"
            return httpx.get(url, timeout=0.5, verify=verify).status_code == 204
        except httpx.HTTPError:
            return False

    svc.ready = ready  # type: ignore[method-assign]
    return svc
