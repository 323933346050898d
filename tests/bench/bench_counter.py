"""Benchmark: the counter page — page-to-thumbnail latency, capture CPU per page with
the page open in Chromium against the page turned off, and the agent's memory.

Run: .venv/bin/python -m tests.bench.bench_counter [--quick] [--pages N] [--rounds N]
     [--batch-pages N] [--pairs N] [--screenshot PATH]

Two real ``sohoa agent`` subprocesses, as systemd runs them, side by side: one with
``[ui] listen`` on a free port and headless Chromium signed in and open on its page,
one with ``[ui] listen = ""`` (the baseline). Both run on CPU 0; Chromium, this
script and the broker on the others, as when the page is open on the counter PC.

- stream: one page file lands in each hot folder every second (60 pages per minute;
  the page-off agent half a second later). The hot folder takes each complete file
  as one batch, so these are one-page batches (the worst case for the page: three
  changes per page, batch start, page, batch end); a file counts as complete once
  its size has not changed for 2 s (``HotFolder``'s settle time against half-written
  scans), so latency is shown from the moment the file lands and from the moment
  the batch appears on the page (the agent took the file; the pipeline's work on
  the page is included). Both instants and "thumbnail visible" (image loaded, then
  one frame) are recorded inside Chromium: the measurement adds no request.
- one multi-page batch (a TIFF of --batch-pages pages) into each agent in turn,
  --pairs times, the order turning: one change per page.
- capture CPU per page: utime + stime of the agent process (``/proc/<pid>/stat``)
  from the first page landing to the last file committed, divided by the pages;
  split into the page's server thread (the one in epoll) and the rest. RSS: each
  agent's peak (``VmHWM``).
- last, the screenshot: a counter batch (receipt, ID card, separator, blank page)
  on the page, 1024x600, Vietnamese.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.capture.samples import make_page
from tests.support.browser import (
    CounterAgent,
    chromium,
    content_pages,
    counter_batch,
    open_page,
    save_pages,
)
from tests.support.mqtt import start_mosquitto
from tests.support.site import REPO, make_site
from tests.support.wait import became_true

RATE_S = 1.0  # 60 pages per minute
LATENCY_TARGET_S = 1.0
CPU_TARGET = 1.10
RSS_TARGET_MB = 150
WARM_UP = 3
DOSSIER = "000.00.20.H56-230512-0077"
OWNER = "001090012345"
RECORDER = """
// every batch in the order the page first showed it (as the batch in view or, when it
// was over before a redraw, in the history), and when its thumbnail became visible
const seen = (window.__seen = { order: [], shown: {}, visible: {} });
const now = () => performance.timeOrigin + performance.now();
const note = (id) => {
  if (id && !(id in seen.shown)) { seen.shown[id] = now(); seen.order.push(id); }
};
const visible = (img) => {
  const id = decodeURIComponent(img.getAttribute("src").split("/")[3]);
  const mark = () => requestAnimationFrame(() => {
    if (!(id in seen.visible)) seen.visible[id] = now();
  });
  if (img.complete && img.naturalWidth) mark();
  else img.addEventListener("load", mark, { once: true });
};
new MutationObserver((changes) => {
  const past = [...document.querySelectorAll("#last-batches article")].reverse();
  past.forEach((a) => note(a.dataset.batch)); // older than the batch in view
  note(document.getElementById("batch").dataset.batch);
  for (const change of changes) for (const node of change.addedNodes) {
    const img = node.querySelector && node.querySelector("#pages img");
    if (img) visible(img);
  }
}).observe(document.querySelector("main"), { attributes: true, childList: true, subtree: true });
"""


def cpu_s(pid: int, tid: int | None = None) -> float:
    """utime + stime of process ``pid``, or of its thread ``tid``."""
    stat = Path(f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_thread(pid: int) -> int:
    """The agent's thread that runs the page's event loop: the one waiting in epoll."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        if "epoll" in (task / "wchan").read_text():
            return int(task.name)
    raise SystemExit("the page-on agent has no thread waiting in epoll: no page server?")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stage_pages(folder: Path, batch_pages: int) -> tuple[list[Path], Path]:
    """A few distinct pages, as PNG files, cycled through by the stream: a receipt with
    its Code 128 dossier code, then text pages; and the same cycled into one TIFF."""
    folder.mkdir()
    pages = [counter_batch(DOSSIER, OWNER)[0], *content_pages(5, seed=20)]
    paths = []
    for n, page in enumerate(pages):
        paths.append(folder / f"page-{n}.png")
        save_pages([page], paths[-1])
    # a copy for each frame: PIL's TIFF writer cannot write one image object twice
    save_pages([pages[n % len(pages)].copy() for n in range(batch_pages)], folder / "batch.tif")
    return paths, folder / "batch.tif"


