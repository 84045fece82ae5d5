"""`.env.example` documents every setting exactly once, and its values load into valid settings."""

from __future__ import annotations

import re

import pytest
from dotenv import dotenv_values

from mlops.settings import PROJECT_ROOT, Settings, env_names, load_settings

EXAMPLE = PROJECT_ROOT / ".env.example"


def example_names() -> list[str]:
    return [m.group(1) for m in re.finditer(r"^([A-Z][A-Z0-9_]*)=", EXAMPLE.read_text(), re.MULTILINE)]


def test_every_setting_is_in_env_example_and_nothing_else():
    names = example_names()
    assert len(names) == len(set(names)), f"listed twice: {sorted({n for n in names if names.count(n) > 1})}"
    assert set(names) == set(env_names()), {
        "missing from .env.example": sorted(set(env_names()) - set(names)),
        "unknown to mlops.settings": sorted(set(names) - set(env_names())),
    }


def test_env_example_values_are_the_defaults():
    """A fresh `.env` (copied from the example) must behave like no `.env` at all."""
    from_example = load_settings(env_file=EXAMPLE, environ={})
    assert from_example == Settings()
    values = dotenv_values(EXAMPLE)
    assert values["REDIS_PASSWORD"] == Settings().redis_password


def test_reference_configuration_table_matches_env_example():
    readme = (PROJECT_ROOT / "docs" / "reference.md").read_text()  # the configuration table lives there
    rows = dict(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \| ([^|]*) \|", readme, re.MULTILINE))
    assert set(rows) == set(env_names()), sorted(set(rows) ^ set(env_names()))
    for name, default in dotenv_values(EXAMPLE).items():
        shown = rows[name].strip()
        assert shown == (f"`{default}`" if default else "(empty)"), (name, shown, default)


def test_a_drift_window_too_small_for_a_measurement_is_refused_at_start():
    """DRIFT_MIN_ROWS below the floor, or a DRIFT_WINDOW that could never hold it, stops the settings with both
    names; the defaults pass."""
    from mlops.settings import SettingsError

    Settings().validate()
    with pytest.raises(SettingsError, match=r"DRIFT_WINDOW=50 is below DRIFT_MIN_ROWS=500"):
        Settings(drift_window=50).validate()
    with pytest.raises(SettingsError, match=r"DRIFT_MIN_ROWS=20: expected at least 100"):
        Settings(drift_min_rows=20).validate()
    Settings(drift_window=200, drift_min_rows=200).validate()
