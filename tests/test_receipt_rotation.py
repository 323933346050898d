"""Receipt-key rotation: the warehouse rotates its receipt key, a signed command on the
device's ``cmd`` topic carries the new key set, and from then on a copy of the old
warehouse key can no longer make a device purge. Real keys and files, real mosquitto."""

from __future__ import annotations

import base64
import json
import logging
import shutil
import sqlite3
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.services.sync import device_link
from agent.services.warehouse import WarehouseWorkers
from sync.command_key import command_key_path, init_warehouse, load_command_key
from sync.commands import FORMAT, Command, sign_command
from sync.durable import iso
from sync.keys import (
    init_warehouse_keys,
    load_warehouse_private,
    load_warehouse_public,
    rotate_receipt_key,
)
from sync.mqtt.link import Link
from sync.mqtt.settings import LinkSettings
from sync.protocol import (
    Receipt,
    ReceiptKey,
    canonical,
    command_topic,
    parse_receipt,
    receipt_topic,
    sign_receipt,
)
from sync.receipt_keys import DeviceCommands, command_state_path
from sync.spool.store import Spool
from sync.uploader import Uploader, UploadSettings
from tests.support.site import Site
from tests.support.sync import spool_documents
from tests.support.wait import wait_until

DEVICE = "dev-rot-01"


@dataclass(frozen=True)
class Warehouse:
    private: Path
    public: Path
    command: Path

    def command_signer(self) -> Ed25519PrivateKey:
        return load_command_key(self.command).key

    def receipt_key(self) -> ReceiptKey:
        return ReceiptKey.of(load_warehouse_public(self.public).signing)


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    keys = tmp_path / "warehouse" / "keys"
    w = Warehouse(keys / "warehouse.key", keys / "warehouse.pub", keys / "command.key")
    init_warehouse(w.private, w.public, w.command)
    return w


def device(tmp_path: Path, warehouse: Warehouse, device_id: str = DEVICE) -> DeviceCommands:
    """The device side as the sync service builds it, from a copy of warehouse.pub."""
    pinned = tmp_path / "device" / "keys" / "warehouse.pub"
    pinned.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(warehouse.public, pinned)
    return DeviceCommands(device_id, load_warehouse_public(pinned), command_state_path(pinned))


def entry(key: ReceiptKey) -> dict[str, str]:
    return {"kid": key.kid, "public": base64.b64encode(key.public.public_bytes_raw()).decode()}


def command_bytes(
    signer: Ed25519PrivateKey, receipt_keys: list[ReceiptKey], /, **fields: object
) -> bytes:
    """A receipt-keys command with ``fields`` changed before it is signed by ``signer``."""
    body: dict[str, object] = {
        "format": FORMAT,
        "device": DEVICE,
        "counter": 6,
        "expires": iso(time.time() + 3600),
        "kind": "receipt-keys",
        "keys": [entry(k) for k in receipt_keys],
        **fields,
    }
    sig = base64.b64encode(signer.sign(canonical(body))).decode()
    return canonical({**body, "sig": sig})


def commands_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sohoa.commands"]


# -- keys at the warehouse ---------------------------------------------------------------


def test_receipt_rotation_destroys_the_old_key_and_keeps_the_encryption_keys(
    warehouse: Warehouse,
) -> None:
    before = load_warehouse_private(warehouse.private)
    old = warehouse.receipt_key()
    new = ReceiptKey.of(rotate_receipt_key(warehouse.private, warehouse.public).signing)
    after = load_warehouse_private(warehouse.private)
    assert new.kid != old.kid
    assert after.signing.public_key() == new.public == before.receipt_key().public_key()
    old_raw = base64.b64encode(before.signing.private_bytes_raw()).decode()
    assert old_raw not in warehouse.private.read_text()  # gone, not kept as a generation
    assert [g.key_id for g in after.generations] == [g.key_id for g in before.generations]
    assert load_warehouse_public(warehouse.public).command == before.command
    assert stat.S_IMODE(warehouse.private.stat().st_mode) == 0o600


def test_warehouse_pub_from_before_commands_loads_and_pins_its_signing_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = Warehouse(tmp_path / "w.key", tmp_path / "w.pub", tmp_path / "none")
    init_warehouse_keys(old.private, old.public)  # the format before commands
    assert "command" not in json.loads(old.public.read_text())
    dev = device(tmp_path, old)
    assert dev.command_key is None
    assert dev.receipt_keys.kids() == (old.receipt_key().kid,)
    caplog.set_level(logging.INFO)
    forged = Ed25519PrivateKey.generate()
    assert not dev.apply(command_bytes(forged, [ReceiptKey.of(forged.public_key())]))
    assert commands_log(caplog) == [
        "command refused reason=this device pins no command key (its keys/warehouse.pub"
        " predates commands: copy the warehouse's current one)"
    ]
    assert dev.receipt_keys.kids() == (old.receipt_key().kid,)


