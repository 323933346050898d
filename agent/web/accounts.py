"""Sign-in accounts for the sohoa web pages (the counter page, the fleet page).

``<home>/web/accounts.json`` (0600) maps a name to an scrypt hash of its
password (n = 2^14, r = 8, p = 1, a 16-byte salt): what ``sohoa ui passwd NAME``
writes. Passwords are never stored or logged; verification takes constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from pathlib import Path
from typing import Any

from sync.durable import atomic_write, file_lock
from sync.errors import ConfigError

SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 14, 8, 1
MIN_PASSWORD = 8
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")


def accounts_path(home: Path) -> Path:
    return home / "web" / "accounts.json"


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=32,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


# a fixed hash to check against when the name is unknown, so timing does not tell
_DUMMY = hash_password("not-a-password", b"\0" * 16)


def load_accounts(home: Path) -> dict[str, str]:
    try:
        raw: Any = json.loads(accounts_path(home).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError:
        raise ConfigError(
            f"{accounts_path(home)} is damaged", "set the passwords again: sohoa ui passwd NAME"
        ) from None
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


def valid_name(name: str) -> str:
    if not NAME.match(name):
        raise ConfigError(
            f"account name {name!r} is not allowed",
            "use 1 to 32 lowercase letters, digits, '.', '_' or '-'",
        )
    return name


def set_password(home: Path, name: str, password: str) -> None:
    valid_name(name)
    if len(password) < MIN_PASSWORD:
        raise ConfigError(
            f"the password is shorter than {MIN_PASSWORD} characters", "choose a longer one"
        )
    with file_lock(home / "web" / ".accounts.lock"):
        accounts = load_accounts(home)
        accounts[name] = hash_password(password)
        body = json.dumps(accounts, indent=1, sort_keys=True).encode() + b"\n"
        atomic_write(accounts_path(home), body, mode=0o600, what="the account list")


def remove_account(home: Path, name: str) -> bool:
    with file_lock(home / "web" / ".accounts.lock"):
        accounts = load_accounts(home)
        if accounts.pop(name, None) is None:
            return False
        body = json.dumps(accounts, indent=1, sort_keys=True).encode() + b"\n"
        atomic_write(accounts_path(home), body, mode=0o600, what="the account list")
    return True


def verify(home: Path, name: str, password: str) -> bool:
    """Whether ``name`` signs in with ``password`` (the file is read each time, so a
    password set with ``sohoa ui passwd`` works without a restart)."""
    stored = load_accounts(home).get(name)
    ok = check_password(password, stored or _DUMMY)
    return ok and stored is not None