class Feeder:
    """Page files into both agents' hot folders at the scanner's pace (the page-off
    agent half a period later, so the two never take a page at the same instant)."""

    def __init__(self, staged: list[Path], on: CounterAgent, off: CounterAgent) -> None:
        self.staged, self.on, self.off = staged, on, off
        self.server_tid = server_thread(on.proc.pid)
        self.sent = 0
        self.landed: list[float] = []  # on the page-on agent, in order

    def stream(self, count: int) -> None:
        start = time.monotonic()
        for n in range(count):
            for agent, offset in ((self.on, 0.0), (self.off, RATE_S / 2)):
                time.sleep(max(0.0, start + n * RATE_S + offset - time.monotonic()))
                name = f"scan-{self.sent:04d}.png"
                shutil.copyfile(
                    self.staged[self.sent % len(self.staged)], agent.hot / (name + ".part")
                )
                if agent is self.on:
                    self.landed.append(time.time())
                (agent.hot / (name + ".part")).rename(agent.hot / name)
            self.sent += 1
        for agent in (self.on, self.off):
            if not became_true(functools.partial(hot_folder_empty, agent), 120, poll_s=0.05):
                raise SystemExit(f"the agent did not take every page:\n{agent.log_text()}")


def hot_folder_empty(agent: CounterAgent) -> bool:
    return not any(p.suffix == ".png" for p in agent.hot.iterdir())


Cpu = tuple[float, float, float]  # per page: page-on agent, page-off agent, page's thread


def meters(feeder: Feeder) -> list[float]:
    on = feeder.on.proc.pid
    return [cpu_s(on), cpu_s(feeder.off.proc.pid), cpu_s(on, feeder.server_tid)]


def timed_round(feeder: Feeder, count: int) -> Cpu:
    """CPU seconds per page of the page-on and the page-off agent over one round, and
    of the page-on agent's page server thread."""
    before = meters(feeder)
    feeder.stream(count)
    on, off, server = (a - b for a, b in zip(meters(feeder), before, strict=True))
    return on / count, off / count, server / count


def batch_cpu(feeder: Feeder, agent: CounterAgent, tiff: Path, name: str) -> list[float]:
    """``meters`` over one multi-page batch into ``agent`` (from landing to committed)."""
    before = meters(feeder)
    shutil.copyfile(tiff, agent.hot / f"{name}.tif.part")
    (agent.hot / f"{name}.tif.part").rename(agent.hot / f"{name}.tif")
    if not became_true(lambda: not any(agent.hot.glob("*.tif")), 180, poll_s=0.05):
        raise SystemExit(f"the agent did not take the batch:\n{agent.log_text()}")
    return [a - b for a, b in zip(meters(feeder), before, strict=True)]


def batch_rounds(feeder: Feeder, tiff: Path, pages: int, pairs: int) -> list[Cpu]:
    """CPU per page of one multi-page batch into each agent in turn, for each pair, the
    order turning each pair (on off, off on, ...) so that drift cancels."""
    out = []
    for n in range(pairs):
        first = feeder.on if n % 2 == 0 else feeder.off
        second = feeder.off if first is feeder.on else feeder.on
        runs = [batch_cpu(feeder, a, tiff, f"batch-{n}-{a is feeder.on}") for a in (first, second)]
        on_run = runs[0] if first is feeder.on else runs[1]
        off_run = runs[1] if first is feeder.on else runs[0]
        out.append((on_run[0] / pages, off_run[1] / pages, on_run[2] / pages))
    return out


