"""API keys (admin): create (optionally expiring), list, revoke (the bootstrap key too,
as id ``00000000``).  A new key is shown once."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from foursave.api.deps import KeyAdmin, State
from foursave.api.keys import BOOTSTRAP_ID, KeyRequestError

router = APIRouter(prefix="/api/v1", tags=["admin"])


class KeyOut(BaseModel):
    id: str
    name: str
    role: str
    created_at: str
    created_by: str
    revoked_at: str | None
    expires_at: str | None = Field(None, description="refused from then on (UTC); None: never")


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100, description="who or what uses the key")
    role: Literal["viewer", "engineer", "auditor", "admin"]
    expires: AwareDatetime | None = Field(
        None,
        description="ISO date-time with its offset from which the key is refused; "
        "omit for a key that lasts until revoked",
        examples=["2026-12-31T23:59:59+08:00"],
    )


class KeyCreated(KeyOut):
    key: str = Field(description="the key itself: shown this once, stored only as a hash")


@router.get("/keys")
def list_keys(who: KeyAdmin, state: State) -> list[KeyOut]:
    """Every key (never the secrets)."""
    return [KeyOut(**vars(k)) for k in state.keys.all()]


@router.post("/keys", status_code=201)
def create_key(body: KeyCreate, who: KeyAdmin, state: State) -> KeyCreated:
    """A new key for a role."""
    with state.write_lock:
        try:
            info, key = state.keys.create(body.name, body.role, who.name, body.expires)
        except KeyRequestError as exc:
            raise HTTPException(422, str(exc)) from None
    return KeyCreated(**vars(info), key=key)


@router.delete("/keys/{key_id}")
def revoke_key(key_id: str, who: KeyAdmin, state: State) -> KeyOut:
    """Revoke a key: it stops working at once (``00000000``: the bootstrap key, refused
    from now on even while its environment variable is still set)."""
    with state.write_lock:
        info = state.keys.revoke(key_id, by=who.name)
    if info is None:
        if key_id == BOOTSTRAP_ID:
            raise HTTPException(404, "no bootstrap key is configured")
        raise HTTPException(404, f"no key {key_id!r}")
    return KeyOut(**vars(info))
