"""Each hardened unit's ExecStart, run as its unit says, becomes ready, does its job, keeps
its files to itself and stops cleanly.

The process gets User=, Group=, SupplementaryGroups=, only Environment= plus PATH and
NOTIFY_SOCKET, UMask=, WorkingDirectory= (/), NoNewPrivileges=, the capability bounding
set (setpriv) and, in a private mount namespace where the host allows one,
ProtectSystem=strict, ReadWritePaths=, ProtectHome=, PrivateTmp=, ProtectProc=,
ProcSubset=. What needs systemd itself (seccomp filters such as SystemCallFilter and
MemoryDenyWriteExecute, the device cgroup, PrivateDevices) is in ``NEEDS_SYSTEMD``.
Rewritten: ExecStart's /opt/sohoa/venv (this checkout's .venv), SOHOA_CONFIG (a file
the test writes) and ReadWritePaths=/var/lib/sohoa (the test's home).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from agent.capture.samples import make_page
from sync import __version__
from sync.keys import load_warehouse_public
from sync.mqtt.link import Link
from sync.mqtt.settings import LinkSettings
from sync.protocol import (
    Query,
    Receipt,
    parse_receipt,
    query_topic,
    receipt_topic,
    state_topic,
    verify_receipt,
)
from sync.spool.store import Spool
from tests.support.mqtt import Broker
from tests.support.site import Site, make_site, write_toml
from tests.support.sync import spool_documents
from tests.support.units import (
    APPLIED,
    NAMESPACED,
    NEEDS_SYSTEMD,
    READY_S,
    ExecSpec,
    Identity,
    NotifySocket,
    Service,
    UnitFile,
    bounding_set,
    chown_tree,
    environment,
    exec_spec,
    launch_command,
    parse_unit,
)
from tests.support.wait import wait_until

REPO = Path(__file__).resolve().parent.parent
SOHOA = REPO / ".venv" / "bin" / "sohoa"
UNIT_NAMES = ("sohoa-agent.service", "sohoa-sync.service", "sohoa-warehouse.service")
WORK_S = 30.0


def unit(name: str) -> UnitFile:
    return parse_unit((REPO / "systemd" / name).read_text(), name)


# -- how this host runs a unit --------------------------------------------------------


@dataclass(frozen=True)
class Host:
    """As the unit's user or (when it cannot reach the venv) as root without capabilities;
    in a private mount namespace or not; ``notes`` say why not."""

    as_user: bool
    namespace: bool
    notes: tuple[str, ...] = ()

    def identity(self, spec: ExecSpec) -> Identity:
        if not self.as_user:
            return Identity(0, 0, (), "as root without capabilities: " + "; ".join(self.notes))
        ensure_user(spec.user, spec.group)
        gid = grp.getgrnam(spec.group).gr_gid
        known = {g.gr_name: g.gr_gid for g in grp.getgrall()}
        missing = [g for g in spec.supplementary if g not in known]
        groups = [*os.getgrouplist(spec.user, gid), *(known[g] for g in spec.supplementary)]
        note = f"SupplementaryGroups {' '.join(missing)} missing here" if missing else ""
        return Identity(pwd.getpwnam(spec.user).pw_uid, gid, tuple(dict.fromkeys(groups)), note)


def ensure_user(user: str, group: str) -> None:
    """The unit's system user and group, created as install.sh would (and left there)."""
    if group not in {g.gr_name for g in grp.getgrall()}:
        subprocess.run(["groupadd", "--system", group], check=False)
    if user not in {p.pw_name for p in pwd.getpwall()}:
        home = ["--home-dir", "/var/lib/sohoa", "--no-create-home"]
        cmd = ["useradd", "--system", "--gid", group, *home, "--shell", "/usr/sbin/nologin"]
        subprocess.run([*cmd, user], check=False)  # another run may have made it meanwhile
    pwd.getpwnam(user)


def visible(root: Path) -> tuple[Path, ...]:
    """What the process must still see in its namespace: the interpreter the venv links
    to (perhaps under /root), this checkout, the test's config and notify socket."""
    prefix = Path(os.path.realpath(SOHOA.parent / "python")).parents[1]
    return (prefix, REPO, root / "etc", root / "run")


