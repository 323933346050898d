"""The province's one-time enrolment codes: which device ids may enrol, until when, once.

``keys/pki/claims.json`` (0600) holds, per device id, the MAC key derived from
its code (never the code itself), its expiry and when it was used. A code is
spent by the first request that verifies under it; a replayed request then
finds it used. Once enrolled, the entry also keeps the hash of the device's
renewal password and the time of its last renewal request (a replayed renewal
is not newer). Every change happens under ``keys/pki/.claims.lock``, so that
warehouse workers in several processes and ``sohoa enroll allow`` never lose
each other's updates.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from sync.durable import atomic_write, file_lock
from sync.enrol_messages import code_key, new_code
from sync.errors import CryptoError
from sync.protocol import valid_device_id


@dataclass(frozen=True)
class Claim:
    key: str  # hex MAC key derived from the code
    expires: str
    used: str | None = None
    renew: str | None = None  # mosquitto hash of the renewal identity's password
    renewed: str | None = None  # the time in the last renewal request accepted


def is_open(claim: Claim, now: dt.datetime | None = None) -> bool:
    """Not used yet and not expired."""
    now = now or dt.datetime.now(dt.UTC)
    return claim.used is None and dt.datetime.fromisoformat(claim.expires) >= now


def claims_path(keys_dir: Path) -> Path:
    return keys_dir / "pki" / "claims.json"


def load_claims(keys_dir: Path) -> dict[str, Claim]:
    try:
        raw: Any = json.loads(claims_path(keys_dir).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError:
        raise CryptoError(
            f"the enrolment register {claims_path(keys_dir)} is damaged", "restore it from backup"
        ) from None
    return {device: Claim(**claim) for device, claim in raw.items()}


def _save(keys_dir: Path, claims: dict[str, Claim]) -> None:
    body = json.dumps({d: asdict(c) for d, c in sorted(claims.items())}, indent=1)
    atomic_write(
        claims_path(keys_dir), body.encode() + b"\n", mode=0o600, what="the enrolment register"
    )


def allow(keys_dir: Path, device_id: str, *, days: int = 7) -> str:
    """Let ``device_id`` enrol once within ``days``; the one-time code for the technician."""
    valid_device_id(device_id)
    code = new_code()
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=days)
    key = code_key(device_id, code).hex()
    with locked(keys_dir):
        claims = load_claims(keys_dir)
        old = claims.get(device_id)
        claims[device_id] = Claim(key, expires.isoformat(), renew=old.renew if old else None)
        _save(keys_dir, claims)
    return code


def locked(keys_dir: Path) -> contextlib.AbstractContextManager[None]:
    """The register's lock: hold it from reading a claim to spending it."""
    return file_lock(keys_dir / "pki" / ".claims.lock")


def open_claim(keys_dir: Path, device_id: str) -> bytes:
    """The MAC key of ``device_id``'s live claim; refused when there is none."""
    claim = load_claims(keys_dir).get(device_id)
    hint = f"ask the province to run `sohoa enroll allow {device_id}` and use the new code"
    if claim is None:
        raise CryptoError(f"device {device_id} is not on the enrolment list", hint)
    if claim.used is not None:
        raise CryptoError(
            f"the one-time code for {device_id} was already used ({claim.used})", hint
        )
    if dt.datetime.fromisoformat(claim.expires) < dt.datetime.now(dt.UTC):
        raise CryptoError(
            f"the one-time code for {device_id} expired on {claim.expires[:10]}", hint
        )
    return bytes.fromhex(claim.key)


def spend(keys_dir: Path, device_id: str, renew_hash: str) -> None:
    """Mark the code used and keep the device's renewal password hash (hold ``locked``)."""
    claims = load_claims(keys_dir)
    now = dt.datetime.now(dt.UTC).isoformat()
    claims[device_id] = replace(claims[device_id], used=now, renew=renew_hash)
    _save(keys_dir, claims)


def note_renewal(keys_dir: Path, device_id: str, stamp: str) -> None:
    """Accept a renewal request made at ``stamp`` unless one as new was already accepted
    (hold ``locked``)."""
    claims = load_claims(keys_dir)
    claim = claims.get(device_id)
    if claim is None or claim.renew is None:
        raise CryptoError(
            f"device {device_id} was not enrolled with a one-time code",
            f"enrol it again: `sohoa enroll allow {device_id}`",
        )
    if claim.renewed is not None and dt.datetime.fromisoformat(
        claim.renewed
    ) >= dt.datetime.fromisoformat(stamp):
        raise CryptoError(
            f"the renewal request of {device_id} is a replay (not newer than {claim.renewed})",
            "nothing was changed; the device makes a fresh request by itself",
        )
    claims[device_id] = replace(claim, renewed=stamp)
    _save(keys_dir, claims)
