"""``sohoa broker config``: a complete mosquitto configuration for the province.

TLS only, every client with a certificate from the provincial CA, the
certificate's CN as username, no anonymous access, the CRL checked, and an ACL
in which a device may publish only under ``sohoa/v1/d/<its id>/`` and read only
its own receipts and commands. Warehouse identities read documents and write
receipts and commands; fleet identities read state and health and write
nothing. ``mosquitto -c DIR/mosquitto.conf`` runs it as it is; with
``system=True`` it is a fragment for Debian's ``/etc/mosquitto/conf.d/``
(whose main file already sets the user, persistence and logging).

A second listener (``enroll_port``, by default the TLS port + 1) serves
enrolment: TLS with the broker's certificate but no client certificate, and
only the identities of ``sync.enrol_access`` (password file and ACL of their
own), each limited to its device's enrolment topics. Client ids there are the
usernames, so an enrolling device can never take over a device's session.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sync.durable import atomic_write
from sync.enrol_access import BrokerFiles, refresh
from sync.pki import CaPaths, identities, issue, load_ca
from sync.protocol import ENROL_FILTER, ROOT

BROKER_NAME = "broker"

DEVICE_RULES = (
    "# devices: each only under its own id (%u = certificate CN = device id)",
    f"pattern write {ROOT}/d/%u/state",
    f"pattern write {ROOT}/d/%u/health",
    f"pattern write {ROOT}/d/%u/doc/#",
    f"pattern read {ROOT}/d/%u/rcpt",
    f"pattern read {ROOT}/d/%u/cmd",
    # release delivery (sync.release.wire): its own offer, requests, segments and reports
    f"pattern read {ROOT}/d/%u/cmd/rel",
    f"pattern write {ROOT}/d/%u/rel/q",
    f"pattern read {ROOT}/d/%u/rel/s/#",
    f"pattern write {ROOT}/d/%u/rel/r",
)
WAREHOUSE_RULES = (
    f"topic read {ROOT}/d/+/doc/#",
    f"topic write {ROOT}/d/+/rcpt",
    f"topic write {ROOT}/d/+/cmd",
    f"topic write {ROOT}/d/+/cmd/rel",
    f"topic read {ROOT}/d/+/rel/q",
    f"topic write {ROOT}/d/+/rel/s/#",
    f"topic read {ROOT}/d/+/rel/r",
    f"topic read {ENROL_FILTER}",
    f"topic write {ROOT}/enroll/+/resp",
)
FLEET_RULES = (
    f"topic read {ROOT}/d/+/state",
    f"topic read {ROOT}/d/+/health",
    f"topic read {ROOT}/d/+/rel/r",  # each device's release report: version, rollout progress
    f"topic readwrite {ROOT}/fleet/alerts",  # its one output: the firing alerts, retained
)


def acl_text(warehouses: list[str], fleets: list[str]) -> str:
    """The ACL file: device patterns, then one block per provincial service identity.

    A service identity may not also act as a device: its own ``%u`` topics are
    denied, so a fleet service cannot invent a device."""
    lines = ["# written by `sohoa broker config`; regenerate after issuing a service identity"]
    for role, names, rules in (
        ("warehouse", warehouses, WAREHOUSE_RULES),
        ("fleet", fleets, FLEET_RULES),
    ):
        for name in names:
            lines += ["", f"# {role}", f"user {name}", *rules, f"topic deny {ROOT}/d/{name}/#"]
    lines += ["", *DEVICE_RULES]
    return "\n".join(lines) + "\n"


def _main_listener(out: Path, port: int, bind: str) -> list[str]:
    return [
        f"listener {port}{bind}",
        "protocol mqtt",
        "allow_anonymous false",
        f"acl_file {out / 'acl'}",
        f"cafile {out / 'ca.crt'}",
        f"certfile {out / 'server.crt'}",
        f"keyfile {out / 'server.key'}",
        f"crlfile {out / 'ca.crl'}",
        "require_certificate true",
        "use_identity_as_username true",
        "tls_version tlsv1.2",
    ]


def _enrol_listener(out: Path, port: int, bind: str) -> list[str]:
    return [
        "# enrolment: one-time claim and renewal identities only (sohoa.enrol_access)",
        f"listener {port}{bind}",
        "protocol mqtt",
        "allow_anonymous false",
        f"password_file {out / 'enrol.passwd'}",
        f"acl_file {out / 'enrol.acl'}",
        f"certfile {out / 'server.crt'}",
        f"keyfile {out / 'server.key'}",
        "require_certificate false",
        "use_username_as_clientid true",
        "tls_version tlsv1.2",
    ]


def _housekeeping(out: Path, run_as: str) -> list[str]:
    return [
        f"user {run_as}",
        "persistence true",
        f"persistence_location {out / 'data'}/",
        f"log_dest file {out / 'mosquitto.log'}",
        "log_type error",
        "log_type warning",
        "log_type notice",
    ]


def mosquitto_conf(
    out: Path, port: int, listen: str, run_as: str, *, enroll_port: int = 0, system: bool = False
) -> str:
    bind = f" {listen}" if listen else ""
    lines = [
        "# written by `sohoa broker config`: TLS only, one certificate per client",
        "per_listener_settings true",
        *([] if system else _housekeeping(out, run_as)),
        "max_inflight_messages 0",
        "max_queued_messages 100000",
        "max_queued_bytes 0",
        # segments are at most 4 MiB; a manifest far less
        "max_packet_size 8400000",
        *_main_listener(out, port, bind),
        *(_enrol_listener(out, enroll_port, bind) if enroll_port else []),
    ]
    return "\n".join(lines) + "\n"


def write_broker_config(
    keys_dir: Path,
    out: Path,
    *,
    port: int,
    host: str,
    listen: str = "",
    run_as: str = "mosquitto",
    enroll_port: int | None = None,
    system: bool = False,
) -> Path:
    """Write the configuration into ``out``; the path of ``mosquitto.conf``.

    ``enroll_port`` None means ``port + 1``; 0 leaves the enrolment listener out.
    With ``system`` the files mosquitto reads are group-readable (the folder's
    group, mosquitto's, through its setgid bit) instead of owner-only."""
    out = out.resolve()
    load_ca(keys_dir)  # a missing CA is named before anything is written
    out.mkdir(parents=True, exist_ok=True)
    (out / "data").mkdir(exist_ok=True)
    mode = 0o640 if system else 0o600
    paths = CaPaths.under(keys_dir)
    shutil.copyfile(paths.cert, out / "ca.crt")
    shutil.copyfile(paths.crl, out / "ca.crl")
    hosts = tuple(dict.fromkeys((host, listen) if listen else (host,)))
    cert, key = issue(keys_dir, BROKER_NAME, "broker", out, hosts=hosts)
    cert.replace(out / "server.crt")
    key.chmod(mode)
    key.replace(out / "server.key")
    acl = acl_text(identities(keys_dir, "warehouse"), identities(keys_dir, "fleet"))
    atomic_write(out / "acl", acl.encode(), mode=0o644, what="the broker ACL")
    BrokerFiles(out, mode).record(keys_dir)
    refresh(keys_dir)
    enrol = port + 1 if enroll_port is None else enroll_port
    text = mosquitto_conf(out, port, listen, run_as, enroll_port=enrol, system=system)
    conf = out / "mosquitto.conf"
    atomic_write(conf, text.encode(), what="mosquitto.conf")
    return conf
