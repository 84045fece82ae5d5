"""A Spark session for the data tests (local[2], shared by the module's tests to save start-up time)."""

from __future__ import annotations

import pytest

from mlops.spark_io import spark_session


@pytest.fixture(scope="session")
def spark(base_settings):
    session = spark_session("tests-data", base_settings)
    yield session
    session.stop()
