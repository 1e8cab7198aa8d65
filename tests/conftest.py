"""Shared fixtures: seeded randomness and the shared data folder."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("TURBINE_DATA_DIR", REPO.parent / "shared" / "data"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261130)


@pytest.fixture(scope="session")
def skab_dir() -> Path:
    """The SKAB recordings in ../shared/data; skip (fail in CI) when absent."""
    path = DATA / "skab"
    if not path.is_dir():
        if IN_CI:
            pytest.fail(f"CI=true but the shared data folder {path} is missing")
        pytest.skip(f"shared data folder {path} is absent (recorded SKAB files)")
    return path


@pytest.fixture(scope="session")
def lhb_csv() -> Path:
    """La Haute Borne's SCADA file in ../shared/data; skip (fail in CI) when absent.

    La Haute Borne wind farm data, ENGIE (opendata-renewables.engie.com),
    Open Licence 2.0, as distributed with NREL OpenOA.
    """
    path = DATA / "lhb" / "la-haute-borne-data-2014-2015.csv"
    if not path.is_file():
        if IN_CI:
            pytest.fail(f"CI=true but the shared data file {path} is missing")
        pytest.skip(f"shared data file {path} is absent (La Haute Borne SCADA)")
    return path


@pytest.fixture(scope="session")
def kafka_servers() -> Iterator[str]:
    """Bootstrap servers of a real broker (see tests/kafka_support.py)."""
    from tests.kafka_support import NoBroker, any_broker, wait_for_metadata

    try:
        with any_broker() as servers:
            wait_for_metadata(servers)
            yield servers
    except NoBroker as exc:
        if IN_CI:
            pytest.fail(f"CI=true and no Kafka broker: {exc}")
        pytest.skip(f"no Kafka broker: {exc}")


@pytest.fixture
def topic_factory(kafka_servers: str) -> Iterator[Callable[..., str]]:
    """Create fresh topics (unique names) and delete them after the test."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=kafka_servers)
    made: list[str] = []

    def make(prefix: str = "t", partitions: int = 1) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        made.append(name)
        return name

    yield make
    try:
        if made:
            admin.delete_topics(made)
    finally:
        admin.close()


@pytest.fixture
def group_id() -> str:
    """A fresh consumer group id per test (no waiting on a dead member's session)."""
    return f"g-{uuid.uuid4().hex[:10]}"


def lhb_head_parquet(lhb_csv: Path, tmp_path: Path, rows: int) -> Path:
    """The first ``rows`` rows of La Haute Borne as Parquet (its columns as published),
    written in ``tmp_path``: the shared file is read in place, never copied whole."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    head = tmp_path / "lhb-head.csv"
    with open(lhb_csv, encoding="utf-8") as src, open(head, "w", encoding="utf-8") as dst:
        for i, line in enumerate(src):
            if i > rows:
                break
            dst.write(line)
    table = pacsv.read_csv(
        head, convert_options=pacsv.ConvertOptions(column_types={"Date_time": "string"})
    )
    out = tmp_path / "lhb-head.parquet"
    pq.write_table(table, out, row_group_size=10_000)
    return out
