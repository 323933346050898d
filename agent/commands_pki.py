"""``sohoa pki`` and ``sohoa broker config``: the province's certificate authority and
the mosquitto configuration built on it. The CA lives in ``keys/`` under the home."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import pwd
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config import Config
from sync import enrol_access, pki
from sync.broker_config import write_broker_config
from sync.errors import ExitCode, InputFileError

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _keys(cfg: Config) -> Path:
    return cfg.home / "keys"


def cmd_pki(args: argparse.Namespace, cfg: Config) -> int:
    keys = _keys(cfg)
    if args.pki_cmd == "init":
        cert = pki.init_ca(keys, force=args.force)
        print(f"CA created: {keys / 'ca.crt'} (valid until {cert.not_valid_after_utc:%Y-%m-%d})")
    elif args.pki_cmd == "issue":
        crt, key = pki.issue(keys, args.name, args.role, Path(args.out), days=args.days)
        print(f"{args.role} certificate for {args.name}: {crt} (key {key}, mode 0600)")
    elif args.pki_cmd == "revoke":
        n = pki.revoke(keys, args.name)
        enrol_access.refresh(keys)  # a revoked device can no longer renew
        print(
            f"{n} certificate(s) of {args.name} revoked; CRL {keys / 'ca.crl'} updated —"
            " run `sohoa broker config` again and reload mosquitto"
        )
    else:
        issued = pki.load_register(keys)
        if args.json:
            print(json.dumps({"issued": [i.__dict__ for i in issued]}, indent=2))
        for i in [] if args.json else issued:
            state = f"revoked {i.revoked_at}" if i.revoked_at else f"until {i.not_after[:10]}"
            print(f"{i.name:<24} {i.role:<10} {state}")
    return ExitCode.ok


def cmd_broker(args: argparse.Namespace, cfg: Config) -> int:
    conf = write_broker_config(
        _keys(cfg),
        Path(args.out),
        port=args.port,
        host=args.host,
        listen=args.listen,
        run_as=args.run_as,
        enroll_port=args.enroll_port,
        system=args.system,
    )
    print(f"mosquitto configuration written: mosquitto -c {conf}")
    enrol = args.port + 1 if args.enroll_port is None else args.enroll_port
    if enrol:
        print(f"enrolment listener on port {enrol}: devices enrol with `sohoa enroll request`")
    return ExitCode.ok


def add_pki(sub: Subparsers) -> None:
    s = sub.add_parser("pki", help="province: certificate authority for broker identities")
    psub = s.add_subparsers(dest="pki_cmd", required=True, metavar="PKI_COMMAND")
    p = psub.add_parser("init", help="create the CA: keys/ca.key (0600), keys/ca.crt")
    p.add_argument("--force", action="store_true", help="replace an existing CA")
    p = psub.add_parser("issue", help="issue a client certificate NAME.crt + NAME.key")
    p.add_argument("name", help="the identity (device id for a device)")
    p.add_argument("--role", required=True, choices=pki.CLIENT_ROLES, help="its broker role")
    p.add_argument("--out", required=True, help="folder for NAME.crt and NAME.key")
    p.add_argument("--days", type=int, help="lifetime (default: device 365, services 730)")
    p = psub.add_parser("revoke", help="revoke NAME's certificates and re-sign the CRL")
    p.add_argument("name", help="the identity to revoke")
    p = psub.add_parser("ls", help="list issued certificates")
    p.add_argument("--json", action="store_true", help="print as JSON")
    s.set_defaults(func=cmd_pki)


def cmd_enroll(args: argparse.Namespace, cfg: Config) -> int:
    from agent import provision
    from sync import claims

    if args.enroll_cmd == "allow":
        code = claims.allow(_keys(cfg), args.id, days=args.days)
        enrol_access.refresh(_keys(cfg))
        print(f"one-time code for {args.id}: {code} (valid {args.days} days, once)")
    elif args.enroll_cmd == "request" and args.out is None:
        from agent import enrol_online

        url = enrol_online.enroll(cfg, args.code, args.timeout)
        print(
            f"enrolled as {cfg.device.id} over the broker; certificate and warehouse key installed"
        )
        _url_hint(cfg, url)
    elif args.enroll_cmd == "request":
        Path(args.out).write_bytes(provision.request(cfg, args.code))
        print(
            f"enrolment request for {cfg.device.id} written to {args.out}: take it to the province"
        )
    elif args.enroll_cmd == "renew":
        from agent import enrol_online

        enrol_online.renew(cfg, dt.datetime.now(dt.UTC), args.timeout)
        print(f"broker certificate of {cfg.device.id} renewed; restart sohoa-sync to use it now")
    elif args.enroll_cmd == "approve":
        bundle = provision.approve(cfg, _read(args.request), args.broker)
        Path(args.out).write_bytes(bundle)
        print(f"device enrolled; bundle written to {args.out}: take it back to the device")
    else:
        url = provision.accept(cfg, _read(args.bundle))
        print(f"enrolled as {cfg.device.id}; broker certificate and warehouse key installed")
        _url_hint(cfg, url)
    return ExitCode.ok


def _url_hint(cfg: Config, url: str) -> None:
    if url and url != cfg.broker.url:
        print(f'set [broker] url = "{url}" in the configuration, then restart sohoa-sync')


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputFileError(
            f"cannot read {path} ({exc.strerror})", "check the path on the USB stick"
        ) from None


def add_enroll(sub: Subparsers) -> None:
    s = sub.add_parser("enroll", help="enrol a device: one-time code, request, approval, bundle")
    esub = s.add_subparsers(dest="enroll_cmd", required=True, metavar="ENROLL_COMMAND")
    e = esub.add_parser("allow", help="province: let device ID enrol once; prints its code")
    e.add_argument("id", help="the device id")
    e.add_argument("--days", type=int, default=7, help="how long the code is valid (default 7)")
    e = esub.add_parser(
        "request", help="device: make keys and enrol over the broker (or write a request file)"
    )
    e.add_argument("--code", required=True, help="the one-time code from the province")
    e.add_argument("--out", help="offline: the request file to take to the province")
    e.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (online)")
    e = esub.add_parser("renew", help="device: renew the broker certificate now (online)")
    e.add_argument("--timeout", type=float, default=60.0, help="seconds to wait")
    e = esub.add_parser("approve", help="province: check a request, enrol it, write the bundle")
    e.add_argument("request", help="the device's request file")
    e.add_argument("--out", required=True, help="the bundle file to take back to the device")
    e.add_argument("--broker", required=True, help="the broker URL devices use (mqtts://…)")
    e = esub.add_parser("accept", help="device: check and install the province's bundle")
    e.add_argument("bundle", help="the bundle file from the province")
    s.set_defaults(func=cmd_enroll)


def _default_user() -> str:
    try:
        return pwd.getpwnam("mosquitto").pw_name
    except KeyError:
        return pwd.getpwuid(0).pw_name


def add_broker(sub: Subparsers) -> None:
    s = sub.add_parser("broker", help="province: mosquitto configuration (TLS, ACL, CRL)")
    bsub = s.add_subparsers(dest="broker_cmd", required=True, metavar="BROKER_COMMAND")
    b = bsub.add_parser("config", help="write mosquitto.conf, certificates, CRL and ACL into DIR")
    b.add_argument("--out", required=True, help="the folder (mosquitto -c DIR/mosquitto.conf)")
    b.add_argument("--port", type=int, default=8883, help="TLS port (default 8883)")
    b.add_argument("--host", default="localhost", help="the name devices connect to")
    b.add_argument("--listen", default="", help="address to bind (default: all)")
    b.add_argument("--run-as", default=_default_user(), help="user mosquitto runs as")
    b.add_argument(
        "--enroll-port", type=int, help="enrolment listener port (default: port + 1; 0 = none)"
    )
    b.add_argument(
        "--system",
        action="store_true",
        help="a fragment for /etc/mosquitto/conf.d (Debian's main file sets user, logs)",
    )
    s.set_defaults(func=cmd_broker)
