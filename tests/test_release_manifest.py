"""Release manifests, bundles and rollouts as values: versions, signatures, hashes,
refusals with one clear line, and a staged rollout that stops itself."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync.errors import ConfigError, CryptoError
from sync.release.bundle import extract_wheels, open_bundle, write_bundle
from sync.release.manifest import (
    FileEntry,
    Manifest,
    ReleaseRefused,
    check_install,
    compare_versions,
    parse_manifest,
    parse_version,
    sign_manifest,
    verify_manifest,
)
from sync.release.release_key import init_release_key, load_release_key, load_release_public
from sync.release.rollout import (
    DeviceReport,
    Rollout,
    may_offer,
    progress,
    record,
    select_targets,
    widen,
)

SHA = "ab" * 32


def manifest(version: str = "0.2.0", schema: int = 2) -> Manifest:
    return Manifest(
        version, schema, ("any",), (FileEntry(f"wheels/sohoa-{version}-py3-none-any.whl", SHA, 9),)
    )


@pytest.mark.parametrize(
    ("a", "b", "order"),
    [
        ("0.1.0", "0.2.0", -1),
        ("0.2.0", "0.2", 0),
        ("0.10.0", "0.9.9", 1),
        ("1", "0.99.99.99", 1),
        ("0.2.0.1", "0.2.0", 1),
    ],
)
def test_versions_compare_as_numbers(a: str, b: str, order: int) -> None:
    assert compare_versions(a, b) == order


@pytest.mark.parametrize("bad", ["", "v1.0", "1.0-rc1", "01.2", "1.2.3.4.5", "1..2", " 1.0"])
def test_a_version_that_is_not_dotted_numbers_is_refused(bad: str) -> None:
    with pytest.raises(ReleaseRefused, match="is not one to four dotted numbers"):
        parse_version(bad)


def test_manifest_round_trips_and_verifies_with_the_pinned_key() -> None:
    key = Ed25519PrivateKey.generate()
    data = manifest().to_bytes()
    verify_manifest(data, sign_manifest(data, key), key.public_key())
    assert parse_manifest(data) == manifest()


def test_manifest_signed_by_another_key_is_refused() -> None:
    data = manifest().to_bytes()
    sig = sign_manifest(data, Ed25519PrivateKey.generate())
    with pytest.raises(ReleaseRefused, match="^bad signature: the bundle is signed by release key"):
        verify_manifest(data, sig, Ed25519PrivateKey.generate().public_key())


def test_manifest_changed_after_signing_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    data = manifest().to_bytes()
    sig = sign_manifest(data, key)
    with pytest.raises(ReleaseRefused, match="does not verify against the pinned release key"):
        verify_manifest(data.replace(b"0.2.0", b"0.3.0"), sig, key.public_key())


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda d: d.replace(b"sohoa-release/1", b"other/1"), "not a sohoa-release/1 manifest"),
        (lambda d: d.replace(b"wheels/", b"../../"), "outside wheels/"),
        (lambda d: d.replace(SHA.encode(), b"xyz"), "has no SHA-256"),
        (lambda d: d.replace(b'"spool_schema":2', b'"spool_schema":0'), "'spool_schema'"),
        (lambda d: b"[1]", "not a JSON object"),
    ],
)
def test_malformed_manifest_is_refused_naming_the_field(edit: object, reason: str) -> None:
    assert callable(edit)
    with pytest.raises(ReleaseRefused, match=reason):
        parse_manifest(edit(manifest().to_bytes()))


@pytest.mark.parametrize(
    ("installed", "schema", "offered", "allow", "reason"),
    [
        (None, 2, manifest("0.2.0", 2), False, None),
        ("0.1.0", 2, manifest("0.2.0", 3), False, None),
        ("0.2.0", 2, manifest("0.1.0", 2), True, None),
        ("0.2.0", 2, manifest("0.1.0", 2), False, "older than the installed 0.2.0"),
        ("0.2.0", 2, manifest("0.2.0", 2), False, "already installed"),
        ("0.1.0", 2, manifest("0.3.0", 4), False, "more than one step past"),
        ("0.3.0", 4, manifest("0.1.0", 2), True, "could not open the spool"),
    ],
)
def test_check_install_refuses_downgrades_and_spool_jumps(
    installed: str | None, schema: int, offered: Manifest, allow: bool, reason: str | None
) -> None:
    if reason is None:
        check_install(installed, schema, offered, allow_downgrade=allow)
    else:
        with pytest.raises(ReleaseRefused, match=reason):
            check_install(installed, schema, offered, allow_downgrade=allow)


def test_release_key_files_are_private_and_public(tmp_path: Path) -> None:
    private = tmp_path / "keys" / "release.key"
    pub = init_release_key(private)
    assert private.stat().st_mode & 0o777 == 0o600
    assert load_release_public(tmp_path / "keys" / "release.pub") == pub
    assert load_release_key(private).public_key() == pub
    with pytest.raises(CryptoError, match="already exists"):
        init_release_key(private)


def _bundle(tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    wheels = tmp_path / "w"
    wheels.mkdir()
    for name, body in (
        ("sohoa-0.2.0-py3-none-any.whl", b"project"),
        ("dep-1.0-py3-none-any.whl", b"d"),
    ):
        (wheels / name).write_bytes(body * 1000)
    out = tmp_path / "sohoa-0.2.0.bundle"
    write_bundle(out, "0.2.0", 2, ("any",), sorted(wheels.iterdir()), key)
    return out


def test_bundle_round_trip_extracts_every_wheel(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    bundle = open_bundle(_bundle(tmp_path, key), key.public_key())
    assert bundle.manifest.project_wheel().name == "wheels/sohoa-0.2.0-py3-none-any.whl"
    got = extract_wheels(bundle, tmp_path / "out")
    assert sorted(p.name for p in got) == [
        "dep-1.0-py3-none-any.whl",
        "sohoa-0.2.0-py3-none-any.whl",
    ]


def test_bundle_with_a_tampered_wheel_is_refused_on_extraction(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    path = _bundle(tmp_path, key)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"project" * 10, b"PROJECT" * 10, 1))
    bundle = open_bundle(path, key.public_key())  # the manifest itself is intact
    with pytest.raises(
        ReleaseRefused, match="^tampered wheel: wheels/sohoa-0.2.0-py3-none-any.whl"
    ):
        extract_wheels(bundle, tmp_path / "out")


def test_bundle_with_an_unlisted_file_is_refused(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    path = _bundle(tmp_path, key)
    extra = tmp_path / "evil.whl"
    extra.write_bytes(b"x")
    with tarfile.open(path, "a") as tar:
        tar.add(extra, arcname="wheels/evil.whl")
    with pytest.raises(ReleaseRefused, match="holds wheels/evil.whl, not in its manifest"):
        extract_wheels(open_bundle(path, key.public_key()), tmp_path / "out")


def test_a_file_that_is_not_a_bundle_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "x.bundle"
    path.write_bytes(b"not a tar" * 100)
    with pytest.raises(ReleaseRefused, match="is not a readable release bundle") as err:
        open_bundle(path, Ed25519PrivateKey.generate().public_key())
    assert "\n" not in err.value.line()


DEVICES = [f"H56-{n:05d}-a1" for n in range(40)]


@pytest.mark.parametrize(
    ("to", "count"), [("10%", 4), ("2.5%", 1), ("100%", 40), ("H56-00003-a1", 1)]
)
def test_targets_by_device_share_or_group(to: str, count: int) -> None:
    assert len(select_targets(to, "0.2.0", DEVICES, {})) == count


def test_a_larger_share_only_adds_devices() -> None:
    small = set(select_targets("10%", "0.2.0", DEVICES, {}))
    assert small < set(select_targets("25%", "0.2.0", DEVICES, {}))
    assert select_targets("10%", "0.2.0", DEVICES, {}) == tuple(sorted(small))


@pytest.mark.parametrize(
    ("to", "reason"),
    [("0%", "more than 0 %"), ("group:X", "no group"), ("nope", "no enrolled device")],
)
def test_unknown_targets_are_refused(to: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        select_targets(to, "0.2.0", DEVICES, {"H56": DEVICES[:3]})


def test_staged_rollout_to_ten_percent_stops_itself_after_rollbacks() -> None:
    devices = [f"H56-{n:05d}-a1" for n in range(100)]
    targets = select_targets("10%", "0.2.0", devices, {})
    rollout = Rollout("0.2.0", targets, max_rollback_fraction=0.1)
    rollout = record(rollout, targets[0], DeviceReport("healthy"))
    rollout = record(rollout, targets[1], DeviceReport("rolled_back", "no health in 120 s"))
    assert not rollout.stopped  # 1 of 10 is not more than 10 %
    assert may_offer(rollout, targets[5])
    rollout = record(rollout, targets[2], DeviceReport("rolled_back", "spool did not open"))
    assert rollout.stopped == "2 of 10 devices rolled back (more than 10%)"
    assert not may_offer(rollout, targets[5])
    assert progress(rollout) == {
        "version": "0.2.0",
        "targets": 10,
        "by_status": {
            "offered": 7,
            "downloading": 0,
            "installed": 0,
            "healthy": 1,
            "rolled_back": 2,
            "refused": 0,
        },
        "stopped": "2 of 10 devices rolled back (more than 10%)",
        "failures": {targets[1]: "no health in 120 s", targets[2]: "spool did not open"},
    }


def test_widening_a_rollout_keeps_what_devices_reported_and_offers_only_the_new() -> None:
    devices = [f"H56-{n:05d}-a1" for n in range(100)]
    first = select_targets("10%", "0.2.0", devices, {})
    rollout = Rollout("0.2.0", first, max_rollback_fraction=0.1)
    rollout = record(rollout, first[0], DeviceReport("healthy"))
    wider = widen(rollout, select_targets("30%", "0.2.0", devices, {}), allow_downgrade=False)
    assert len(wider.targets) == 30 and set(first) < set(wider.targets)
    assert wider.reports == rollout.reports
    assert not may_offer(wider, first[0])  # it runs 0.2.0 already
    assert sum(may_offer(wider, d) for d in wider.targets) == 29
