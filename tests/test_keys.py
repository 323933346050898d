"""Key files: device key, warehouse key generations, device enrolment (real crypto, real files)."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed448, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync.enrolment import enroll_device, load_enrolled
from sync.errors import CryptoError, ExitCode
from sync.keys import (
    device_fingerprint,
    device_public_path,
    init_device_keys,
    init_warehouse_keys,
    load_device_key,
    load_device_public,
    load_warehouse_private,
    load_warehouse_public,
    rotate_warehouse_keys,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o000, 0o077, 0o027], ids=lambda m: f"umask {m:03o}")
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    yield int(request.param)
    os.umask(old)


def pem_public(key: object) -> bytes:
    return key.public_key().public_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def pem_private(key: object, password: bytes | None = None) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc
    )


# -- device key ---------------------------------------------------------------


def test_device_key_is_private_and_public_key_sits_beside_it(tmp_path: Path) -> None:
    key_path = tmp_path / "keys" / "device.key"
    pub = init_device_keys(key_path)
    assert device_public_path(key_path) == tmp_path / "keys" / "device.pub"
    assert (mode(key_path), mode(tmp_path / "keys" / "device.pub")) == (0o600, 0o644)
    assert load_device_key(key_path).public_key() == pub
    assert load_device_public(tmp_path / "keys" / "device.pub") == pub
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["device.key", "device.pub"]


def test_key_file_modes_do_not_depend_on_the_umask(tmp_path: Path, umask: int) -> None:
    init_device_keys(tmp_path / "device.key")
    init_warehouse_keys(tmp_path / "warehouse.key", tmp_path / "warehouse.pub")
    names = ("device.key", "device.pub", "warehouse.key", "warehouse.pub")
    assert [mode(tmp_path / n) for n in names] == [0o600, 0o644, 0o600, 0o644]


def test_device_key_init_refuses_to_replace_a_key_unless_forced(tmp_path: Path) -> None:
    key_path = tmp_path / "device.key"
    first = init_device_keys(key_path)
    with pytest.raises(CryptoError, match="already exists") as err:
        init_device_keys(key_path)
    assert "--force" in err.value.hint
    assert err.value.exit_code == ExitCode.crypto
    assert load_device_key(key_path).public_key() == first
    second = init_device_keys(key_path, force=True)
    assert second != first
    assert load_device_public(tmp_path / "device.pub") == second


def write_file(path: Path, data: bytes, file_mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(file_mode)
    return path


BAD_DEVICE_KEYS: list[tuple[str, Callable[[Path], Path], str]] = [
    ("missing", lambda d: d / "nope.key", r"does not exist"),
    ("directory", lambda d: d, r"is not a regular file"),
    (
        "group readable",
        lambda d: write_file(d / "k", pem_private(Ed25519PrivateKey.generate()), 0o640),
        r"readable by other users \(mode 0640\)",
    ),
    ("garbage", lambda d: write_file(d / "k", b"not a key\n"), r"not an unencrypted PEM"),
    (
        "encrypted",
        lambda d: write_file(d / "k", pem_private(Ed25519PrivateKey.generate(), b"pw")),
        r"not an unencrypted PEM",
    ),
    (
        "x25519 key",
        lambda d: write_file(d / "k", pem_private(x25519.X25519PrivateKey.generate())),
        r"is not an Ed25519 key",
    ),
    (
        "ed448 key",
        lambda d: write_file(d / "k", pem_private(ed448.Ed448PrivateKey.generate())),
        r"is not an Ed25519 key",
    ),
]


@pytest.mark.parametrize(
    ("make", "reason"), [c[1:] for c in BAD_DEVICE_KEYS], ids=[c[0] for c in BAD_DEVICE_KEYS]
)
def test_unusable_device_key_is_refused_with_its_cause(
    tmp_path: Path, make: Callable[[Path], Path], reason: str
) -> None:
    with pytest.raises(CryptoError, match=reason) as err:
        load_device_key(make(tmp_path))
    assert err.value.hint


def test_world_readable_device_key_hint_says_chmod_600(tmp_path: Path) -> None:
    key_path = tmp_path / "device.key"
    init_device_keys(key_path)
    key_path.chmod(0o644)
    with pytest.raises(CryptoError) as err:
        load_device_key(key_path)
    assert err.value.hint == f"run: chmod 600 {key_path}"


def test_device_fingerprint_is_short_stable_and_distinct(tmp_path: Path) -> None:
    a = init_device_keys(tmp_path / "a.key")
    b = init_device_keys(tmp_path / "b.key")
    fp = device_fingerprint(a)
    assert re.fullmatch(r"([0-9a-f]{4}:){7}[0-9a-f]{4}", fp)
    assert device_fingerprint(load_device_public(tmp_path / "a.pub")) == fp
    assert device_fingerprint(b) != fp


# -- warehouse keys -----------------------------------------------------------


def test_warehouse_key_files_hold_current_public_parts_only(tmp_path: Path) -> None:
    pub = init_warehouse_keys(tmp_path / "warehouse.key", tmp_path / "warehouse.pub")
    assert (mode(tmp_path / "warehouse.key"), mode(tmp_path / "warehouse.pub")) == (0o600, 0o644)
    doc = json.loads((tmp_path / "warehouse.pub").read_text())
    assert sorted(doc) == ["format", "key_id", "mlkem768x25519", "signing", "x25519"]
    assert sorted(doc["mlkem768x25519"]) == ["mlkem768", "x25519"]
    assert doc["format"] == "sohoa-warehouse-pub/1"
    assert re.fullmatch(r"[0-9a-f]{16}", pub.key_id)
    private = load_warehouse_private(tmp_path / "warehouse.key")
    assert [g.key_id for g in private.generations] == [pub.key_id]
    derived = private.public()
    assert (derived.key_id, derived.x25519, derived.signing) == (
        pub.key_id,
        pub.x25519,
        pub.signing,
    )
    assert base64.b64decode(doc["x25519"]) == pub.x25519.public_bytes_raw()


def test_warehouse_key_init_refuses_to_replace_keys_unless_forced(tmp_path: Path) -> None:
    paths = (tmp_path / "warehouse.key", tmp_path / "warehouse.pub")
    first = init_warehouse_keys(*paths)
    with pytest.raises(CryptoError, match="already exists"):
        init_warehouse_keys(*paths)
    assert load_warehouse_public(paths[1]).key_id == first.key_id
    assert init_warehouse_keys(*paths, force=True).key_id != first.key_id


def test_rotation_keeps_old_generations_and_publishes_the_new_one(tmp_path: Path) -> None:
    paths = (tmp_path / "warehouse.key", tmp_path / "warehouse.pub")
    first = init_warehouse_keys(*paths)
    signing_before = load_warehouse_private(paths[0]).signing.public_key()
    second = rotate_warehouse_keys(*paths)
    third = rotate_warehouse_keys(*paths)
    private = load_warehouse_private(paths[0])
    assert [g.key_id for g in private.generations] == [first.key_id, second.key_id, third.key_id]
    assert len({first.key_id, second.key_id, third.key_id}) == 3
    assert load_warehouse_public(paths[1]).key_id == third.key_id == private.current().key_id
    assert private.find(first.key_id).x25519.public_key() == first.x25519
    assert private.signing.public_key() == signing_before  # receipts stay verifiable
    assert mode(paths[0]) == 0o600


def test_unknown_warehouse_key_id_is_a_clear_error(tmp_path: Path) -> None:
    init_warehouse_keys(tmp_path / "w.key", tmp_path / "w.pub")
    with pytest.raises(CryptoError, match=r"unknown warehouse key id '0123456789abcdef'"):
        load_warehouse_private(tmp_path / "w.key").find("0123456789abcdef")


def chmod(path: Path, file_mode: int) -> Path:
    path.chmod(file_mode)
    return path


def edit_json(path: Path, change: Callable[[dict[str, object]], object]) -> Path:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    return path


def _set(key: str, value: object) -> Callable[[dict[str, object]], object]:
    return lambda doc: doc.__setitem__(key, value)


BAD_WAREHOUSE_PUBLIC: list[tuple[str, Callable[[Path], Path], str]] = [
    ("missing", lambda p: p.with_name("absent.pub"), r"does not exist"),
    ("not json", lambda p: write_file(p, b"{nope", 0o644), r"is not a sohoa-warehouse-pub/1 file"),
    ("private file", lambda p: p.with_name("w.key"), r"is not a sohoa-warehouse-pub/1 file"),
    ("no signing key", lambda p: edit_json(p, lambda d: d.pop("signing")), r"lacks .*'signing'"),
    ("bad command key", lambda p: edit_json(p, _set("command", "AAAA")), r"command .* not a valid"),
    ("short x25519", lambda p: edit_json(p, _set("x25519", "AAAA")), r"x25519 .* not a valid key"),
    ("not base64", lambda p: edit_json(p, _set("x25519", "!!")), r"x25519 .* not a valid key"),
    (
        "key swapped",
        lambda p: edit_json(p, _set("x25519", base64.b64encode(bytes(range(32))).decode())),
        r"key_id does not match the keys",
    ),
    (
        "hybrid not a table",
        lambda p: edit_json(p, _set("mlkem768x25519", "x")),
        r"mlkem768x25519.mlkem768 .* not a valid key",
    ),
]


@pytest.mark.parametrize(
    ("make", "reason"),
    [c[1:] for c in BAD_WAREHOUSE_PUBLIC],
    ids=[c[0] for c in BAD_WAREHOUSE_PUBLIC],
)
def test_damaged_warehouse_public_key_is_refused(
    tmp_path: Path, make: Callable[[Path], Path], reason: str
) -> None:
    init_warehouse_keys(tmp_path / "w.key", tmp_path / "w.pub")
    with pytest.raises(CryptoError, match=reason):
        load_warehouse_public(make(tmp_path / "w.pub"))


def _first_generation(key: str, value: object) -> Callable[[dict[str, object]], object]:
    return lambda doc: doc["generations"][0].__setitem__(key, value)  # type: ignore[index]


BAD_WAREHOUSE_PRIVATE: list[tuple[str, Callable[[Path], Path], str]] = [
    ("world readable", lambda p: chmod(p, 0o644), r"readable by other users \(mode 0644\)"),
    (
        "public file",
        lambda p: chmod(p.with_name("w.pub"), 0o600),
        r"is not a sohoa-warehouse-key/1",
    ),
    ("no generations", lambda p: edit_json(p, _set("generations", [])), r"holds no key generation"),
    ("generation garbage", lambda p: edit_json(p, _set("generations", [7])), r"malformed key gen"),
    (
        "wrong key id",
        lambda p: edit_json(p, _first_generation("key_id", "0" * 16)),
        r"generation '0000000000000000' does not match its keys",
    ),
    (
        "short seed",
        lambda p: edit_json(p, _first_generation("mlkem768", "AAAA")),
        r"mlkem768 .* not a valid key \(64 bytes",
    ),
    ("bad signing", lambda p: edit_json(p, _set("signing", 5)), r"signing .* not a valid key"),
    ("bad command key", lambda p: edit_json(p, _set("command", 5)), r"command .* not a valid key"),
]


@pytest.mark.parametrize(
    ("make", "reason"),
    [c[1:] for c in BAD_WAREHOUSE_PRIVATE],
    ids=[c[0] for c in BAD_WAREHOUSE_PRIVATE],
)
def test_damaged_warehouse_private_key_is_refused(
    tmp_path: Path, make: Callable[[Path], Path], reason: str
) -> None:
    init_warehouse_keys(tmp_path / "w.key", tmp_path / "w.pub")
    with pytest.raises(CryptoError, match=reason):
        load_warehouse_private(make(tmp_path / "w.key"))


def test_rotation_refuses_to_extend_a_damaged_key_file(tmp_path: Path) -> None:
    init_warehouse_keys(tmp_path / "w.key", tmp_path / "w.pub")
    edit_json(tmp_path / "w.key", _first_generation("key_id", "0" * 16))
    before = (tmp_path / "w.key").read_bytes(), (tmp_path / "w.pub").read_bytes()
    with pytest.raises(CryptoError, match="does not match its keys"):
        rotate_warehouse_keys(tmp_path / "w.key", tmp_path / "w.pub")
    assert ((tmp_path / "w.key").read_bytes(), (tmp_path / "w.pub").read_bytes()) == before


# -- enrolment ----------------------------------------------------------------


@pytest.fixture
def device_pub(tmp_path: Path) -> Path:
    init_device_keys(tmp_path / "dev" / "device.key")
    return tmp_path / "dev" / "device.pub"


def test_enrolled_device_key_is_found_by_its_id(tmp_path: Path, device_pub: Path) -> None:
    devices = tmp_path / "devices"
    assert load_enrolled(devices, "H56-01234-a1") is None
    path = enroll_device(device_pub, "H56-01234-a1", devices)
    assert path == devices / "H56-01234-a1.pub"
    assert load_enrolled(devices, "H56-01234-a1") == load_device_public(device_pub)
    assert enroll_device(device_pub, "H56-01234-a1", devices) == path  # same key again: no-op
    assert sorted(p.name for p in devices.iterdir()) == ["H56-01234-a1.pub"]


def test_enrolment_refuses_a_different_key_under_an_existing_id_unless_forced(
    tmp_path: Path, device_pub: Path
) -> None:
    devices = tmp_path / "devices"
    enroll_device(device_pub, "dev-1", devices)
    other = init_device_keys(tmp_path / "other" / "device.key")
    with pytest.raises(CryptoError, match="already enrolled with a different key") as err:
        enroll_device(tmp_path / "other" / "device.pub", "dev-1", devices)
    assert "--force" in err.value.hint
    assert load_enrolled(devices, "dev-1") == load_device_public(device_pub)
    enroll_device(tmp_path / "other" / "device.pub", "dev-1", devices, force=True)
    assert load_enrolled(devices, "dev-1") == other


BAD_ENROLMENTS: list[tuple[str, Callable[[Path, Path], Path], str, str]] = [
    ("missing file", lambda d, p: d / "absent.pub", "dev-1", r"does not exist"),
    (
        "garbage",
        lambda d, p: write_file(d / "g.pub", b"hello", 0o644),
        "dev-1",
        r"not a PEM public",
    ),
    (
        "private key given",
        lambda d, p: p.with_name("device.key"),
        "dev-1",
        r"not a PEM public key",
    ),
    (
        "x25519 public key",
        lambda d, p: write_file(d / "x.pub", pem_public(x25519.X25519PrivateKey.generate())),
        "dev-1",
        r"not an Ed25519 public key",
    ),
    ("path in id", lambda d, p: p, "../etc/passwd", r"device id '../etc/passwd' is not valid"),
    ("slash in id", lambda d, p: p, "a/b", r"device id 'a/b' is not valid"),
    ("wildcard in id", lambda d, p: p, "dev+1", r"device id 'dev\+1' is not valid"),
    ("empty id", lambda d, p: p, "", r"device id '' is not valid"),
    ("long id", lambda d, p: p, "d" * 65, r"is not valid"),
]


@pytest.mark.parametrize(
    ("make", "device_id", "reason"),
    [c[1:] for c in BAD_ENROLMENTS],
    ids=[c[0] for c in BAD_ENROLMENTS],
)
def test_bad_enrolment_is_refused_and_enrols_nothing(
    tmp_path: Path,
    device_pub: Path,
    make: Callable[[Path, Path], Path],
    device_id: str,
    reason: str,
) -> None:
    devices = tmp_path / "devices"
    with pytest.raises(CryptoError, match=reason) as err:
        enroll_device(make(tmp_path, device_pub), device_id, devices)
    assert err.value.hint
    assert not devices.exists()


@pytest.mark.parametrize("device_id", ["../dev/device", "a/b", "", "x\x00y", "dev+1", "#"])
def test_impossible_device_ids_are_simply_not_enrolled(tmp_path: Path, device_id: str) -> None:
    init_device_keys(tmp_path / "dev" / "device.key")  # dev/device.pub exists
    assert load_enrolled(tmp_path / "devices", device_id) is None