def seen(driver: Any) -> dict[str, Any]:
    recorded: dict[str, Any] = driver.execute_script("return window.__seen")
    return recorded


def latencies(recorded: dict[str, Any], landed: list[float]) -> tuple[list[float], list[float]]:
    """(landing -> visible, shown -> visible) in seconds for each page whose thumbnail
    was shown; the n-th batch the page showed is the n-th file."""
    shown, visible = recorded["shown"], recorded["visible"]
    from_landing, from_shown = [], []
    for batch_id, at in zip(recorded["order"], landed, strict=False):
        if batch_id in visible:
            from_landing.append(visible[batch_id] / 1000 - at)
            from_shown.append((visible[batch_id] - shown[batch_id]) / 1000)
    return from_landing, from_shown


def screenshot(driver: Any, agent: CounterAgent, path: Path) -> None:
    batch = [*counter_batch(DOSSIER, OWNER, seed=30), make_page((), seed=31)]
    before = {b["batch_id"] for b in agent.batches()}
    agent.feed(batch, "scan-showcase")
    if not became_true(lambda: agent.batches()[0]["batch_id"] not in before, 60, poll_s=0.1):
        raise SystemExit(f"the showcase batch did not end:\n{agent.log_text()}")
    loaded = "return [...document.querySelectorAll('#pages img')].filter((i) => i.complete && i.naturalWidth).length"
    if not became_true(lambda: driver.execute_script(loaded) == len(batch), 20, poll_s=0.1):
        raise SystemExit("the showcase batch's thumbnails did not all load")
    driver.execute_script("return new Promise((done) => requestAnimationFrame(() => done()))")
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_rows(name: str, each: str, rounds: list[Cpu]) -> list[tuple[str, ...]]:
    """One row per round, then all rounds together, then where the difference went:
    the page's server thread, and the capture threads' extra work (thumbnails)."""
    rows: list[tuple[str, ...]] = []
    for n, (on, off, _server) in enumerate(rounds, 1):
        rows.append(
            (f"capture CPU per page, {name}, {each} {n}", f"{on * 1000:.1f} ms",
             f"{off * 1000:.1f} ms (page off)", f"{on / off:.3f}", "")
        )  # fmt: skip
    on, off, server = (statistics.mean(r[i] for r in rounds) for i in (0, 1, 2))
    rows.append(
        (f"capture CPU per page, {name}, all", f"{on * 1000:.1f} ms",
         f"{off * 1000:.1f} ms (page off)", f"{on / off:.3f}", f"<= {CPU_TARGET:.2f}")
    )  # fmt: skip
    rows.append(
        ("  of which the page's server thread", f"{server * 1000:.1f} ms", "",
         f"{server / off:.3f}", "")
    )  # fmt: skip
    rows.append(
        ("  of which capture threads' extra", f"{(on - server - off) * 1000:.1f} ms",
         "thumbnails, events", f"{(on - server - off) / off:.3f}", "")
    )  # fmt: skip
    return rows


