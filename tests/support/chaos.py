"""A province under fire: one warehouse home shared by several ``sohoa warehouse serve``
processes, several enrolled devices with spools of sealed documents, and what is
needed to kill, restart and inspect them.

Used by ``tests/test_warehouse_chaos.py`` and ``tests/bench/bench_ingest.py`` (the
helpers at the end); plain functions, no fixtures: the benchmark runs outside pytest.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from agent.config import Config, DeviceConfig, WarehouseConfig
from sync import enrolment, keys
from sync.envelope.header import manifest_bytes
from sync.envelope.reader import iter_segments, read_header, read_prefix
from sync.mqtt.link import Link
from sync.mqtt.settings import BrokerConfig, LinkSettings
from sync.protocol import manifest_topic, parse_receipt, receipt_topic, segment_topic
from sync.warehouse.index import DocumentIndex
from tests.support.site import REPO, SOHOA, write_toml
from tests.support.sync import Sealed, fake_pdf, seal, spool_documents
from tests.support.units import NotifySocket
from tests.support.wait import became_true

STOP_TIMEOUT_S = 15.0


def sha256_file(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def env_for(toml: Path) -> dict[str, str]:
    """The environment a ``sohoa`` command needs to read ``toml`` and nothing else."""
    env = {**os.environ, "SOHOA_CONFIG": str(toml)}
    env.pop("SOHOA_HOME", None)
    return env


@dataclass(frozen=True)
class Device:
    """An enrolled device, the envelopes in its spool and their files' sha256 as sealed."""

    cfg: Config
    toml: Path
    sealed: tuple[Sealed, ...] = ()
    envelope_sha256: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.cfg.device.id


@dataclass(frozen=True)
class Province:
    """A warehouse home (keys, enrolled devices, archive) and its configuration file."""

    cfg: Config
    toml: Path

    @property
    def archive(self) -> Path:
        return self.cfg.path(self.cfg.warehouse.archive)


def _province(home: Path, url: str, toml: Path, index: str, archive: str) -> Province:
    # no OCR: these documents are random bytes behind a PDF header (OCR is tested apart)
    warehouse = WarehouseConfig(archive=Path(archive), index=index, ocr=False)
    cfg = Config(home=home, broker=BrokerConfig(url=url), warehouse=warehouse)
    sections = {"archive": archive, "index": index, "ocr": False}
    write_toml(toml, home, "warehouse", url, warehouse=sections)
    return Province(cfg, toml)


def make_province(root: Path, broker_url: str, index: str = "sqlite") -> Province:
    """Warehouse keys in a fresh home under ``root``, its index ``index``."""
    province = _province(root / "warehouse", broker_url, root / "warehouse.toml", index, "archive")
    cfg = province.cfg
    keys.init_warehouse_keys(
        cfg.path(cfg.warehouse.private_key), cfg.path(cfg.warehouse.public_key)
    )
    return province


def another_archive(province: Province, name: str, index: str) -> Province:
    """``province``'s keys and enrolled devices with a fresh archive ``archive-<name>``
    and index ``index``: a clean warehouse for each run of a benchmark."""
    toml = province.toml.with_name(f"warehouse-{name}.toml")
    return _province(province.cfg.home, province.cfg.broker.url, toml, index, f"archive-{name}")


def enrol_device(root: Path, province: Province, device_id: str, **sync: object) -> Device:
    """A device home with its own keys and the warehouse's public key, enrolled at
    ``province`` as ``agent.demo.provision_pair`` does; ``sync``: its [sync] settings."""
    home = root / device_id
    cfg = Config(home=home, broker=province.cfg.broker, device=DeviceConfig(id=device_id))
    keys.init_device_keys(cfg.path(cfg.device.key))
    pub = cfg.path(cfg.warehouse.public_key)
    pub.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(province.cfg.path(province.cfg.warehouse.public_key), pub)
    enrolment.enroll_device(
        keys.device_public_path(cfg.path(cfg.device.key)),
        device_id,
        province.cfg.path(province.cfg.warehouse.devices),
    )
    toml = write_toml(
        root / f"{device_id}.toml",
        home,
        device_id,
        province.cfg.broker.url,
        sync={"receipt_timeout_s": 5.0, **sync},
        spool={"reserve_mb": 0},
    )
    return Device(cfg, toml)


def fill_spool(device: Device, count: int, size: int, segment_size: int = 4096) -> Device:
    """``device`` with ``count`` sealed documents of ``size`` bytes queued in its spool."""
    sealed = spool_documents(
        device.cfg, count, size=size, segment_size=segment_size, prefix=device.id
    )
    hashes = {s.doc_id: sha256_file(s.envelope) for s in sealed}
    return Device(device.cfg, device.toml, tuple(sealed), hashes)