def _probe(host: Host, root: Path) -> str:
    """'' when ``host`` runs this venv's sohoa, on the venv's own interpreter, under the
    sync unit's options; else why not."""
    spec = exec_spec(unit("sohoa-sync.service"), sohoa=SOHOA, config=root, home=root / "home")
    code = "import sys, agent.cli; print(sys.base_prefix)"
    spec = replace(spec, argv=(str(SOHOA.parent / "python"), "-c", code))
    cmd = launch_command(spec, host.identity(spec), namespace=host.namespace, visible=visible(root))
    out = subprocess.run(cmd, env=environment(spec, root), capture_output=True, text=True)
    if out.returncode != 0:
        return (out.stderr.strip().splitlines() or ["?"])[-1]
    base, want = out.stdout.strip(), str(visible(root)[0])  # a host may substitute another
    return "" if base == want else f"it runs the interpreter of {base}, not {want}"


def reachable_dir() -> Path:
    """A directory the unit's user can reach (pytest's tmp_path is root's alone) with
    home/, etc/ for the config files and run/ for the notify socket."""
    root = Path(tempfile.mkdtemp(prefix="sohoa-unit-"))
    root.chmod(0o755)
    for d in ("home", "etc", "run"):
        (root / d).mkdir()
    return root


@pytest.fixture(scope="session")
def host() -> Iterator[Host]:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to start a service as its user, as systemd does")
    root = reachable_dir()
    notes: list[str] = []
    try:
        for as_user, namespace in ((True, True), (True, False), (False, True), (False, False)):
            if namespace and not shutil.which("unshare"):
                continue
            why = _probe(Host(as_user, namespace, tuple(notes)), root)
            if not why:
                if notes:
                    warnings.warn("units run " + "; ".join(notes), stacklevel=1)
                yield Host(as_user, namespace, tuple(notes))
                return
            who = "the unit's user" if as_user else "root"
            notes.append(f"not as {who}{' in a mount namespace' if namespace else ''}: {why}")
        pytest.fail("cannot start sohoa at all: " + "; ".join(notes))
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- one service run ----------------------------------------------------------------------


@contextmanager
def started(name: str, host: Host, root: Path, home: Path, config: Path) -> Iterator[Service]:
    spec = exec_spec(unit(name), sohoa=SOHOA, config=config, home=home)
    who = host.identity(spec)
    chown_tree(home, who)
    notify = NotifySocket(root / "run" / f"{name}.notify", who.uid)
    cmd = launch_command(spec, who, namespace=host.namespace, visible=visible(root))
    print(f"{name}: uid {who.uid} groups {who.groups}, namespace {host.namespace}. {who.note}")
    journal, env = root / f"{name}.journal", environment(spec, notify.path)
    before = set(home.rglob("*"))
    with journal.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        yield Service(spec, who, proc, notify, journal, home, before)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()


@pytest.fixture
def unit_root() -> Iterator[Path]:
    root = reachable_dir()
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def unit_site(unit_root: Path, mosquitto: Broker) -> Site:
    return make_site(unit_root / "site", mosquitto)


def config_for(site: Site, root: Path, side: str, **sections: dict[str, object]) -> Path:
    cfg = site.device if side == "device" else site.warehouse
    name = cfg.device.id if side == "device" else "warehouse"
    path = write_toml(root / "etc" / f"{side}.toml", cfg.home, name, site.broker.url(), **sections)
    path.chmod(0o644)
    return path


# -- the unit files as the test reads them ------------------------------------------------

SAMPLE = """# a comment
[Service]
SystemCallFilter=@system-service
SystemCallFilter=~@privileged \\
  @resources
; another comment
SupplementaryGroups=a b
SupplementaryGroups=
SupplementaryGroups=scanner
UMask=0022
UMask=0077
"""


def test_unit_parser_keeps_repeated_keys_in_order_and_joins_continued_lines() -> None:
    u = parse_unit(SAMPLE, "sample.service")
    got = (u.values("SystemCallFilter"), u.words("SupplementaryGroups"), u.value("UMask"))
    assert got == (["@system-service", "~@privileged @resources"], ["scanner"], "0077")


