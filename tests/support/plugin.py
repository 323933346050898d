"""The pytest plugin with a fixture for every real part: mosquitto, libsane's test
backend, a device and warehouse site with real keys, warehouse workers.

Registered once in ``tests/conftest.py``; helpers are imported from
``tests.support.*`` like any module.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.services.warehouse import WarehouseWorkers
from device.sane_testbed import write_sane_config
from tests.support.mqtt import Broker, start_mosquitto
from tests.support.site import Site, make_site

# postgres_server, postgres_dsn, postgres_db; softhsm_token; release_bundles
pytest_plugins = ["tests.support.postgres", "tests.support.softhsm", "tests.support.release"]


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A fresh broker for one test; stopped afterwards."""
    broker = start_mosquitto(tmp_path / "broker")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def mosquitto_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker shared by the whole run: use unique client ids and topics per test."""
    broker = start_mosquitto(tmp_path_factory.mktemp("broker"))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def sane_test_scanner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Device name of the libsane test backend ("test:0"): 10 pages per feeder run.
    ``os.environ["SANE_CONFIG_DIR"]`` names the private configuration meanwhile."""
    config_dir = write_sane_config(tmp_path_factory.mktemp("sane.d"))
    previous = os.environ.get("SANE_CONFIG_DIR")
    os.environ["SANE_CONFIG_DIR"] = str(config_dir)
    yield "test:0"
    if previous is None:
        os.environ.pop("SANE_CONFIG_DIR", None)
    else:
        os.environ["SANE_CONFIG_DIR"] = previous


@pytest.fixture
def site(tmp_path: Path, mosquitto: Broker) -> Site:
    return make_site(tmp_path, mosquitto)


@pytest.fixture
def warehouse_worker(site: Site) -> Iterator[WarehouseWorkers]:
    """A real warehouse ingest worker on the site's broker, in a thread."""
    with WarehouseWorkers.from_config(site.warehouse, name="t") as workers:
        assert workers.wait_ready(15), "warehouse worker did not connect"
        yield workers
