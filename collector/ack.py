"""End-to-end acknowledgement: a reading leaves the collector's spool only once an
ingester has stored it (docs/design.md, "MQTT").

A broker's PUBACK only says the broker took a reading; a broker that crashes and
restarts from its last snapshot (mosquitto: ``autosave_interval``) forgets what it took
after that snapshot.  So the ingester, after each batch is in InfluxDB (or in its
dead-letter store, which is where a reading that can never be stored ends), publishes
which ``seq`` numbers of which devices it has stored, to the collector that took them:

    topic   foursave/v1/_collector/{collector_id}/ack      QoS 1, not retained
    payload {"ingester": "ingester-1", "ts": <epoch ms>,
             "seqs": {"inv-01": [[40, 57], [59, 59]], ...}}     inclusive ranges

Each ingester confirms what it stored, so any number of them may run (one
subscription each, or a shared subscription between them).  The collector deletes
what is confirmed and publishes again what stays unconfirmed (``collector/publisher.py``
says when).  A reading stored twice is harmless: InfluxDB keeps one point per series
and timestamp, and the ingester counts it as a duplicate, not a gap.

Pure: build and parse, no broker.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from foursave.core.glossary import SLUG
from foursave.core.reading import INT_MAX, MAX_PAYLOAD_BYTES, PayloadError, load_json

Ranges = list[tuple[int, int]]
# an acknowledgement stays well under the payload limit every receiver applies
_ACK_BUDGET_BYTES = MAX_PAYLOAD_BYTES // 2
_RANGES_PER_CHUNK = 500  # at most 45 bytes each: one chunk always fits the budget


def ranges(seqs: Iterable[int]) -> Ranges:
    """Sorted inclusive ranges covering ``seqs``: {1, 2, 3, 7} -> [(1, 3), (7, 7)]."""
    out: Ranges = []
    for s in sorted(set(seqs)):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


def encode_acks(ingester_id: str, ts_ms: int, seqs: Mapping[str, Iterable[int]]) -> list[bytes]:
    """One collector's acknowledgements for a batch, as payloads each within the size
    budget (a batch that spans many devices, or a broken run of seqs, is split)."""
    payloads: list[bytes] = []
    part: dict[str, list[list[int]]] = {}
    size = 0
    for device in sorted(seqs):
        rs = ranges(seqs[device])
        for i in range(0, len(rs), _RANGES_PER_CHUNK):
            chunk = [[lo, hi] for lo, hi in rs[i : i + _RANGES_PER_CHUNK]]
            cost = len(device) + 8 + sum(len(str(lo)) + len(str(hi)) + 4 for lo, hi in chunk)
            if part and size + cost > _ACK_BUDGET_BYTES:
                payloads.append(_payload(ingester_id, ts_ms, part))
                part, size = {}, 0
            part.setdefault(device, []).extend(chunk)
            size += cost
    if part:
        payloads.append(_payload(ingester_id, ts_ms, part))
    return payloads


def _payload(ingester_id: str, ts_ms: int, part: dict[str, list[list[int]]]) -> bytes:
    body = {"ingester": ingester_id, "ts": ts_ms, "seqs": part}
    return json.dumps(body, separators=(",", ":")).encode()


def decode_ack(payload: bytes) -> dict[str, Ranges]:
    """An acknowledgement's ranges per device; ``PayloadError`` names what is wrong."""
    body = load_json(payload, "acknowledgement")
    if not isinstance(body, dict) or not isinstance(body.get("seqs"), dict):
        raise PayloadError("acknowledgement: expected an object with 'seqs'")
    out: dict[str, Ranges] = {}
    for device, rs in body["seqs"].items():
        if not isinstance(device, str) or not SLUG.match(device):
            raise PayloadError(f"acknowledgement: device {device!r} is not a slug"[:200])
        if not isinstance(rs, list):
            raise PayloadError(f"acknowledgement.seqs.{device}: expected a list of [lo, hi]")
        parsed: Ranges = []
        for r in rs:
            if not (
                isinstance(r, list)
                and len(r) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) for x in r)
                and 0 <= r[0] <= r[1] <= INT_MAX
            ):
                raise PayloadError(
                    f"acknowledgement.seqs.{device}: {r!r} is not [lo, hi] with "
                    "0 <= lo <= hi < 2**63"[:200]
                )
            parsed.append((r[0], r[1]))
        out[device] = parsed
    return out


def ack_key(payload: bytes) -> tuple[str, int] | None:
    """(collector, seq) of a reading payload that could not be stored, so that its
    dead-lettering is acknowledged too; None when the payload does not say."""
    try:
        body = load_json(payload, "reading")
    except PayloadError:
        return None
    if not isinstance(body, dict):
        return None
    collector, seq = body.get("collector"), body.get("seq")
    if not isinstance(collector, str) or not SLUG.match(collector):
        return None
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= INT_MAX:
        return None
    return collector, seq