@pytest.mark.parametrize(
    ("lines", "setpriv"),
    [
        ([], None),
        ([""], "-all"),
        (["CAP_NET_BIND_SERVICE CAP_CHOWN"], "-all,+chown,+net_bind_service"),
        (["CAP_CHOWN", "CAP_KILL"], "-all,+chown,+kill"),
        (["CAP_CHOWN", ""], "-all"),
    ],
)
def test_capability_bounding_set_maps_to_setpriv(lines: list[str], setpriv: str | None) -> None:
    assert bounding_set(lines) == setpriv


@pytest.mark.parametrize(
    ("name", "args", "groups", "watchdog_s"),
    [
        ("sohoa-agent.service", ("agent",), ("scanner",), 120.0),
        ("sohoa-sync.service", ("sync",), (), 180.0),
        ("sohoa-warehouse.service", ("warehouse", "serve", "--workers", "2"), (), None),
    ],
)
def test_unit_gives_its_process_sohoa_identity_and_locked_down_defaults(
    name: str, args: tuple[str, ...], groups: tuple[str, ...], watchdog_s: float | None
) -> None:
    s = exec_spec(unit(name), sohoa=SOHOA, config=Path("/t/sohoa.toml"), home=Path("/t/home"))
    assert (s.argv, s.user, s.group, s.supplementary, dict(s.environment), s.watchdog_s) == (
        (str(SOHOA), *args),
        "sohoa",
        "sohoa",
        groups,
        {"SOHOA_CONFIG": "/t/sohoa.toml"},
        watchdog_s,
    )
    locked = (s.umask, s.no_new_privs, s.bounding_set, s.working_directory, s.mounts.read_write)
    # the warehouse also rewrites the broker's enrolment files (optional: "-/etc/sohoa/broker")
    writable = (Path("/t/home"), *((Path("/etc/sohoa/broker"),) if "warehouse" in name else ()))
    assert locked == (0o077, True, "-all", "/", writable)


@pytest.mark.parametrize("name", UNIT_NAMES)
def test_every_service_option_is_applied_here_or_named_as_needing_systemd(name: str) -> None:
    handled = APPLIED | NAMESPACED | set().union(*NEEDS_SYSTEMD.values())
    assert set(unit(name).keys()) - handled == set()


# -- the services under their units ------------------------------------------------------

CLEAN: tuple[bool, bool, list[str]] = (True, True, [])


def confinement(svc: Service) -> dict[str, tuple[str, str]]:
    """What differs between the running main process and its unit: {field: (the
    kernel's view, the unit's)} of its ids, groups, umask, capabilities and no_new_privs."""
    text = Path(f"/proc/{svc.proc.pid}/status").read_text()
    status = {k: v.split() for k, _, v in (line.partition(":") for line in text.splitlines())}
    none = "0" * 16
    wanted = {
        "Uid": [str(svc.who.uid)] * 4,
        "Gid": [str(svc.who.gid)] * 4,
        "Groups": sorted(map(str, svc.who.groups)),
        "Umask": [f"{svc.spec.umask:04o}"],
        "CapEff": [none],
        "CapBnd": [none if svc.spec.bounding_set == "-all" else "?"],
        "NoNewPrivs": [str(int(svc.spec.no_new_privs))],
    }
    actual = {k: sorted(status[k]) if k == "Groups" else status[k] for k in wanted}
    return {k: (" ".join(actual[k]), " ".join(v)) for k, v in wanted.items() if actual[k] != v}


def test_sync_unit_announces_the_device_online_and_offline_once_stopped(
    host: Host, unit_root: Path, unit_site: Site
) -> None:
    dev, broker = unit_site.device, unit_site.broker
    config = config_for(unit_site, unit_root, "device", spool={"reserve_mb": 0})
    states: list[dict[str, object]] = []

    def state_is(online: bool) -> bool:
        msg = link.get(0.1)
        states.extend([json.loads(msg.payload)] if msg else [])
        return bool(states) and states[-1]["online"] is online

    with Link(LinkSettings(broker.host, broker.port, "t-unit-fleet", clean_start=True)) as link:
        link.subscribe(state_topic(dev.device.id))
        with started("sohoa-sync.service", host, unit_root, dev.home, config) as svc:
            svc.wait_ready()
            assert confinement(svc) == {}
            wait_until(lambda: state_is(True), WORK_S, "the device's retained birth")
            code = svc.stop()
        wait_until(lambda: state_is(False), WORK_S, "the device to be seen offline")
    birth = {k: states[0][k] for k in ("device", "online", "version")}
    assert birth == {"device": dev.device.id, "online": True, "version": __version__}
    assert svc.ended(code) == CLEAN


