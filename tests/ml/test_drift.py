"""The drift math (pure): profiles, PSI and KS on known distributions, both ways."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlops import drift


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def profile_of(rng: np.random.Generator, n: int = 20_000) -> dict:
    x = np.column_stack([rng.normal(0, 1, n), rng.integers(0, 2, n).astype(float), rng.exponential(1, n)])
    x[rng.random(n) < 0.1, 2] = np.nan  # a column with 10% missing values
    return drift.reference_profile(x, ("normal", "flag", "sparse"), rng.beta(2, 5, n))


def test_profile_is_json_with_bins_missing_share_and_ks_only_where_it_fits(rng) -> None:
    profile = json.loads(json.dumps(profile_of(rng)))  # what MLflow and Redis hold
    drift.check_profile(profile, ("normal", "flag", "sparse"))
    normal, flag, sparse = (profile["features"][n] for n in ("normal", "flag", "sparse"))
    assert len(normal["edges"]) == drift.BINS - 1 and sum(normal["fractions"]) == pytest.approx(1)
    assert normal["fractions"] == pytest.approx([0.1] * drift.BINS, abs=0.01)
    assert flag["percentiles"] is None and normal["percentiles"] is not None  # KS for continuous columns only
    assert sparse["missing"] == pytest.approx(0.1, abs=0.01)
    assert profile[drift.PREDICTION]["percentiles"] is not None


def test_same_distribution_is_not_drift(rng) -> None:
    profile = profile_of(rng)
    window = rng.normal(0, 1, 2000)
    result = drift.column_drift(profile["features"]["normal"], window)
    assert result.psi < 0.05 and result.ks is not None and result.ks < 0.05 and result.rows == 2000
    flags = drift.column_drift(profile["features"]["flag"], rng.integers(0, 2, 2000).astype(float))
    assert flags.psi < 0.05 and flags.ks is None


def test_shifted_distribution_is_drift_by_psi_and_ks(rng) -> None:
    profile = profile_of(rng)
    result = drift.column_drift(profile["features"]["normal"], rng.normal(1, 1, 2000))  # one sd
    assert result.psi > drift.PSI_THRESHOLD and result.ks is not None and result.ks > 0.3
    flags = drift.column_drift(profile["features"]["flag"], (rng.random(2000) < 0.9).astype(float))
    assert flags.psi > drift.PSI_THRESHOLD


def test_values_going_missing_is_drift(rng) -> None:
    profile = profile_of(rng)
    values = rng.exponential(1, 2000)
    values[:1000] = np.nan  # 50% missing where the reference had 10%
    assert drift.psi(profile["features"]["sparse"], values) > drift.PSI_THRESHOLD
    values = rng.exponential(1, 2000)
    values[rng.random(2000) < 0.1] = np.nan
    assert drift.psi(profile["features"]["sparse"], values) < 0.05


def test_unusable_profiles_are_refused_by_name(rng) -> None:
    profile = profile_of(rng)
    with pytest.raises(drift.ProfileError, match="lacks \\['other'\\]"):
        drift.check_profile(profile, ("normal", "other"))
    with pytest.raises(drift.ProfileError, match="format"):
        drift.check_profile({**profile, "format": 99}, ("normal",))
    with pytest.raises(drift.ProfileError, match="do not match"):
        drift.reference_profile(np.zeros((3, 2)), ("a",), np.zeros(3))