# -- commands on the device --------------------------------------------------------------


def test_applied_command_replaces_the_receipt_keys_and_survives_a_restart(
    tmp_path: Path, warehouse: Warehouse
) -> None:
    dev = device(tmp_path, warehouse)
    new = ReceiptKey.of(Ed25519PrivateKey.generate().public_key())
    assert dev.apply(command_bytes(warehouse.command_signer(), [new], counter=6))
    assert dev.receipt_keys.kids() == (new.kid,)
    state = command_state_path(tmp_path / "device" / "keys" / "warehouse.pub")
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    again = device(tmp_path, warehouse)  # the sync service restarted
    assert (again.state.counter, again.receipt_keys.kids()) == (6, (new.kid,))


def test_state_of_another_command_key_is_set_aside(tmp_path: Path, warehouse: Warehouse) -> None:
    dev = device(tmp_path, warehouse)
    new = ReceiptKey.of(Ed25519PrivateKey.generate().public_key())
    assert dev.apply(command_bytes(warehouse.command_signer(), [new], counter=6))
    init_warehouse(warehouse.private, warehouse.public, warehouse.command, force=True)
    fresh = device(tmp_path, warehouse)  # the technician copied the new warehouse.pub
    assert (fresh.state.counter, fresh.receipt_keys.kids()) == (0, (warehouse.receipt_key().kid,))


def _resign(w: Warehouse, keys: list[ReceiptKey], _first: bytes) -> bytes:
    cmd = Command(DEVICE, 6, iso(time.time() + 60), tuple(keys))
    signed = json.loads(sign_command(cmd, w.command_signer()).to_bytes())
    signed["keys"] = [entry(ReceiptKey.of(Ed25519PrivateKey.generate().public_key()))]
    return canonical(signed)


def _receipt_key_signer(w: Warehouse, keys: list[ReceiptKey], _first: bytes) -> bytes:
    """What an old copy of warehouse.key can sign: its receipt key is no command key."""
    return command_bytes(load_warehouse_private(w.private).signing, keys, counter=99)


# (warehouse, a fresh receipt key set, the command the device applied) -> payload
Make = Callable[[Warehouse, list[ReceiptKey], bytes], bytes]
REFUSED: list[tuple[str, Make, str]] = [
    (
        "exact replay",
        lambda w, k, first: first,
        "command already applied, ignored counter=5",
    ),
    (
        "same counter",
        lambda w, k, _: command_bytes(w.command_signer(), k, counter=5),
        "command refused reason=counter 5 is not above the last applied 5 (replay)",
    ),
    (
        "older counter",
        lambda w, k, _: command_bytes(w.command_signer(), k, counter=4),
        "command refused reason=counter 4 is not above the last applied 5 (replay)",
    ),
    (
        "expired",
        lambda w, k, _: command_bytes(w.command_signer(), k, expires="2020-01-01T00:00:00Z"),
        "command refused reason=expired at 2020-01-01T00:00:00Z",
    ),
    (
        "other device",
        lambda w, k, _: command_bytes(w.command_signer(), k, device="dev-rot-02"),
        "command refused reason=addressed to device 'dev-rot-02', not this one",
    ),
    (
        "other key",
        lambda w, k, _: command_bytes(Ed25519PrivateKey.generate(), k),
        "command refused reason=signature does not verify against the pinned command key",
    ),
    (
        "old warehouse.key",
        _receipt_key_signer,
        "command refused reason=signature does not verify against the pinned command key",
    ),
    (
        "keys swapped after signing",
        _resign,
        "command refused reason=signature does not verify against the pinned command key",
    ),
    (
        "deep nesting",
        lambda w, k, _: b'{"a":' * 17 + b"1" + b"}" * 17,
        "command refused reason=JSON nested deeper than 16 levels",
    ),
    ("huge", lambda w, k, _: b"[" * 200_000, "command refused reason=command larger than 16 KiB"),
    ("not json", lambda w, k, _: b"\xff{", "command refused reason=payload is not valid JSON"),
    ("a list", lambda w, k, _: b"[]", "command refused reason=payload is not a JSON object"),
    (
        "another format",
        lambda w, k, _: command_bytes(w.command_signer(), k, format="sohoa-cmd/9"),
        "command refused reason=not a sohoa-cmd/1 command",
    ),
    (
        "extra field",
        lambda w, k, _: command_bytes(w.command_signer(), k, purge=True),
        "command refused reason=command fields do not match sohoa-cmd/1 (purge)",
    ),
    (
        "unknown kind",
        lambda w, k, _: command_bytes(w.command_signer(), k, kind="purge-all"),
        "command refused reason=unknown command kind 'purge-all'",
    ),
    (
        "no keys",
        lambda w, k, _: command_bytes(w.command_signer(), [], counter=7),
        "command refused reason='keys' is not a list of 1 to 8 receipt keys",
    ),
    (
        "kid of another key",
        lambda w, k, _: command_bytes(
            w.command_signer(), [], keys=[{"kid": "0" * 16, "public": entry(k[0])["public"]}]
        ),
        "command refused reason=receipt key kid '0000000000000000' does not match its key",
    ),
    (
        "counter not a number",
        lambda w, k, _: command_bytes(w.command_signer(), k, counter=True),
        "command refused reason='counter' is not a positive integer",
    ),
    (
        "expiry without zone",
        lambda w, k, _: command_bytes(w.command_signer(), k, expires="2099-01-01T00:00:00"),
        "command refused reason='expires' is not an ISO 8601 time with its zone",
    ),
]


