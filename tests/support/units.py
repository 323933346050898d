"""A unit's ExecStart run the way systemd would run it, without systemd.

``parse_unit`` reads a unit file; ``exec_spec`` takes from its [Service] section
what the process gets (command, user and groups, environment, umask,
capabilities, the mount options); ``launch_command`` turns that into an
``unshare``/``setpriv`` command line; ``NotifySocket`` is the service manager's
end of sd_notify. ``APPLIED`` and ``NEEDS_SYSTEMD`` name every option the
units use, so that a new one forces a decision here.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import struct
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.support.wait import became_true

SERVICE = "Service"
READY_S = 20.0  # imports and keys; systemd's own start timeout is 90 s
STOP_S = 10.0
# systemd's PATH for system services (merged /usr)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"
INSTALLED_SOHOA = "/opt/sohoa/venv/bin/sohoa"
# a device's units run the A/B launcher (tests/test_release_*.py run it): here it
# stands for the checkout's sohoa as well
INSTALLED_LAUNCHER = "/opt/sohoa/bin/sohoa-launch"
INSTALLED_HOME = "/var/lib/sohoa"
# exits systemd counts as clean for a service that is not Type=oneshot
CLEAN_SIGNALS = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE})


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


# what launch_command applies: Type=notify and NotifyAccess=main by waiting for READY=1
# from the main PID, WatchdogSec by expecting WATCHDOG=1; NAMESPACED in a private mount
# namespace (unshare), where the host allows one
APPLIED = _names(
    "Type NotifyAccess ExecStart User Group SupplementaryGroups Environment WorkingDirectory"
    " UMask NoNewPrivileges CapabilityBoundingSet AmbientCapabilities WatchdogSec"
    " SuccessExitStatus"
)
NAMESPACED = _names(
    "ProtectSystem ReadWritePaths ProtectHome PrivateTmp PrivateMounts ProtectProc ProcSubset"
)
# what only systemd applies, by what it takes
NEEDS_SYSTEMD = {
    "a seccomp filter": _names(
        "SystemCallFilter SystemCallErrorNumber SystemCallArchitectures MemoryDenyWriteExecute"
        " LockPersonality RestrictRealtime RestrictNamespaces RestrictSUIDSGID"
        " RestrictAddressFamilies ProtectClock"
    ),
    "the cgroup device controller": _names("DevicePolicy DeviceAllow"),
    "a private /dev with the pseudo devices only": _names("PrivateDevices"),
    "read-only kernel interfaces, a UTS namespace (moot without capabilities)": _names(
        "ProtectKernelTunables ProtectKernelModules ProtectKernelLogs ProtectControlGroups"
        " ProtectHostname"
    ),
    "the manager itself (restart policy, clean-up, the privileged '+' start step)": _names(
        "Restart RestartSec RemoveIPC ExecStartPre"
    ),
}


@dataclass(frozen=True)
class UnitFile:
    """A unit file's sections, each a list of (key, value) with repeated keys in order."""

    name: str
    sections: Mapping[str, tuple[tuple[str, str], ...]]

    def keys(self, section: str = SERVICE) -> list[str]:
        return list(dict.fromkeys(k for k, _ in self.sections.get(section, ())))

    def values(self, key: str, section: str = SERVICE) -> list[str]:
        return [v for k, v in self.sections.get(section, ()) if k == key]

    def value(self, key: str, default: str = "") -> str:
        """A single-valued setting: the last assignment wins."""
        found = self.values(key)
        return found[-1] if found else default

    def words(self, key: str) -> list[str]:
        """A list setting: assignments add up, an empty one resets it."""
        out: list[str] = []
        for v in self.values(key):
            out = out + shlex.split(v) if v else []
        return out


def _logical_lines(text: str) -> list[str]:
    """Lines with comments dropped and backslash continuations joined."""
    lines: list[str] = []
    held = ""
    for raw in text.splitlines():
        s = raw.strip()
        if not s or s[0] in "#;":
            continue  # also inside a continued value, as systemd does
        if s.endswith("\\"):
            held += s[:-1].rstrip() + " "
            continue
        lines.append(held + s)
        held = ""
    return [*lines, held.strip()] if held else lines


