"""``sohoa ui passwd|rm|ls``: the officer accounts of the counter page (and the fleet page)."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING

from agent.config import Config
from agent.web import accounts
from sync.errors import ConfigError, ExitCode

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _password() -> str:
    """From the terminal (asked twice), or one line of stdin when it is not a terminal:
    never from the command line, where /proc/<pid>/cmdline would show it."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Mật khẩu / password: ")
    if getpass.getpass("Nhập lại / again: ") != first:
        raise ConfigError("the two passwords differ", "run the command again")
    return first


def cmd_ui(args: argparse.Namespace, cfg: Config) -> int:
    if args.ui_cmd == "passwd":
        accounts.set_password(cfg.home, args.name, _password())
        print(f"password set for {args.name} ({accounts.accounts_path(cfg.home)})")
    elif args.ui_cmd == "rm":
        if not accounts.remove_account(cfg.home, args.name):
            raise ConfigError(f"there is no account {args.name!r}", "list them with sohoa ui ls")
        print(f"account {args.name} removed")
    else:
        for name in sorted(accounts.load_accounts(cfg.home)):
            print(name)
    return ExitCode.ok


def add_ui(sub: Subparsers) -> None:
    s = sub.add_parser("ui", help="officer accounts for the counter page")
    usub = s.add_subparsers(dest="ui_cmd", required=True, metavar="UI_COMMAND")
    p = usub.add_parser("passwd", help="set NAME's password (stdin when not a terminal)")
    p.add_argument("name", help="account name (lowercase letters, digits, . _ -)")
    p = usub.add_parser("rm", help="remove NAME's account")
    p.add_argument("name")
    usub.add_parser("ls", help="list the accounts")
    s.set_defaults(func=cmd_ui)