@pytest.mark.parametrize(("make", "line"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_refused_command_logs_one_line_and_changes_nothing(
    tmp_path: Path,
    warehouse: Warehouse,
    caplog: pytest.LogCaptureFixture,
    make: Make,
    line: str,
) -> None:
    dev = device(tmp_path, warehouse)
    applied = ReceiptKey.of(Ed25519PrivateKey.generate().public_key())
    first = command_bytes(
        warehouse.command_signer(), [applied], counter=5, expires="2099-01-01T00:00:00Z"
    )
    assert dev.apply(first)
    state = command_state_path(tmp_path / "device" / "keys" / "warehouse.pub")
    before = state.read_bytes()
    other = ReceiptKey.of(Ed25519PrivateKey.generate().public_key())
    payload = make(warehouse, [other], first)
    caplog.clear()
    caplog.set_level(logging.INFO)
    assert not dev.apply(payload)
    assert commands_log(caplog) == [line]
    assert (dev.state.counter, dev.receipt_keys.kids()) == (5, (applied.kid,))
    assert state.read_bytes() == before


# -- receipts over the broker -----------------------------------------------------------


def _publish(site: Site, topic: str, payload: bytes) -> None:
    settings = LinkSettings(site.broker.host, site.broker.port, "t-forger", clean_start=True)
    with Link(settings) as link:
        link.publish(topic, payload)


def _stored_receipt(site: Site, doc_id: str, ciphertext: str, key: Ed25519PrivateKey) -> bytes:
    r = Receipt(site.device.device.id, doc_id, "stored", ciphertext_sha256=ciphertext, ts="t")
    return sign_receipt(r, key).to_bytes()


def _state(site: Site, doc_id: str) -> str:
    with Spool(site.device.home / "spool") as spool:
        doc = spool.get(doc_id)
    assert doc is not None
    return doc.state


def test_after_rotation_a_stored_receipt_from_the_old_key_is_refused_and_the_new_key_counts(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    [doc] = spool_documents(site.device, 1)
    wh_key = site.warehouse.path(site.warehouse.warehouse.private_key)
    old_copy = load_warehouse_private(wh_key).signing  # what a stolen backup holds
    site.run("keys", "rotate", "--receipts", side="warehouse", check=True)
    new = load_warehouse_private(wh_key).signing
    pinned = site.device.path(site.device.warehouse.public_key)
    commands = DeviceCommands(
        site.device.device.id, load_warehouse_public(pinned), command_state_path(pinned)
    )
    link, spool = device_link(site.device), Spool(site.device.home / "spool")
    settings = UploadSettings(site.device.device.id, receipt_timeout_s=1.0)
    up = Uploader(link, spool, settings, commands, on_command=commands.apply)
    try:
        link.connect()
        up.start()

        def applied() -> bool:
            up.poll(0.1)
            return commands.state.counter > 0

        wait_until(applied, 10, "the retained rotation command")
        assert commands.receipt_keys.kids() == (ReceiptKey.of(new.public_key()).kid,)
        caplog.set_level(logging.INFO)
        topic = receipt_topic(site.device.device.id)
        _publish(site, topic, _stored_receipt(site, doc.doc_id, doc.ciphertext_sha256, old_copy))
        assert up.drain(time.monotonic() + 3) == (1, 0)  # still pending
        refused = [r.getMessage() for r in caplog.records if r.name == "sohoa.uploader"]
        old_kid = ReceiptKey.of(old_copy.public_key()).kid
        assert refused == [
            f"receipt refused doc={doc.doc_id} status=stored reason=signed by receipt key"
            f" {old_kid}, which this device does not accept"
        ]
        assert _state(site, doc.doc_id) == "sent"  # not stored, so never purged
        _publish(site, topic, _stored_receipt(site, doc.doc_id, doc.ciphertext_sha256, new))
        assert up.drain(time.monotonic() + 10) == (0, 0)
    finally:
        link.close()
        spool.close()
    assert _state(site, doc.doc_id) == "stored"


def _receipt_kids(site: Site) -> dict[str, str | None]:
    with sqlite3.connect(site.device.home / "spool" / "spool.db") as db:
        rows = db.execute("SELECT doc_id, receipt FROM documents WHERE receipt IS NOT NULL")
        return {doc: parse_receipt(text.encode()).kid for doc, text in rows}


def test_rotation_reaches_an_offline_device_on_reconnect_and_its_next_document_syncs(
    site: Site, warehouse_worker: WarehouseWorkers
) -> None:
    spool_documents(site.device, 1, prefix="before")
    assert site.run("sync", "--once", "--timeout", "60").returncode == 0
    pinned = site.device.path(site.device.warehouse.public_key)
    old_kid = ReceiptKey.of(load_warehouse_public(pinned).signing).kid
    # the device is offline; the warehouse worker keeps running through the rotation
    rotated = site.run("keys", "rotate", "--receipts", side="warehouse", check=True)
    new_kid = ReceiptKey.of(
        load_warehouse_public(site.warehouse.path(site.warehouse.warehouse.public_key)).signing
    ).kid
    assert f"new receipt key {new_kid}; the old one ({old_kid}) is destroyed" in rotated.stdout
    assert "published to 1 device(s)" in rotated.stdout
    spool_documents(site.device, 1, prefix="after")
    sync = site.run("sync", "--once", "--timeout", "60")
    assert sync.returncode == 0, sync.stderr
    assert _receipt_kids(site) == {"before-0000": old_kid, "after-0000": new_kid}
    state = json.loads(command_state_path(pinned).read_text())
    assert [k["kid"] for k in state["receipt_keys"]] == [new_kid]


def test_rotation_with_the_broker_down_names_the_fix_and_push_commands_delivers_later(
    site: Site,
) -> None:
    wh = site.warehouse
    site.broker.stop()
    proc = site.run("keys", "rotate", "--receipts", side="warehouse")
    new_kid = ReceiptKey.of(load_warehouse_public(wh.path(wh.warehouse.public_key)).signing).kid
    assert proc.returncode != 0
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: receipt key rotated to {new_kid}, but the receipt-key command")
    assert line.endswith(
        "— run 'sohoa keys push-commands' once the broker is reachable; until then"
        " devices keep their documents as sent"
    )
    site.broker.start()
    site.run("keys", "push-commands", side="warehouse", check=True)
    link = device_link(site.device)
    with link:
        link.subscribe(command_topic(site.device.device.id))
        msg = link.get(10)
    assert msg is not None and msg.retain
    assert [k["kid"] for k in json.loads(msg.payload)["keys"]] == [new_kid]


def test_rotation_without_the_command_key_changes_nothing(site: Site) -> None:
    wh = site.warehouse
    private = wh.path(wh.warehouse.private_key)
    command_key_path(private).rename(private.with_name("offline.key"))
    before = private.read_bytes()
    proc = site.run("keys", "rotate", "--receipts", side="warehouse")
    assert proc.returncode != 0
    assert proc.stderr.startswith(f"error: command key {command_key_path(private)} does not exist")
    assert private.read_bytes() == before
    offline = ["--command-key", str(private.with_name("offline.key"))]
    site.run("keys", "rotate", "--receipts", *offline, side="warehouse", check=True)
    assert private.read_bytes() != before


def _strip_command(path: Path) -> None:
    doc = json.loads(path.read_text())
    doc.pop("command")
    path.write_text(json.dumps(doc))


def test_keys_init_on_a_warehouse_from_before_commands_adds_only_the_command_key(
    site: Site,
) -> None:
    wh = site.warehouse
    private, public = wh.path(wh.warehouse.private_key), wh.path(wh.warehouse.public_key)
    command_key_path(private).unlink()
    _strip_command(private)
    _strip_command(public)
    before = load_warehouse_private(private)
    proc = site.run("keys", "init", "--warehouse", side="warehouse", check=True)
    assert "command key created" in proc.stdout and "copy" in proc.stdout
    after = load_warehouse_private(private)
    assert [g.key_id for g in after.generations] == [g.key_id for g in before.generations]
    assert after.signing.public_key() == before.signing.public_key()
    command = load_command_key(command_key_path(private)).key.public_key()
    assert load_warehouse_public(public).command == after.command == command


def test_keys_init_with_the_command_key_kept_offline_refuses_to_make_another(
    site: Site,
) -> None:
    wh = site.warehouse
    private = wh.path(wh.warehouse.private_key)
    command_key_path(private).rename(private.with_name("offline.key"))
    before = private.read_bytes()
    proc = site.run("keys", "init", "--warehouse", side="warehouse")
    assert proc.returncode != 0
    assert "already pins command key" in proc.stderr and "--command-key FILE" in proc.stderr
    assert private.read_bytes() == before and not command_key_path(private).exists()