@pytest.mark.parametrize("outage", ["broker down", "backlog the warehouse never answers"])
def test_sync_unit_keeps_its_watchdog_fed_through_an_outage(
    outage: str, host: Host, unit_root: Path, unit_site: Site
) -> None:
    """Outages are a commune's normal state: a starved watchdog (WatchdogSec=180) would
    have systemd kill the link service every three minutes, even with hourly health."""
    if outage == "broker down":
        unit_site.broker.stop()
    else:
        umask = os.umask(0o077)  # the spool as the service itself would have made it
        try:
            spool_documents(unit_site.device, 1)
        finally:
            os.umask(umask)
    hourly: dict[str, object] = {"health_interval_s": 3600}
    config = config_for(unit_site, unit_root, "device", spool={"reserve_mb": 0}, sync=hourly)
    with started("sohoa-sync.service", host, unit_root, unit_site.device.home, config) as svc:
        svc.wait_for("READY", READY_S)
        assert confinement(svc) == {}
        svc.wait_for("WATCHDOG", WORK_S, count=2)
        code = svc.stop()
    clean, _made, loose = svc.ended(code)  # a clean stop may leave no new file behind
    assert (clean, loose) == (True, [])


def test_warehouse_unit_answers_a_device_query_with_a_signed_receipt(
    host: Host, unit_root: Path, unit_site: Site
) -> None:
    dev, wh, broker = unit_site.device, unit_site.warehouse, unit_site.broker
    config = config_for(unit_site, unit_root, "warehouse")
    query = Query("ab" * 32, 3, nonce="a1b2c3")
    answers: list[Receipt] = []

    def answered() -> bool:  # asks again each second: the workers may still be subscribing
        link.publish(query_topic(dev.device.id, "doc-unit-0001"), query.to_bytes(), qos=1)
        msg = link.get(1.0)
        answers.extend([parse_receipt(msg.payload)] if msg else [])
        return bool(answers)

    with Link(LinkSettings(broker.host, broker.port, "t-unit-device", clean_start=True)) as link:
        link.subscribe(receipt_topic(dev.device.id))
        with started("sohoa-warehouse.service", host, unit_root, wh.home, config) as svc:
            svc.wait_ready()
            assert confinement(svc) == {}
            wait_until(answered, WORK_S, "the warehouse's answer to a query")
            code = svc.stop()
    r = answers[0]
    signing = load_warehouse_public(dev.path(dev.warehouse.public_key)).signing
    want = ("missing", (0, 1, 2), query.nonce, True)
    assert (r.status, r.missing, r.query, verify_receipt(r, signing)) == want
    assert svc.ended(code) == CLEAN


def test_agent_unit_waits_on_its_hot_folder_and_seals_what_arrives(
    host: Host, unit_root: Path, unit_site: Site
) -> None:
    dev = unit_site.device
    hot = dev.home / "hot"
    hot.mkdir()
    config = config_for(unit_site, unit_root, "device", capture={"hot_folder": "hot"})
    with started("sohoa-agent.service", host, unit_root, dev.home, config) as svc:
        svc.wait_ready()
        assert confinement(svc) == {}
        part = hot / "scan-0001.png.part"
        page = make_page(["ĐƠN ĐỀ NGHỊ", "Kính gửi: UBND xã"], seed=3)
        page.save(part, format="PNG", dpi=(300, 300))
        os.chown(part, svc.who.uid, svc.who.gid)  # as the network scanner's upload would
        part.rename(hot / "scan-0001.png")
        wait_until(lambda: not any(hot.iterdir()), WORK_S, "the agent to take the page")
        code = svc.stop()
    assert svc.ended(code) == CLEAN
    with Spool(dev.home / "spool") as spool:
        assert spool.status().pending_docs == 1