def table(
    rounds: list[Cpu], batch: list[Cpu], batch_pages: int,
    rss: tuple[float, float], recorded: dict[str, Any], landed: list[float],
) -> list[tuple[str, ...]]:  # fmt: skip
    from_landing, from_shown = latencies(recorded, landed)
    rows: list[tuple[str, ...]] = [("measure", "page on", "baseline", "ratio", "target")]
    for name, values in (
        ("latency batch shown -> thumbnail", from_shown),
        ("latency file landed -> thumbnail", from_landing),
    ):
        for q in (0.5, 0.95):
            rows.append(
                (f"{name} p{round(q * 100)}", f"{pct(values, q):.3f} s", "",
                 f"{pct(values, q) / LATENCY_TARGET_S:.2f} of 1 s",
                 f"p95 <= {LATENCY_TARGET_S:.0f} s" if q == 0.95 else "")
            )  # fmt: skip
    wait = [a - b for a, b in zip(from_landing, from_shown, strict=True)]
    rows.append(
        ("hot-folder wait (landed -> shown) p50", f"{statistics.median(wait):.3f} s",
         "2 s settle + <= 1 s poll", "", "")
    )  # fmt: skip
    rows += cpu_rows("stream", "round", rounds)
    rows += cpu_rows(f"{batch_pages}-page batch", "run", batch)
    rows.append(
        ("agent peak RSS", f"{rss[0]:.0f} MB", f"{rss[1]:.0f} MB (page off)",
         f"{rss[0] / rss[1]:.2f}", f"<= {RSS_TARGET_MB} MB")
    )  # fmt: skip
    pages = min(len(landed), len(recorded["order"]))
    rows.append(
        ("pages shown as a thumbnail", str(len(from_shown)), f"of {pages} pages (batches)",
         "", "the rest: straight to history")
    )  # fmt: skip
    return rows


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    return f"{os.cpu_count()} CPUs, {model}, Python {platform.python_version()}"


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` onto ``cpus`` (threads it starts later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus)


def measure(base: Path, args: argparse.Namespace, count: int) -> list[tuple[str, ...]]:
    # the agents on CPU 0; Chromium, the feeder and the broker on the others, as when
    # the page is open on the counter PC: the browser's work is not charged to the device
    split = (os.cpu_count() or 1) >= 2
    if split:
        os.sched_setaffinity(0, set(range(1, os.cpu_count() or 2)))
    broker = start_mosquitto(base / "broker")
    staged, tiff = stage_pages(base / "staged", args.batch_pages)
    agents: list[CounterAgent] = []
    driver = None
    try:
        for name, listen in (("on", True), ("off", False)):
            site = make_site(base / name, broker)
            agents.append(CounterAgent.start(site, base / name / "agent", listen=listen))
            if split:
                pin(agents[-1].proc.pid, {0})
        driver = chromium(1024, 600)
        open_page(driver, agents[0])
        driver.execute_script(RECORDER)
        feeder = Feeder(staged, agents[0], agents[1])
        feeder.stream(WARM_UP)  # imports, zbar, the first seal: not counted
        rounds = [timed_round(feeder, count) for _ in range(args.rounds)]
        batch = batch_rounds(feeder, tiff, args.batch_pages, args.pairs)
        rss = (peak_rss_mb(agents[0].proc.pid), peak_rss_mb(agents[1].proc.pid))
        became_true(lambda: len(seen(driver)["order"]) >= feeder.sent, 10, poll_s=0.1)
        recorded = seen(driver)
        screenshot(driver, agents[0], args.screenshot)
    finally:
        if driver is not None:
            driver.quit()
        for agent in agents:
            agent.stop()
        broker.stop()
    return table(rounds, batch, args.batch_pages, rss, recorded, feeder.landed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=60, help="pages per round (60 = 1 min)")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds")
    parser.add_argument("--batch-pages", type=int, default=40, help="pages of the one batch")
    parser.add_argument("--pairs", type=int, default=3, help="batch runs, page on and off")
    parser.add_argument("--quick", action="store_true", help="one round of 15 pages")
    parser.add_argument(
        "--screenshot", type=Path, default=REPO / "docs" / "counter-page.png", help="PNG to write"
    )
    args = parser.parse_args()
    if args.quick:
        args.pages, args.rounds, args.batch_pages, args.pairs = 15, 1, 20, 2
    with tempfile.TemporaryDirectory(prefix="bench-counter-") as tmp:
        rows = measure(Path(tmp), args, args.pages)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print("command: " + " ".join([".venv/bin/python", *sys.orig_argv[1:]]))
    print(f"machine: {machine()}")
    print(
        f"{args.rounds} round(s) of {args.pages} one-page batches at {60 / RATE_S:.0f} pages/min,"
        " page-on and page-off agents side by side"
    )
    for row in rows:
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print(f"screenshot: {args.screenshot}")


if __name__ == "__main__":
    main()
