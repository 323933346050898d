"""A release rolled out over MQTT to a device run as processes: real mosquitto, the
province's ``release serve``, a link cut every few seconds, the device's sync service
restarted by a supervisor as systemd would, through ``sohoa-launch``, and
``sohoa release apply`` started whenever the sync service's install request or a
pending trial exists, as sohoa-release-switch.path starts it on a device."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.faultproxy import FaultProxy
from tests.support.release import BROKEN, GOOD, NEXT, Bundles
from tests.support.site import REPO, SOHOA, Site, write_toml
from tests.support.sync import (
    assert_stored_exactly_once,
    pending_count,
    spool_documents,
    warehouse_workers,
)
from tests.support.wait import wait_until

DEADLINE_S = 30


@contextmanager
def in_background(
    loop: Callable[[threading.Event], None],
    join_s: float,
    on_stop: Callable[[], None] = lambda: None,
) -> Iterator[None]:
    """``loop(stop)`` on a thread until the block ends; then ``stop`` is set, ``on_stop``
    runs (ending what the loop waits for) and the thread is joined."""
    stop = threading.Event()
    thread = threading.Thread(target=loop, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        on_stop()
        thread.join(join_s)


@contextmanager
def supervised(cmd: list[str], env: dict[str, str], pidfile: Path) -> Iterator[list[int]]:
    """Run ``cmd`` again whenever it exits (systemd's Restart=always), its pid in
    ``pidfile`` (what stands in for ``systemctl restart``); the exit codes."""
    codes: list[int] = []
    current: list[subprocess.Popen[bytes]] = []

    def loop(stop: threading.Event) -> None:
        while not stop.is_set():
            proc = subprocess.Popen(cmd, env=env, cwd="/", stderr=subprocess.DEVNULL)
            current[:] = [proc]
            pidfile.write_text(f"{proc.pid}\n")
            codes.append(proc.wait())
            stop.wait(0.5)

    def end() -> None:
        for proc in current:
            proc.terminate()

    with in_background(loop, 20, end):
        yield codes


@contextmanager
def switch_unit(
    home: Path, prefix: Path, env: dict[str, str], pidfile: Path
) -> Iterator[list[subprocess.CompletedProcess[str]]]:
    """sohoa-release-switch.path and .service: ``release apply`` (the installed release's
    code) whenever ``install.json`` or ``pending`` exists and it is not running; its runs."""
    runs: list[subprocess.CompletedProcess[str]] = []
    cmd = [str(prefix / "bin" / "sohoa-launch"), "release", "apply", "--prefix", str(prefix)]
    cmd += ["--restart-pidfile", str(pidfile)]

    def loop(stop: threading.Event) -> None:
        while not stop.wait(0.2):
            if (home / "release" / "install.json").exists() or (prefix / "pending").exists():
                runs.append(
                    subprocess.run(
                        cmd, env=env, cwd="/", capture_output=True, text=True, timeout=300
                    )
                )

    with in_background(loop, 300):
        yield runs


def sohoa(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SOHOA_CONFIG": str(config)}
    return subprocess.run(
        [*SOHOA, *args], env=env, capture_output=True, text=True, timeout=120, cwd=REPO
    )


def release_status(prefix: Path) -> dict[str, object]:
    proc = subprocess.run(
        [*SOHOA, "release", "status", "--prefix", str(prefix), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    doc: dict[str, object] = json.loads(proc.stdout)
    return doc


def offer(site: Site, version: str, folder: Path) -> None:
    to = ("--to", site.device.device.id, "--bundles", str(folder))
    offered = sohoa(site.warehouse_toml, "release", "offer", version, *to)
    assert offered.returncode == 0, offered.stderr


def rollout(site: Site, version: str, folder: Path) -> dict[str, int]:
    proc = sohoa(
        site.warehouse_toml, "release", "rollout", version, "--bundles", str(folder), "--json"
    )
    doc: dict[str, int] = json.loads(proc.stdout)["by_status"]
    return doc


def test_offered_release_downloads_over_a_cut_link_switches_and_keeps_syncing(
    site: Site, release_bundles: Bundles, tmp_path: Path
) -> None:
    prefix, folder = tmp_path / "opt", tmp_path / "province-releases"
    folder.mkdir()
    for version in (NEXT, BROKEN):
        (folder / f"sohoa-{version}.bundle").hardlink_to(release_bundles.of(version))
    proxy = FaultProxy((site.broker.host, site.broker.port), cut_every_s=3.0).start()
    device_toml = write_toml(
        tmp_path / "device-release.toml",
        site.device.home,
        site.device.device.id,
        f"mqtt://127.0.0.1:{proxy.port}",
        sync={"receipt_timeout_s": 5.0, "health_interval_s": 5},
        spool={"reserve_mb": 0},
        ui={"listen": ""},
        release={
            "prefix": str(prefix),
            "public_key": str(release_bundles.pub),
            "health_deadline_s": DEADLINE_S,
        },
    )
    installed = sohoa(
        device_toml,
        "release",
        "install",
        str(release_bundles.of(GOOD)),
        "--prefix",
        str(prefix),
        "--no-restart",
    )
    assert installed.returncode == 0, installed.stderr
    before = spool_documents(site.device, 5, prefix="before")
    env = {**os.environ, "SOHOA_CONFIG": str(device_toml)}
    pidfile = tmp_path / "sync.pid"
    serve = subprocess.Popen(
        [*SOHOA, "release", "serve", "--bundles", str(folder)],
        env={**os.environ, "SOHOA_CONFIG": str(site.warehouse_toml)},
        cwd=REPO,
    )
    try:
        with (
            warehouse_workers(site.warehouse, 1),
            supervised([str(prefix / "bin" / "sohoa-launch"), "sync"], env, pidfile),
            switch_unit(site.device.home, prefix, env, pidfile) as applied,
        ):
            wait_until(lambda: pending_count(site.device) == 0, 60, "the first documents stored")
            offer(site, NEXT, folder)
            wait_until(lambda: release_status(prefix)["current"] == NEXT, 80, f"switched to {NEXT}")
            after = spool_documents(site.device, 5, prefix="after")
            wait_until(lambda: pending_count(site.device) == 0, 60, "the later documents stored")
            wait_until(lambda: rollout(site, NEXT, folder)["healthy"] == 1, 30, "healthy reported")

            # a release that fails to start, over the same link: the device goes back by
            # itself, says so to the province, and keeps syncing on the release before
            offer(site, BROKEN, folder)
            wait_until(
                lambda: rollout(site, BROKEN, folder)["rolled_back"] == 1,
                DEADLINE_S + 90,
                f"{BROKEN} rolled back and reported",
            )
            assert release_status(prefix)["current"] == NEXT
            last = spool_documents(site.device, 3, prefix="last")
            wait_until(lambda: pending_count(site.device) == 0, 60, "the last documents stored")

    finally:
        serve.terminate()
        serve.wait(10)
        proxy.stop()
    assert proxy.cuts >= 2  # the link really was cut during the download
    reports = {r["version"]: r["status"] for r in release_status(prefix)["reports"]}  # type: ignore[attr-defined]
    assert reports == {GOOD: "installed", NEXT: "healthy", BROKEN: "rolled_back"}
    outcomes = [run.stdout.strip() or run.stderr.strip() for run in applied]
    assert any(f"release {NEXT} is healthy" in line for line in outcomes), outcomes
    assert any(f"release {BROKEN} rolled back to {NEXT}" in line for line in outcomes), outcomes
    expected = {(site.device.device.id, s.doc_id): s.pdf_sha256 for s in before + after + last}
    assert_stored_exactly_once(site, expected)
