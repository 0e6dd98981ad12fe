"""MQTT topics (docs/design.md, "MQTT").  Pure: build and parse, no broker."""

from __future__ import annotations

from dataclasses import dataclass

from foursave.core.glossary import SLUG

PREFIX = "foursave/v1"
_SLUG = SLUG

READINGS_FILTER = f"{PREFIX}/+/+/reading"
STATUS_FILTER = f"{PREFIX}/+/+/status"
RULES_PREFIX = f"{PREFIX}/_rules"  # rules partitions' claims on their sites (rules/claim.py)
RULES_CLAIMS_FILTER = f"{RULES_PREFIX}/+/+/claim"


def reading_topic(site: str, device: str) -> str:
    return f"{PREFIX}/{site}/{device}/reading"


def status_topic(site: str, device: str) -> str:
    return f"{PREFIX}/{site}/{device}/status"


def collector_topic(collector_id: str) -> str:
    return f"{PREFIX}/_collector/{collector_id}/status"


def ack_topic(collector_id: str) -> str:
    """Where ingesters confirm what they stored of this collector's readings."""
    return f"{PREFIX}/_collector/{collector_id}/ack"


def ingester_topic(ingester_id: str) -> str:
    return f"{PREFIX}/_ingester/{ingester_id}/status"


def rules_claim_topic(partition: str, instance: str) -> str:
    """A running rules process's retained claim on its partition's sites (six levels:
    no status filter of devices matches it)."""
    return f"{RULES_PREFIX}/{partition}/{instance}/claim"


def rules_probe_topic(partition: str, instance: str) -> str:
    """Where a rules process sends itself a message to know the claims have arrived."""
    return f"{RULES_PREFIX}/{partition}/{instance}/probe"


def bridge_topic(name: str) -> str:
    """A district bridge's state, retained: "1" connected, "0" not (its last will)."""
    return f"{PREFIX}/_bridge/{name}/state"


def alert_topic(site: str, rule_id: str) -> str:
    return f"{PREFIX}/{site}/alert/{rule_id}"


@dataclass(frozen=True)
class DeviceTopic:
    site: str
    device: str
    kind: str  # "reading" | "status"


class TopicError(ValueError):
    pass


def parse_device_topic(topic: str) -> DeviceTopic:
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != PREFIX:
        raise TopicError(f"topic {topic!r} is not {PREFIX}/<site>/<device>/<reading|status>")
    site, device, kind = parts[2:]
    if kind not in ("reading", "status"):
        raise TopicError(f"topic {topic!r}: last level must be 'reading' or 'status'")
    for name, value in (("site", site), ("device", device)):
        if not _SLUG.match(value):
            raise TopicError(f"topic {topic!r}: {name} {value!r} is not a lower-case slug")
    return DeviceTopic(site, device, kind)