class ServeProcess:
    """One ``sohoa -v warehouse serve --workers N --instance NAME`` process; its log
    (stderr, appended across restarts) in ``log``."""

    def __init__(self, province: Province, instance: str, workers: int, log: Path) -> None:
        self.province, self.instance, self.workers, self.log = province, instance, workers, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0
        self._notify_dir = Path(tempfile.mkdtemp(prefix="sohoa-notify-"))  # short: AF_UNIX
        self._notify: NotifySocket | None = None

    @property
    def client_ids(self) -> list[str]:
        if self.workers == 1:
            return [f"sohoa-warehouse-{self.instance}-w1"]
        # more than one worker: one child process each (agent.services.warehouse_procs)
        return [f"sohoa-warehouse-{self.instance}-p{k + 1}-w1" for k in range(self.workers)]

    def start(self) -> ServeProcess:
        """Start it with a notify socket of its own, as systemd would (Type=notify)."""
        args = ["-v", "warehouse", "serve", "--workers", str(self.workers)]
        if self._notify is not None:
            self._notify.close()
        sock = self._notify_dir / f"n{self.kills}"
        sock.unlink(missing_ok=True)
        self._notify = NotifySocket(sock, os.getuid())
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [*SOHOA, *args, "--instance", self.instance],
                env={**env_for(self.province.toml), "NOTIFY_SOCKET": str(sock)},
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as a power cut or the OOM killer would."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(STOP_TIMEOUT_S)
        self.kills += 1

    def ready(self) -> bool:
        """Its READY=1 arrived: started, signal handlers in place, workers connecting."""
        proc, notify = self.proc, self._notify
        return proc is not None and notify is not None and bool(notify.sent(proc.pid, "READY"))

    def stop(self) -> int | None:
        """Ctrl-C (the service's clean stop) once it said it is ready, as systemd's stop
        job waits for a starting unit; SIGKILL if it hangs; its exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        proc = self.proc
        became_true(lambda: self.ready() or proc.poll() is not None, STOP_TIMEOUT_S)
        if proc.poll() is not None:
            return proc.returncode
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT_S)
            return None


def subscribed(broker_log: str, client_id: str) -> bool:
    """True once ``client_id`` subscribed to anything (mosquitto logs it with
    ``log_type subscribe``)."""
    return re.search(rf"^\d+: {re.escape(client_id)} \d ", broker_log, re.MULTILINE) is not None


def archive_leftovers(archive: Path) -> list[str]:
    """What a crash may leave among the archived documents and must not: ``.tmp``
    folders or files (a decrypted PDF in one is plaintext outside the archive's
    bookkeeping). Staging has its own check, ``staging_leftovers``."""
    docs = archive / "docs"
    try:
        return sorted(str(p.relative_to(archive)) for p in docs.rglob("*.tmp"))
    except FileNotFoundError:  # a folder renamed or removed while we looked
        return []


def staging_leftovers(archive: Path) -> list[str]:
    """Everything under ``archive/staging`` except empty per-device folders."""
    staging = archive / "staging"
    found = []
    for p in sorted(staging.rglob("*")):
        if p.is_dir() and p.parent == staging and not any(p.iterdir()):
            continue
        found.append(str(p.relative_to(staging)))
    return found


# -- devices publishing pre-sealed envelopes (the ingest benchmark) ---------------------


@dataclass(frozen=True)
class Doc:
    """One sealed document as its device publishes it: manifest, then segments."""

    device: str
    doc_id: str
    manifest: bytes
    segments: tuple[bytes, ...]

    def messages(self) -> list[tuple[str, bytes]]:
        first = [(manifest_topic(self.device, self.doc_id), self.manifest)]
        return first + [
            (segment_topic(self.device, self.doc_id, n), s) for n, s in enumerate(self.segments)
        ]


def sealed_docs(devices: list[Device], size: int, count: int, segment: int, tmp: Path) -> list[Doc]:
    """``count`` documents of ``size`` bytes sealed by ``devices`` in turn, in memory."""
    tmp.mkdir(parents=True, exist_ok=True)
    docs = []
    for i in range(count):
        device = devices[i % len(devices)]
        doc_id = f"b{size}-{i:05d}"
        path = tmp / f"{doc_id}.env"
        seal(device.cfg, doc_id, fake_pdf(size), path, segment_size=segment)
        manifest = manifest_bytes(read_header(path), read_prefix(path))
        docs.append(Doc(device.id, doc_id, manifest, tuple(iter_segments(path))))
        path.unlink()
    return docs


def publish_all(links: dict[str, Link], docs: list[Doc], timeout_s: float) -> float:
    """Every device (one link each) publishes its documents at once, acknowledged by the
    broker by the time this returns; the monotonic time publishing began."""

    def send(device: str) -> None:
        link = links[device]
        mine = [m for doc in docs if doc.device == device for m in doc.messages()]
        for p in [link.publish_nowait(topic, payload) for topic, payload in mine]:
            p.wait(timeout_s)

    threads = [threading.Thread(target=send, args=(d,)) for d in links]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
    return t0


# -- watching a run: receipts, counting subscribers, CPU (the ingest benchmark) --------

SINK_TOPIC = "bench/sink"  # counting subscribers publish how many messages they have had


class Watch:
    """Every ``stored`` receipt and every counting subscriber's tally seen on the
    broker, each with the (monotonic) time it arrived; ``progress`` is set on each."""

    def __init__(self, host: str, port: int) -> None:
        self.link = Link(LinkSettings(host, port, "bench-watch", clean_start=True))
        self.link.connect()
        self.link.subscribe(receipt_topic("+"))
        self.link.subscribe(f"{SINK_TOPIC}/+")
        self.progress = threading.Event()
        self.stored: dict[tuple[str, str], float] = {}
        self.rejected: dict[tuple[str, str], str] = {}
        self.sinks: dict[str, tuple[int, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.link.get(0.2)
            if msg is None:
                continue
            at = time.monotonic()
            if msg.topic.startswith(SINK_TOPIC):
                self.sinks[msg.topic] = (int(msg.payload), at)
            else:
                r = parse_receipt(msg.payload)
                if r.status == "stored":
                    self.stored.setdefault((r.device, r.doc), at)
                elif r.status == "rejected":
                    self.rejected[(r.device, r.doc)] = r.reason or ""
            self.progress.set()

    def reset(self) -> None:
        self.stored, self.rejected, self.sinks = {}, {}, {}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.link.close()


def count_messages(port: int, client_id: str, topic_filter: str) -> None:
    """A subscriber that only counts what it gets on ``topic_filter`` and publishes the
    tally after each burst (the broker's pass-through, without ingest); runs until killed."""
    # no session after it ends: an offline session would keep its share of the messages
    link = Link(LinkSettings("127.0.0.1", port, client_id, clean_start=True, session_expiry_s=0))
    link.connect()
    link.subscribe(topic_filter, qos=1)
    count, told = 0, 0
    while True:
        msg = link.get(0.5)
        while msg is not None:
            count += 1
            msg = link.get(0)
        if count != told:
            link.publish_nowait(f"{SINK_TOPIC}/{client_id}", str(count).encode(), qos=0)
            told = count


def forget_sessions(host: str, port: int, client_ids: list[str]) -> None:
    """End the persistent sessions of workers that are gone: mosquitto keeps an offline
    session in its shared subscription and hands it its share of new messages."""
    for cid in client_ids:
        with Link(LinkSettings(host, port, cid, clean_start=True, session_expiry_s=0)):
            pass


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def child_pids(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def machine_busy_seconds() -> float:
    """CPU time every core of this machine has spent busy since boot (``/proc/stat``)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


CpuSnapshot = dict[str, dict[int, float]]


def cpu_snapshot(groups: dict[str, list[int]]) -> CpuSnapshot:
    return {name: {pid: cpu_seconds(pid) for pid in pids} for name, pids in groups.items()}


def cpu_cores(before: CpuSnapshot, after: CpuSnapshot, seconds: float) -> dict[str, float]:
    """CPU each group used between two snapshots, in cores (1.0 = one core all along);
    a process that started in between counts from zero."""
    return {
        name: sum(t - before.get(name, {}).get(pid, 0.0) for pid, t in pids.items()) / seconds
        for name, pids in after.items()
    }


def calls_per_s(
    indexes: list[DocumentIndex], call: Callable[[DocumentIndex, int], object], rows: int
) -> float:
    """``call(index, i)`` for every ``i < rows``, split over one thread per index."""

    def work(k: int) -> None:
        for i in range(k, rows, len(indexes)):
            call(indexes[k], i)

    t0 = time.monotonic()
    with ThreadPoolExecutor(len(indexes)) as pool:
        list(pool.map(work, range(len(indexes))))
    return rows / (time.monotonic() - t0)
