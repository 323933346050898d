"""A test site: a device and a warehouse with real keys, config files and one broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from agent.config import Config, DeviceConfig, SyncConfig
from agent.demo import provision_pair
from sync.mqtt.settings import BrokerConfig
from tests.support.mqtt import Broker

REPO = Path(__file__).resolve().parents[2]
SOHOA = [sys.executable, "-m", "agent.cli"]


def write_toml(
    path: Path, home: Path, device_id: str, broker_url: str, **sections: dict[str, object]
) -> Path:
    lines = [
        f'home = "{home}"',
        "[device]",
        f'id = "{device_id}"',
        "[broker]",
        f'url = "{broker_url}"',
    ]
    for name, values in sections.items():
        lines.append(f"[{name}]")
        for k, v in values.items():
            lines.append(f"{k} = {json.dumps(v)}")
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Site:
    """A device and a warehouse sharing one broker, each with its own home and config file."""

    broker: Broker
    device: Config
    warehouse: Config
    device_toml: Path
    warehouse_toml: Path

    def run(
        self,
        *args: str,
        side: str = "device",
        timeout: float = 180,
        check: bool = False,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "SOHOA_CONFIG": str(self.device_toml if side == "device" else self.warehouse_toml),
        }
        env.pop("SOHOA_HOME", None)
        proc = subprocess.run(
            [*SOHOA, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            input=stdin,  # e.g. the token PIN: never on a command line
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"sohoa {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return proc


def make_site(tmp: Path, broker: Broker, device_id: str = "dev-test-01") -> Site:
    bcfg = BrokerConfig(url=broker.url())
    wh = Config(home=tmp / "warehouse", broker=bcfg)
    dev = Config(
        home=tmp / "device",
        broker=bcfg,
        device=DeviceConfig(id=device_id),
        sync=SyncConfig(receipt_timeout_s=5.0),
    )
    provision_pair(dev, wh)
    dt = write_toml(
        tmp / "device.toml",
        dev.home,
        device_id,
        broker.url(),
        sync={"receipt_timeout_s": 5.0},
        spool={"reserve_mb": 0},
        ui={"listen": ""},  # tests that want the counter page start it on a free port
    )
    wt = write_toml(tmp / "warehouse.toml", wh.home, "warehouse", broker.url())
    dev = replace(dev, spool=replace(dev.spool, reserve_mb=0))
    return Site(broker, dev, wh, dt, wt)