def parse_unit(text: str, name: str = "") -> UnitFile:
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for line in _logical_lines(text):
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, eq, value = line.partition("=")
        if current is None or not eq:
            raise ValueError(f"{name}: not in a section or not key=value: {line!r}")
        current.append((key.strip(), value.strip()))
    return UnitFile(name, {k: tuple(v) for k, v in sections.items()})


def bounding_set(values: list[str]) -> str | None:
    """CapabilityBoundingSet= as setpriv's --bounding-set; None when the unit leaves it.
    Lines add up and an empty one empties the set; ``~`` (all but) lines are not mapped."""
    if not values:
        return None
    caps: set[str] = set()
    for v in values:
        assert not v.startswith("~"), f"CapabilityBoundingSet={v}: map it here first"
        caps = caps | {n.lower().removeprefix("cap_") for n in v.split()} if v else set()
    return ",".join(["-all", *(f"+{c}" for c in sorted(caps))])


@dataclass(frozen=True)
class Mounts:
    protect_system: str
    protect_home: str
    private_tmp: bool
    read_write: tuple[Path, ...]
    protect_proc: str
    proc_subset: str


@dataclass(frozen=True)
class ExecSpec:
    """What the process of one unit gets, with the installed paths rewritten."""

    unit: str
    argv: tuple[str, ...]
    user: str
    group: str
    supplementary: tuple[str, ...]
    environment: Mapping[str, str]
    umask: int
    no_new_privs: bool
    bounding_set: str | None
    working_directory: str
    watchdog_s: float | None
    success: frozenset[int]  # exit codes; signals as negative numbers, as Popen reports them
    mounts: Mounts

    def clean_exit(self, returncode: int) -> bool:
        return returncode in self.success


def _yes(value: str) -> bool:
    return value.lower() in ("yes", "true", "1", "on")


def _success(unit: UnitFile) -> frozenset[int]:
    codes = {0, *(-int(s) for s in CLEAN_SIGNALS)}
    for word in unit.words("SuccessExitStatus"):
        codes.add(int(word) if word.isdigit() else -int(signal.Signals[word]))
    return frozenset(codes)


def exec_spec(unit: UnitFile, *, sohoa: Path, config: Path, home: Path) -> ExecSpec:
    """The unit's process, with ExecStart's installed venv or launcher → ``sohoa``, SOHOA_CONFIG →
    ``config`` and the installed home in ReadWritePaths → ``home``."""
    argv = shlex.split(unit.value("ExecStart"))
    assert argv[0] in (INSTALLED_SOHOA, INSTALLED_LAUNCHER), f"{unit.name}: ExecStart {argv[0]}"
    env = dict(w.partition("=")[::2] for w in unit.words("Environment"))
    assert "SOHOA_CONFIG" in env, f"{unit.name}: no Environment=SOHOA_CONFIG"
    env["SOHOA_CONFIG"] = str(config)
    watchdog = unit.value("WatchdogSec")
    return ExecSpec(
        unit=unit.name,
        argv=(str(sohoa), *argv[1:]),
        user=unit.value("User", "root"),
        group=unit.value("Group", unit.value("User", "root")),
        supplementary=tuple(unit.words("SupplementaryGroups")),
        environment=env,
        umask=int(unit.value("UMask", "0022"), 8),
        no_new_privs=_yes(unit.value("NoNewPrivileges", "no")),
        bounding_set=bounding_set(unit.values("CapabilityBoundingSet")),
        working_directory=unit.value("WorkingDirectory", "/"),
        watchdog_s=float(watchdog) if watchdog else None,
        success=_success(unit),
        mounts=Mounts(
            protect_system=unit.value("ProtectSystem", "no"),
            protect_home=unit.value("ProtectHome", "no"),
            private_tmp=_yes(unit.value("PrivateTmp", "no")),
            read_write=tuple(
                home if p.lstrip("-") == INSTALLED_HOME else Path(p.lstrip("-"))
                for p in unit.words("ReadWritePaths")
            ),
            protect_proc=unit.value("ProtectProc", "default"),
            proc_subset=unit.value("ProcSubset", "all"),
        ),
    )


