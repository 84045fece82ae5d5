"""Airflow in tests: configured by the same `airflow_env` as local mode, with state under the test's LOCAL_DIR."""

from __future__ import annotations

import os

import pytest

from mlops.services.airflow_config import airflow_env
from mlops.settings import Settings


@pytest.fixture(scope="session")
def airflow_environ(base_settings: Settings) -> dict[str, str]:
    """Export the Airflow configuration into this process (AIRFLOW_HOME in the test's temp dir, no examples).

    The root `base_settings` fixture restores the environment at the end of the session.
    """
    env = airflow_env(base_settings)
    os.environ.update({k: v for k, v in env.items() if k.startswith("AIRFLOW")})
    return env
