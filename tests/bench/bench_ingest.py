"""Benchmark: warehouse ingest in documents per second, by workers, index and size.

Run: .venv/bin/python -m tests.bench.bench_ingest [--quick] [--docs-30kb N --docs-3mb N]

Real parts, started here: mosquitto, a PostgreSQL cluster, ``sohoa warehouse serve
--workers N`` subprocesses (a fresh archive and index each run), four devices
publishing pre-sealed envelopes (manifest, then 64 KiB segments) as fast as the
broker takes them. A run is timed from the first publish to the last ``stored``
receipt; should nothing be stored for a while, the devices send the rest again.

- baseline: ``Ingest.handle`` on the same messages in order, in this process: no
  broker, one worker, SQLite. Ratios: each run ÷ baseline, N workers ÷ 1 worker.
- each part alone: the broker (the messages to subscribers that only count them)
  and the index (``add``, ``get``; PostgreSQL ``add`` also on two connections).
- CPU in cores during each run: ``sub`` the subscribers (warehouse or counting
  processes), ``mq`` mosquitto, ``pg`` PostgreSQL, ``dev`` the devices (this
  process), ``other`` the rest of the machine. Near one whole core is saturated
  (mosquitto is single-threaded; a process's worker threads share one GIL).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from agent.services.warehouse import ingest_from_config
from sync.mqtt.link import Link
from sync.mqtt.settings import LinkSettings
from sync.protocol import INGEST_FILTER
from sync.warehouse.index import StoredDocument, open_index
from tests.support import chaos
from tests.support.chaos import Device, Doc, Province, ServeProcess, Watch
from tests.support.mqtt import Broker, start_mosquitto
from tests.support.postgres import Postgres, start_postgres
from tests.support.site import REPO
from tests.support.wait import wait_until

SEGMENT = 64 * 1024
DEVICES = 4
STALL_S = 4.0  # nothing stored for this long: the devices send the rest again
RUN_TIMEOUT_S = 240.0
SHARE = "$share/ingest/" + INGEST_FILTER
LOG_SUBSCRIBE = "log_type subscribe\n"  # mosquitto then logs who subscribed: who is ready
SIZES = {"30 KB": 30_000, "3 MB": 3_000_000}
WORKERS = (1, 2, 4)
BACKENDS = ("sqlite", "postgresql")
OPTIONS = (  # flag, (default, with --quick), help
    ("--docs-30kb", (400, 80), "30 KB documents per run"),
    ("--docs-3mb", (40, 10), "3 MB documents per run"),
    ("--index-rows", (3000, 500), "rows for the index alone"),
    ("--repeat", (2, 1), "runs of each measure, the best one kept"),
)


@dataclass(frozen=True)
class Run:
    rate: float  # documents per second
    cores: dict[str, float]
    resent: int = 0


@dataclass
class Rig:
    root: Path
    broker: Broker
    pg: Postgres
    province: Province
    devices: list[Device]
    watch: Watch
    links: dict[str, Link]
    runs: int = 0

    def index(self, backend: str) -> str:
        """A fresh, empty index: "sqlite" (in the run's own archive) or a new database."""
        if backend == "sqlite":
            return "sqlite"
        self.pg.execute(f"CREATE DATABASE bench_{self.runs}")
        return self.pg.dsn(f"bench_{self.runs}")

    def drop(self, backend: str) -> None:
        if backend != "sqlite":
            self.pg.execute(f"DROP DATABASE bench_{self.runs} WITH (FORCE)")

    def cpu_groups(self, subscribers: list[int]) -> dict[str, list[int]]:
        pg = int((self.pg.data / "postmaster.pid").read_text().split()[0])
        groups = {"warehouse": subscribers, "mosquitto": [self.broker.proc.pid]}
        return {**groups, "postgres": [pg, *chaos.child_pids(pg)], "devices": [os.getpid()]}

    def wait_subscribed(self, clients: list[str]) -> None:
        log = self.broker.log_text
        wait_until(lambda: all(chaos.subscribed(log(), c) for c in clients), 30, "subscribed")

    def close(self) -> None:
        for link in self.links.values():
            link.close()
        self.watch.close()
        self.broker.stop()
        self.pg.stop()


def start_rig(root: Path) -> Rig:
    pg = start_postgres()
    try:
        broker = start_mosquitto(root / "broker", persistence=False, extra_conf=LOG_SUBSCRIBE)
    except BaseException:
        pg.stop()
        raise
    province = chaos.make_province(root, broker.url())
    devices = [chaos.enrol_device(root, province, f"dev-bench-{i}") for i in range(DEVICES)]
    links = {d.id: Link(LinkSettings(broker.host, broker.port, d.id)) for d in devices}
    for link in links.values():
        link.connect()
    return Rig(root, broker, pg, province, devices, Watch(broker.host, broker.port), links)


# -- the runs --------------------------------------------------------------------------


def await_stored(rig: Rig, docs: list[Doc], t0: float) -> int:
    """Until every document has a ``stored`` receipt; how many had to be sent again."""
    watch, resent = rig.watch, 0
    seen, changed = 0, time.monotonic()
    while len(watch.stored) < len(docs):
        watch.progress.wait(0.25)
        watch.progress.clear()
        now = time.monotonic()
        assert not watch.rejected, f"documents rejected: {watch.rejected}"
        assert now - t0 < RUN_TIMEOUT_S, f"{len(watch.stored)} of {len(docs)} stored in time"
        if len(watch.stored) != seen:
            seen, changed = len(watch.stored), now
        elif now - changed > STALL_S:
            again = [d for d in docs if (d.device, d.doc_id) not in watch.stored]
            chaos.publish_all(rig.links, again, RUN_TIMEOUT_S)
            resent, changed = resent + len(again), time.monotonic()
    return resent


def timed(rig: Rig, docs: list[Doc], pids: list[int], done: Callable[[float], int]) -> Run:
    """Publish ``docs`` and wait with ``done``; the rate up to the last message the watch
    saw, and the CPU each part used meanwhile."""
    groups = rig.cpu_groups(pids)
    rig.watch.reset()
    before, busy = chaos.cpu_snapshot(groups), chaos.machine_busy_seconds()
    t0 = chaos.publish_all(rig.links, docs, RUN_TIMEOUT_S)
    resent = done(t0)
    seconds = time.monotonic() - t0
    cores = chaos.cpu_cores(before, chaos.cpu_snapshot(groups), seconds)
    cores["other"] = (chaos.machine_busy_seconds() - busy) / seconds - sum(cores.values())
    last = [*rig.watch.stored.values(), *(at for _, at in rig.watch.sinks.values())]
    return Run(len(docs) / (max(last) - t0), cores, resent)


def broker_run(rig: Rig, docs: list[Doc], backend: str, workers: int, processes: int = 1) -> Run:
    """``processes`` × ``sohoa warehouse serve --workers N`` on a fresh archive and index."""
    rig.runs += 1
    wh = chaos.another_archive(rig.province, f"r{rig.runs}", rig.index(backend))
    procs = [
        ServeProcess(wh, f"r{rig.runs}p{k}", workers, rig.root / f"r{rig.runs}p{k}.log").start()
        for k in range(processes)
    ]
    clients = [c for p in procs for c in p.client_ids]
    try:
        rig.wait_subscribed(clients)
        pids = [p.proc.pid for p in procs if p.proc is not None]
        run = timed(rig, docs, pids, lambda t0: await_stored(rig, docs, t0))
    finally:
        for p in procs:
            p.stop()
        chaos.forget_sessions(rig.broker.host, rig.broker.port, clients)
    rig.drop(backend)
    return run


def broker_alone(rig: Rig, docs: list[Doc], sinks: int) -> Run:
    """The same messages to ``sinks`` subscriber processes that only count them."""
    rig.runs += 1
    total = sum(1 + len(d.segments) for d in docs)
    names = [f"bench-sink-{rig.runs}-{k}" for k in range(sinks)]
    cmd = [sys.executable, "-m", "tests.bench.bench_ingest", "--sink", str(rig.broker.port)]
    procs = [subprocess.Popen([*cmd, n], cwd=REPO) for n in names]

    def counted(t0: float) -> int:
        got = rig.watch.sinks.values
        wait_until(lambda: sum(n for n, _ in got()) >= total, RUN_TIMEOUT_S, "all counted")
        return 0

    try:
        rig.wait_subscribed(names)
        return timed(rig, docs, [p.pid for p in procs], counted)
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


def in_process(rig: Rig, docs: list[Doc]) -> tuple[float, float]:
    """The baseline: ``Ingest.handle`` on every message in order, SQLite, no broker;
    documents per second and CPU seconds (user + system) per document."""
    rig.runs += 1
    wh = chaos.another_archive(rig.province, f"r{rig.runs}", "sqlite")
    ingest, index = ingest_from_config(wh.cfg)
    cpu0, t0 = time.process_time(), time.monotonic()
    for doc in docs:
        for topic, payload in doc.messages():
            ingest.handle(topic, payload)
    seconds, cpu = time.monotonic() - t0, time.process_time() - cpu0
    stored = len(index.all())
    index.close()
    assert stored == len(docs), f"in-process ingest stored {stored} of {len(docs)}"
    return len(docs) / seconds, cpu / len(docs)


def index_rates(rig: Rig, rows: int) -> dict[str, float]:
    """Index calls per second, each index alone: ``add`` of ``rows`` rows split over one
    thread per connection, then ``get`` of each on one connection."""
    docs = [
        StoredDocument(f"doc-{i:06d}", "dev-bench-0", hashlib.sha256(b"%d" % i).hexdigest(),
                       "2024-05-12T08:30:00Z", 30_000, 1, "p" * 64, f"/archive/{i}/document.pdf")
        for i in range(rows)
    ]  # fmt: skip
    rates = {}
    for backend, connections in (("sqlite", 1), ("postgresql", 1), ("postgresql", 2)):
        rig.runs += 1
        spec = rig.index(backend)
        opened = [open_index(spec, rig.root / f"ix{rig.runs}") for _ in range(connections)]
        name = f"{backend} add, {connections} connection{'s' * (connections > 1)}"
        rates[name] = chaos.calls_per_s(opened, lambda ix, i: ix.add(docs[i]), rows)
        if connections == 1:
            get = lambda ix, i: ix.get("dev-bench-0", docs[i].doc_id)  # noqa: E731
            rates[f"{backend} get"] = chaos.calls_per_s(opened, get, rows)
        for ix in opened:
            ix.close()
        rig.drop(backend)
    return rates


# -- the plan and the table -------------------------------------------------------------

RunKey = tuple[str, str, int, int]  # size, index, workers per process, processes


@dataclass
class Results:
    baseline: dict[str, tuple[float, float]]  # docs/s, CPU seconds per document
    runs: dict[RunKey, Run]
    broker: dict[tuple[str, int], Run]
    index: dict[str, float]
    segments: dict[str, int]


def best(repeat: int, run: Callable[[], Run]) -> Run:
    return max((run() for _ in range(repeat)), key=lambda r: r.rate)


def measure(rig: Rig, counts: dict[str, int], index_rows: int, repeat: int) -> Results:
    res = Results({}, {}, {}, {}, {})
    for size, nbytes in SIZES.items():
        docs = chaos.sealed_docs(rig.devices, nbytes, counts[size], SEGMENT, rig.root / "sealed")
        res.segments[size] = len(docs[0].segments)
        res.baseline[size] = in_process(rig, docs)
        for sinks in (1, 2):
            res.broker[(size, sinks)] = best(repeat, partial(broker_alone, rig, docs, sinks))
        for backend in BACKENDS:
            for workers in WORKERS:
                for procs in (1, 2) if (backend, workers) == ("postgresql", 1) else (1,):
                    key = (size, backend, workers, procs)
                    res.runs[key] = best(repeat, partial(broker_run, rig, docs, *key[1:]))
    res.index = index_rates(rig, index_rows)
    return res


def cores_text(c: dict[str, float]) -> str:
    short = {"warehouse": "sub", "mosquitto": "mq", "postgres": "pg", "devices": "dev"}
    return " ".join(f"{short.get(k, k)} {v:.2f}" for k, v in c.items())


Row = tuple[str, str, str, str, str]


def table_rows(res: Results) -> list[Row]:
    rows: list[Row] = []
    for (size, backend, workers, procs), run in res.runs.items():
        who = f"{f'{procs} processes × ' * (procs > 1)}{workers} worker{'s' * (workers > 1)}"
        name = (
            f"ingest {size} docs/s, {backend}, {who}{f' [{run.resent} resent]' * bool(run.resent)}"
        )
        base = res.baseline[size][0]
        rows.append((name, f"{run.rate:.1f}", f"{base:.1f}", f"{run.rate / base:.2f}",
                     cores_text(run.cores)))  # fmt: skip
    for size in SIZES:
        pairs = [(b, (w, 1)) for b in BACKENDS for w in WORKERS[1:]] + [("postgresql", (1, 2))]
        for backend, (workers, procs) in pairs:
            n = res.runs[(size, backend, workers, procs)].rate
            one = res.runs[(size, backend, 1, 1)].rate
            what = f"{procs} processes × 1 worker" if procs > 1 else f"{workers} workers"
            goal = " (target ≥ 1.6)" if (backend, workers) == ("postgresql", 2) else ""
            rows.append((f"{size} {backend}: {what} ÷ 1 worker{goal}",
                         f"{n:.1f}", f"{one:.1f}", f"{n / one:.2f}", ""))  # fmt: skip
    for (size, sinks), run in res.broker.items():
        rows.append((f"broker alone, {size} docs/s to {sinks} counting subscriber(s)",
                     f"{run.rate:.1f}", "", "", cores_text(run.cores)))  # fmt: skip
    rows += [
        (f"index alone, {name} per s", f"{r:.0f}", "", "", "") for name, r in res.index.items()
    ]
    return rows


def bottleneck(res: Results, size: str, cpus: int) -> str:
    """Which part limits two workers on PostgreSQL, from the numbers above."""
    one = res.runs[(size, "postgresql", 1, 1)].rate
    run, procs = res.runs[(size, "postgresql", 2, 1)], res.runs[(size, "postgresql", 1, 2)]
    broker = max(r.rate for (s, _), r in res.broker.items() if s == size)
    gets = res.segments[size] + 3  # manifest, each segment, completion
    index = 1 / (gets / res.index["postgresql get"] + 1 / res.index["postgresql add, 1 connection"])
    c, used = run.cores, sum(v for k, v in run.cores.items() if k != "other")
    if run.rate >= 0.8 * broker or c["mosquitto"] >= 0.85:
        verdict = "the broker: ingest runs at its pass-through rate"
    elif run.rate >= 0.8 * index or c["postgres"] >= 0.85:
        verdict = "the index: ingest runs at its insert rate"
    elif used + c["other"] >= cpus - 0.3:
        verdict = f"the CPU: every core is busy, {c['other']:.2f} of them by other programs"
    elif procs.rate >= 1.15 * run.rate:
        verdict = (
            f"the warehouse process: its worker threads serialise (one GIL): 2 processes"
            f" reach {procs.rate / one:.2f}× one worker, 2 threads {run.rate / one:.2f}×"
        )
    else:
        verdict = f"none of the parts ({used:.2f} of {cpus} cores busy): the workers wait"
    return (
        f"{size}: 2 workers on PostgreSQL {run.rate:.1f} docs/s; broker alone {broker:.1f} docs/s;"
        f" index alone {index:.0f} docs/s ({gets} get + 1 add each); CPU {cores_text(c)};"
        f" in-process a document takes {1000 / res.baseline[size][0]:.1f} ms,"
        f" {1000 * res.baseline[size][1]:.1f} ms of it CPU\n  → bottleneck: {verdict}"
    )


def machine(rig: Rig) -> str:
    cpu = Path("/proc/cpuinfo").read_text().split("model name", 1)[1].split("\n", 1)[0]
    model = cpu.split(":", 1)[1].strip()
    mosq = rig.broker.log_text().split("mosquitto version ", 1)[1].split()[0]
    pg = subprocess.run([rig.pg.bindir / "postgres", "--version"], capture_output=True, text=True)
    return (
        f"machine: nproc {os.cpu_count()}, {model}; {platform.system()} {platform.release()};"
        f" Python {platform.python_version()}; mosquitto {mosq}; {pg.stdout.strip()}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer documents: about a minute")
    for flag, (full, quick), what in OPTIONS:
        p.add_argument(flag, type=int, help=f"{what} (default {full}; with --quick {quick})")
    p.add_argument("--sink", nargs=2, metavar=("PORT", "CLIENT_ID"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.sink:
        chaos.count_messages(int(a.sink[0]), a.sink[1], SHARE)
        return
    for flag, defaults, _ in OPTIONS:
        name = flag[2:].replace("-", "_")
        setattr(a, name, getattr(a, name) or defaults[a.quick])
    counts = {"30 KB": a.docs_30kb, "3 MB": a.docs_3mb}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        rig = start_rig(Path(tmp))
        try:
            res, about = measure(rig, counts, a.index_rows, a.repeat), machine(rig)
        finally:
            rig.close()
    print(f"command: {' '.join([sys.executable, *sys.orig_argv[1:]])}")
    print(about)
    print(
        f"documents: {counts['30 KB']} × 30 KB ({res.segments['30 KB']} segment),"
        f" {counts['3 MB']} × 3 MB ({res.segments['3 MB']} segments of {SEGMENT // 1024} KiB),"
        f" from {DEVICES} devices; {a.index_rows} index rows; best of {a.repeat};"
        f" {time.monotonic() - started:.0f} s in all"
    )
    rows = table_rows(res)
    w = max(len(r[0]) for r in rows)
    print(f"| {'measure':<{w}} | {'sohoa':>8} | {'baseline':>8} | {'ratio':>5} | cores")
    print(f"|{'-' * (w + 2)}|{'-' * 10}|{'-' * 10}|{'-' * 7}|{'-' * 34}")
    for name, ours, base, ratio, cores in rows:
        print(f"| {name:<{w}} | {ours:>8} | {base:>8} | {ratio:>5} | {cores}")
    for size in SIZES:
        print(bottleneck(res, size, os.cpu_count() or 1))


if __name__ == "__main__":
    main()