@dataclass(frozen=True)
class Identity:
    """Who the process runs as; ``note`` says how that differs from the unit, if it does."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    note: str = ""


def setpriv_args(spec: ExecSpec, who: Identity) -> list[str]:
    groups = ["--groups", ",".join(map(str, who.groups))] if who.groups else ["--clear-groups"]
    return [
        "setpriv",
        f"--reuid={who.uid}",
        f"--regid={who.gid}",
        *groups,
        *(["--no-new-privs"] if spec.no_new_privs else []),
        *([f"--bounding-set={spec.bounding_set}"] if spec.bounding_set else []),
        "--inh-caps=-all",  # systemd starts services with no inheritable or ambient caps
        "--ambient-caps=-all",
    ]


def mount_script(m: Mounts, visible: tuple[Path, ...]) -> list[str]:
    """Shell lines that apply ``m`` in a private mount namespace. ``visible`` paths (the
    interpreter, the checkout, the test's config and socket) stay visible, read-only."""
    assert m.protect_system in ("no", "strict") and m.protect_home in ("no", "yes"), m
    # a path this host lacks is one the unit marks optional ("-/etc/sohoa/broker"): skipped
    writable = tuple(p for p in m.read_write if p.exists())
    keep = sorted({*visible, *writable}, key=lambda p: len(p.parts))
    assert len(keep) <= 7, "sh has file descriptors 3-9 only"
    q = shlex.quote
    lines = ["mount --make-rprivate /"]
    lines += [f"exec {fd}<{q(str(p))}" for fd, p in enumerate(keep, 3)]
    # emptied: ProtectHome=yes (mode 0755 rather than 0000, so that kept paths show) and
    # PrivateTmp=yes
    hidden = ["/home", "/root", "/run/user"] if m.protect_home == "yes" else []
    for d in hidden + (["/tmp", "/var/tmp"] if m.private_tmp else []):
        mode = "1777" if d.endswith("tmp") else "0755"
        lines.append(f"if [ -d {d} ]; then mount -t tmpfs -o mode={mode} tmpfs {d}; fi")
    for fd, p in enumerate(keep, 3):  # --no-canonicalize: bind what the fd holds, not its name
        bind = f"mount --no-canonicalize --bind /proc/self/fd/{fd} {q(str(p))}"
        lines.append(f"mkdir -p {q(str(p))}; {bind}; exec {fd}<&-")
    if m.protect_system == "strict":
        skip = "/proc|/proc/*|/sys|/sys/*|/dev|/dev/*" + ("|/tmp|/var/tmp" if m.private_tmp else "")
        lines += [
            "awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r mp; do",
            f'  case "$mp" in {skip}) continue ;; esac',
            '  mount -o remount,bind,ro "$mp" || echo "cannot make $mp read-only" >&2',
            "done",
        ]
    lines += [f"mount -o remount,bind,rw {q(str(p))}" for p in writable]
    if m.protect_proc != "default" or m.proc_subset == "pid":
        opts = f"hidepid={m.protect_proc if m.protect_proc != 'default' else 'off'}"
        opts += ",subset=pid" if m.proc_subset == "pid" else ""
        lines.append(f"mount -t proc -o {opts} proc /proc")
    return lines


def launch_command(
    spec: ExecSpec, who: Identity, *, namespace: bool, visible: tuple[Path, ...]
) -> list[str]:
    """``[unshare --mount] sh -c 'mounts; cd; umask; exec "$@"' setpriv … -- ExecStart``:
    one process from start to end, so its PID is the main PID."""
    lines = mount_script(spec.mounts, visible) if namespace else []
    lines += [f"cd {shlex.quote(spec.working_directory)}", f"umask {spec.umask:04o}", 'exec "$@"']
    unshare = ["unshare", "--mount", "--propagation=private"] if namespace else []
    script = "set -eu\n" + "\n".join(lines) + "\n"
    return [*unshare, "sh", "-c", script, "sh", *setpriv_args(spec, who), "--", *spec.argv]


def environment(spec: ExecSpec, notify_socket: Path) -> dict[str, str]:
    """Only what systemd would pass that the services can use: Environment=, PATH and
    NOTIFY_SOCKET (not HOME, USER, INVOCATION_ID, WATCHDOG_USEC, which sohoa ignores)."""
    return {"PATH": DEFAULT_PATH, **spec.environment, "NOTIFY_SOCKET": str(notify_socket)}


@dataclass(frozen=True)
class Notification:
    pid: int  # of the sender, from its SCM_CREDENTIALS
    fields: Mapping[str, str]


class NotifySocket:
    """The manager's end of sd_notify: a datagram socket recording each message's sender.
    Messages are read when asked for (the kernel queues hundreds meanwhile)."""

    def __init__(self, path: Path, owner: int) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        os.chown(path, owner, -1)
        path.chmod(0o600)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._sock.setblocking(False)
        self._messages: list[Notification] = []

    def messages(self) -> list[Notification]:
        size = struct.calcsize("iII")
        while True:
            try:
                data, ancillary, _, _ = self._sock.recvmsg(4096, socket.CMSG_SPACE(size))
            except BlockingIOError:
                return list(self._messages)
            creds = [c for _, kind, c in ancillary if kind == socket.SCM_CREDENTIALS]
            pid = struct.unpack("iII", creds[0][:size])[0] if creds else -1
            lines = data.decode(errors="replace").splitlines()
            self._messages.append(Notification(pid, dict(x.partition("=")[::2] for x in lines)))

    def sent(self, pid: int, key: str) -> list[str]:
        """Values of ``key`` the process ``pid`` sent (NotifyAccess=main ignores others)."""
        return [m.fields[key] for m in self.messages() if m.pid == pid and key in m.fields]

    def close(self) -> None:
        self._sock.close()


@dataclass
class Service:
    """A unit's main process, the notify socket it reports to and its journal (a file)."""

    spec: ExecSpec
    who: Identity
    proc: subprocess.Popen[bytes]
    notify: NotifySocket
    journal: Path
    home: Path
    before: set[Path]

    def wait_for(self, key: str, timeout_s: float, count: int = 1) -> None:
        """Until the main process has sent ``key`` ``count`` times; fail after ``timeout_s``."""

        def sent() -> bool:
            if self.proc.poll() is not None:
                return True
            return len(self.notify.sent(self.proc.pid, key)) >= count

        if not became_true(sent, timeout_s) or self.proc.poll() is not None:
            raise AssertionError(
                f"{self.spec.unit}: no {count} x {key}= within {timeout_s} s (exit"
                f" {self.proc.poll()}); it sent {[m.fields for m in self.notify.messages()]};"
                f" journal:\n{self.journal.read_text(errors='replace')[-3000:]}"
            )

    def stop(self) -> int:
        """SIGTERM, as systemctl stop sends; the exit status once it has ended."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.spec.unit} ignored SIGTERM for {STOP_S} s") from None

    def wait_ready(self) -> None:
        """READY=1, and a first WATCHDOG=1 when the unit has a watchdog."""
        self.wait_for("READY", READY_S)
        if self.spec.watchdog_s is not None:
            self.wait_for("WATCHDOG", READY_S)

    def ended(self, code: int) -> tuple[bool, bool, list[str]]:
        """(a clean exit for systemd, it made files in its home, those of them another user
        owns or could read)."""
        made = [(p, p.lstat()) for p in sorted(set(self.home.rglob("*")) - self.before)]
        loose = [
            f"{p.relative_to(self.home)} mode {st.st_mode & 0o7777:04o} uid {st.st_uid}"
            for p, st in made
            if st.st_uid != self.who.uid or st.st_mode & 0o077
        ]
        return self.spec.clean_exit(code), bool(made), loose


def chown_tree(top: Path, who: Identity) -> None:
    for p in [top, *top.rglob("*")]:
        os.chown(p, who.uid, who.gid, follow_symlinks=False)
    top.chmod(0o700)  # install.sh: install -d -m 0700 -o sohoa -g sohoa /var/lib/sohoa
