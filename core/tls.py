"""Client TLS contexts for the broker (``mqtts://``) and InfluxDB (``https://``): the
peer's certificate checked against a CA file of ours or else the system's CAs, and a
client certificate when given.  A file that cannot be used is named in the error."""

from __future__ import annotations

import ssl


class TlsSettingsError(ValueError):
    """A CA file, certificate or key that cannot be used; the message names it."""


def client_context(
    where: str, ca_file: str | None, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """A context that checks the server's certificate and host name; ``where`` is the
    configuration section the files come from (``services.mqtt``)."""
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise TlsSettingsError(
            f"{where}.ca_file {ca_file}: cannot be used as CA certificates ({reason})"
        ) from None
    if cert_file:
        try:
            ctx.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise TlsSettingsError(
                f"{where}.cert_file {cert_file} / key_file {key_file}: not a certificate "
                f"and its key ({exc})"
            ) from None
    return ctx
