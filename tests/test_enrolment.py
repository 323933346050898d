"""A technician enrols a device with files on a USB stick: two commands on the device,
one at the province; the device ends up syncing through TLS as itself."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.support.enrol import (
    DEVICE,
    Setup,
    allow,
    one_line_error,
    setup,
    start_broker,
    warehouse_serve,
)
from tests.support.pages import text_page

__all__ = ["setup"]  # the fixture


def request(setup: Setup, code: str) -> Path:
    setup.device.run("enroll", "request", "--code", code, "--out", str(setup.stick / "req.json"))
    return setup.stick / "req.json"


def approve(setup: Setup, req: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    url = f"mqtts://127.0.0.1:{setup.port}"
    bundle = str(setup.stick / "bundle.json")
    return setup.province.run(
        "enroll", "approve", str(req), "--out", bundle, "--broker", url, check=check
    )


def test_a_device_with_no_keys_is_enrolled_offline_and_syncs_as_itself(
    setup: Setup, tmp_path: Path
) -> None:
    code = allow(setup)
    req = request(setup, code)
    assert "PRIVATE" not in req.read_text()  # nothing secret leaves the device
    approve(setup, req)
    out = setup.device.run("enroll", "accept", str(setup.stick / "bundle.json")).stdout
    assert f"enrolled as {DEVICE}" in out
    assert (setup.province.home / "devices" / f"{DEVICE}.pub").exists()

    broker = start_broker(setup, tmp_path)
    try:
        doctor = setup.device.run("doctor", check=False).stdout
        assert "ok    broker certificate: issued by the provincial CA, valid until" in doctor
        assert (
            f"ok    broker: mqtts://127.0.0.1:{setup.port} accepts this device as {DEVICE}"
            in doctor
        )
        pages = tmp_path / "pages"
        pages.mkdir()
        text_page().save(pages / "p0.png", dpi=(300, 300))
        scan = json.loads(setup.device.run("scan", "--from", str(pages), "--json").stdout)
        worker = warehouse_serve(setup.province)
        try:
            setup.device.run("sync", "--once", "--timeout", "60")
        finally:
            worker.terminate()
            worker.wait(15)
    finally:
        broker.terminate()
        broker.wait(10)
    listed = json.loads(setup.province.run("warehouse", "ls", "--json").stdout)["documents"]
    assert [(d["doc_id"], d["device"]) for d in listed] == [
        (scan["documents"][0]["doc_id"], DEVICE)
    ]


def test_a_wrong_code_is_refused_and_changes_nothing(setup: Setup) -> None:
    allow(setup)
    req = request(setup, "AAAA-BBBB-CCCC")

    one_line_error(approve(setup, req, check=False), "does not match the one-time code")
    assert not (setup.province.home / "devices").exists()
    assert not (setup.stick / "bundle.json").exists()


def test_a_replayed_request_is_refused(setup: Setup) -> None:
    req = request(setup, allow(setup))
    approve(setup, req)

    one_line_error(approve(setup, req, check=False), "was already used")


def test_a_device_not_on_the_list_is_refused(setup: Setup) -> None:
    allow(setup, "H56-99999-zz")
    req = request(setup, "AAAA-BBBB-CCCC")

    one_line_error(
        approve(setup, req, check=False), f"device {DEVICE} is not on the enrolment list"
    )


def test_a_tampered_bundle_is_refused_and_installs_nothing(setup: Setup) -> None:
    approve(setup, request(setup, allow(setup)))
    bundle = setup.stick / "bundle.json"
    doc = json.loads(bundle.read_text())
    doc["broker_url"] = "mqtts://evil.example:8883"
    bundle.write_text(json.dumps(doc))

    one_line_error(
        setup.device.run("enroll", "accept", str(bundle), check=False),
        "does not match the one-time code",
    )
    keys = setup.device.home / "keys"
    assert not (keys / "broker.crt").exists() and not (keys / "warehouse.pub").exists()


def test_doctor_before_enrolment_names_the_missing_certificate_and_the_fix(setup: Setup) -> None:
    doctor = setup.device.run("doctor", check=False)

    keys = setup.device.home / "keys"
    assert doctor.returncode != 0
    assert (
        f"FAIL  broker certificate: {keys / 'ca.crt'} is missing — enrol the device again:"
        " sohoa enroll request --code CODE (README, Provisioning)"
    ) in doctor.stdout
