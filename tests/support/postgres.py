"""The real PostgreSQL for tests: a private cluster on a free loopback port.

``start_postgres`` runs Debian's ``initdb`` into a fresh directory under /tmp (password
authentication, user ``sohoa``, no Unix socket) and starts the server with
``pg_ctl``; ``Postgres.stop`` stops it and removes its files. PostgreSQL refuses to
run as root, so under root the cluster belongs to the ``postgres`` system user that
Debian's package creates (``runuser``); otherwise to the user running the tests.

Fixtures: ``postgres_server`` and ``postgres_dsn`` (session: the cluster, and the DSN
of its maintenance database) and ``postgres_db`` (per test: the DSN of a fresh, empty
database, so that tests never see each other's rows).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sync.localbroker import free_port
from tests.support.wait import became_true

HOST = "127.0.0.1"
USER = "sohoa"
START_TIMEOUT_S = 60
SYSTEM_USER = "postgres"  # PostgreSQL will not run as root
SETTINGS = f"""
listen_addresses = '{HOST}'
unix_socket_directories = ''
max_connections = 200
# a throwaway cluster: durability buys nothing here
fsync = off
synchronous_commit = off
full_page_writes = off
"""


def postgres_bindir() -> Path:
    """Debian's PostgreSQL programs (newest major version); fails the test clearly without."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parts[-3])
    which = shutil.which("initdb")
    if found:
        return found[-1].parent
    if which:
        return Path(which).parent
    pytest.fail("PostgreSQL is not installed; run ./install.sh --dev", pytrace=False)


def _as_owner() -> list[str]:
    """The command prefix that runs a PostgreSQL program as the cluster's owner."""
    return ["runuser", "-u", SYSTEM_USER, "--"] if os.geteuid() == 0 else []


def connectable(dsn: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


@dataclass
class Postgres:
    bindir: Path
    base: Path
    port: int
    password: str

    @property
    def data(self) -> Path:
        return self.base / "data"

    def dsn(self, database: str = "postgres", password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql://{USER}:{secret}@{HOST}:{self.port}/{database}"

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [*_as_owner(), str(self.bindir / "pg_ctl"), "-D", str(self.data), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=START_TIMEOUT_S + 30)

    def start(self) -> bool:
        """Start on ``port``; True once it accepts connections."""
        proc = self.pg_ctl(
            "-l",
            str(self.base / "server.log"),
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "-o",
            f"-p {self.port}",
            "start",
        )
        return proc.returncode == 0 and became_true(
            lambda: connectable(self.dsn()), START_TIMEOUT_S, poll_s=0.1
        )

    def stop(self) -> None:
        self.pg_ctl("-m", "fast", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)

    def log_text(self) -> str:
        log = self.base / "server.log"
        return log.read_text(errors="replace")[-3000:] if log.exists() else ""

    def execute(self, statement: str) -> None:
        """One statement on the maintenance database (e.g. CREATE DATABASE)."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(statement)


def _initdb(bindir: Path, base: Path, password: str) -> None:
    pwfile = base / "password"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        owner = pwd.getpwnam(SYSTEM_USER)
        for path in (base, pwfile):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    cmd = [
        *_as_owner(),
        str(bindir / "initdb"),
        "-D",
        str(base / "data"),
        "--username",
        USER,
        "--pwfile",
        str(pwfile),
        "--auth",
        "scram-sha-256",
        "--encoding",
        "UTF8",
        "--no-locale",
        "--no-sync",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    pwfile.unlink()
    if proc.returncode != 0:
        pytest.fail(f"initdb failed: {proc.stderr.strip()}", pytrace=False)
    with (base / "data" / "postgresql.conf").open("a") as conf:
        conf.write(SETTINGS)


def start_postgres() -> Postgres:
    """A private cluster, initialised and accepting connections on a free port."""
    bindir = postgres_bindir()
    base = Path(tempfile.mkdtemp(prefix="sohoa-pg-"))  # under /tmp: the owner can reach it
    password = secrets.token_hex(12)
    _initdb(bindir, base, password)
    for _attempt in range(3):  # a free port can be taken before the server binds it
        server = Postgres(bindir, base, free_port(), password)
        if server.start():
            return server
        server.pg_ctl("-m", "immediate", "-w", "stop")
    log = server.log_text()
    shutil.rmtree(base, ignore_errors=True)
    pytest.fail(f"PostgreSQL did not start: {log}", pytrace=False)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    """The private cluster for the whole run; stopped and removed at the end."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: Postgres) -> str:
    """The private cluster, as the DSN of its maintenance database."""
    return postgres_server.dsn()


@pytest.fixture
def postgres_db(postgres_server: Postgres) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards; its DSN."""
    name = f"t_{secrets.token_hex(6)}"
    postgres_server.execute(f"CREATE DATABASE {name}")
    try:
        yield postgres_server.dsn(name)
    finally:
        postgres_server.execute(f"DROP DATABASE {name} WITH (FORCE)")
