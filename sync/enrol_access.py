"""Who may use the broker's enrolment listener, and for what.

The enrolment listener (TLS with the broker's certificate, no client
certificate, a ``password_file`` and an ACL of its own) admits two kinds of
identity, each limited to its own device's two enrolment topics:

- ``claim-<id>``: a device that has not enrolled yet. Its password is derived
  from the one-time code (both sides know the code key; the code itself never
  crosses the wire). It leaves the password file as soon as the code is spent
  or expires.
- ``renew-<id>``: an enrolled device renewing its certificate, also after the
  certificate expired. Its password is derived from the device's Ed25519 key;
  the province only ever sees its hash, which the device sent inside its
  enrolment request. A revoked device loses it.

Neither identity proves anything by itself: the request on the topic carries
the proof (a MAC under the code key, or the device's signature). The password
file and the ACL are regenerated from the registers on every change and
written into the folder ``sohoa broker config`` wrote (recorded in
``keys/pki/broker.json``); mosquitto reads them again on SIGHUP.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync import claims, pki
from sync.durable import atomic_write
from sync.errors import CryptoError
from sync.protocol import enrol_request_topic, enrol_response_topic

CLAIM_PREFIX = "claim-"
RENEW_PREFIX = "renew-"
HASH_ITERATIONS = 101  # what mosquitto_passwd writes
_HASH = re.compile(r"^\$7\$[0-9]{1,7}\$[A-Za-z0-9+/=]{8,64}\$[A-Za-z0-9+/=]{86,88}$")


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    """``password`` as a mosquitto password-file hash (``$7$``: PBKDF2-SHA512)."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, HASH_ITERATIONS, 64)
    b64 = base64.b64encode
    return f"$7${HASH_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def valid_hash(text: str) -> str:
    if not _HASH.match(text):
        raise CryptoError(
            "the request's broker password hash is malformed", "make a new request on the device"
        )
    return text


def claim_password(code_key: bytes) -> str:
    """The claim identity's password: a MAC of a constant under the code key."""
    return hmac.new(code_key, b"sohoa broker claim", hashlib.sha256).hexdigest()


def renew_password(device_key: Ed25519PrivateKey, device_id: str) -> str:
    """The renewal identity's password: Ed25519 signatures are deterministic, so the
    device derives the same secret from its key every time and stores nothing more."""
    signature = device_key.sign(f"sohoa broker renew {device_id}".encode())
    return hashlib.sha256(signature).hexdigest()


def passwd_text(users: dict[str, str]) -> str:
    return "".join(f"{user}:{digest}\n" for user, digest in sorted(users.items()))


def acl_text(users: dict[str, str]) -> str:
    """Each identity may publish its device's request and read its answer, nothing else."""
    lines = ["# written by sohoa: enrolment identities, regenerated on every change"]
    for user in sorted(users):
        device = user.removeprefix(CLAIM_PREFIX).removeprefix(RENEW_PREFIX)
        lines += [
            "",
            f"user {user}",
            f"topic write {enrol_request_topic(device)}",
            f"topic read {enrol_response_topic(device)}",
        ]
    return "\n".join(lines) + "\n"


def listener_users(keys_dir: Path) -> dict[str, str]:
    """The enrolment listener's identities and their password hashes, from the registers."""
    live_devices = set(pki.identities(keys_dir, "device"))
    users: dict[str, str] = {}
    for device, claim in claims.load_claims(keys_dir).items():
        if claims.is_open(claim):
            users[CLAIM_PREFIX + device] = mosquitto_hash(claim_password(bytes.fromhex(claim.key)))
        if claim.renew and device in live_devices:
            users[RENEW_PREFIX + device] = claim.renew
    return users


@dataclass(frozen=True)
class BrokerFiles:
    """Where ``sohoa broker config`` put the broker's files, and the mode they need."""

    folder: Path
    mode: int

    @staticmethod
    def record_path(keys_dir: Path) -> Path:
        return keys_dir / "pki" / "broker.json"

    def record(self, keys_dir: Path) -> None:
        body = json.dumps({"folder": str(self.folder), "mode": self.mode}).encode()
        atomic_write(self.record_path(keys_dir), body, mode=0o600, what="the broker record")

    @classmethod
    def recorded(cls, keys_dir: Path) -> BrokerFiles | None:
        try:
            raw = json.loads(cls.record_path(keys_dir).read_text(encoding="utf-8"))
            return cls(Path(raw["folder"]), int(raw["mode"]))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            raise CryptoError(
                f"{cls.record_path(keys_dir)} is damaged", "run `sohoa broker config` again"
            ) from None


def refresh(keys_dir: Path) -> Path | None:
    """Rewrite the enrolment listener's password file and ACL, and the broker's copy of
    the CRL; the password file's path,
    or None when this province has no broker configuration written by sohoa."""
    files = BrokerFiles.recorded(keys_dir)
    if files is None:
        return None
    users = listener_users(keys_dir)
    crl = pki.CaPaths.under(keys_dir).crl
    if crl.exists():  # a revocation reaches the broker with the same reload
        atomic_write(files.folder / "ca.crl", crl.read_bytes(), mode=0o644, what="the CRL")
    # the ACL first: a new identity is never admitted before its topics are limited
    acl = files.folder / "enrol.acl"
    atomic_write(acl, acl_text(users).encode(), mode=files.mode, what="the enrolment ACL")
    passwd = files.folder / "enrol.passwd"
    atomic_write(passwd, passwd_text(users).encode(), mode=files.mode, what="enrol.passwd")
    return passwd
