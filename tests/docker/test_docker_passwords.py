"""Both modes refuse empty or well-known passwords and write strong ones into .env only with consent; a
missing .env is created with strong ones, and every file holding a secret is mode 600 from its first byte."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from dotenv import dotenv_values

from mlops.services import passwords
from mlops.services.errors import ServiceError
from mlops.services.passwords import (
    PASSWORD_SETTINGS,
    ensure_strong_passwords,
    generate_password,
    init_env,
    password_problem,
    placeholder_values,
    weak_passwords,
    write_env_values,
    write_secret_file,
)
from mlops.settings import PROJECT_ROOT

STRONG = "Zq4-t9YwR2_pLx7sKm3vB8nH"


def fake_settings(**overrides: str) -> SimpleNamespace:
    """Only the password fields matter to this logic; every one strong unless overridden."""
    return SimpleNamespace(**{name: STRONG for name in PASSWORD_SETTINGS} | overrides)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "is empty"),
        ("password", "well-known"),
        ("Admin", "well-known"),
        ("minioadmin", "well-known"),
        ("change-me-redis", "well-known"),
        ("CHANGE-ME-anything-long", "well-known"),
        ("s3cr3t", "shorter than 8"),
    ],
)
def test_weak_values_are_refused_with_a_reason(value: str, reason: str) -> None:
    problem = password_problem("s3_secret_key", value)
    assert problem is not None and reason in problem


def test_env_example_placeholders_count_as_well_known() -> None:
    placeholders = placeholder_values(PROJECT_ROOT / ".env.example")
    assert "change-me-redis" in placeholders  # REDIS_PASSWORD's placeholder
    assert password_problem("redis_password", "my-own-placeholder-xyz", {"my-own-placeholder-xyz"})


def test_passwords_embedded_in_urls_must_be_url_safe() -> None:
    assert password_problem("postgres_password", "abc@def/ghi:jkl") is not None
    assert password_problem("redis_password", "abc def ghi jkl") is not None
    # Not embedded in a URL: any character goes.
    assert password_problem("airflow_admin_password", "abc@def/ghi:jkl") is None


def test_generated_passwords_pass_every_rule_and_differ() -> None:
    generated = {generate_password() for _ in range(20)}
    assert len(generated) == 20
    for value in generated:
        assert len(value) >= 30
        for name in PASSWORD_SETTINGS:
            assert password_problem(name, value) is None


def test_weak_passwords_lists_each_bad_setting_by_variable_name() -> None:
    settings = fake_settings(redis_password="", grafana_admin_password="admin")
    weak = weak_passwords(settings, placeholders=set())
    assert [(w.name, w.reason) for w in weak] == [
        ("REDIS_PASSWORD", "is empty"),
        ("GRAFANA_ADMIN_PASSWORD", "is a well-known or placeholder value"),
    ]
    assert weak_passwords(fake_settings(), placeholders=set()) == []


def test_a_missing_password_setting_counts_as_empty() -> None:
    settings = SimpleNamespace(**{n: STRONG for n in PASSWORD_SETTINGS if n != "postgres_password"})
    assert [w.name for w in weak_passwords(settings, placeholders=set())] == ["POSTGRES_PASSWORD"]


def test_write_env_values_replaces_only_the_named_lines(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("# comment REDIS_PASSWORD=x\nREDIS_PASSWORD=change-me-redis\nDATASET=ml-100k\n\nSEED=7\n")
    write_env_values(env, {"REDIS_PASSWORD": "new-one", "POSTGRES_PASSWORD": "pg-one"})
    text = env.read_text()
    assert text.splitlines() == [
        "# comment REDIS_PASSWORD=x", "REDIS_PASSWORD=new-one", "DATASET=ml-100k", "", "SEED=7",
        "POSTGRES_PASSWORD=pg-one",
    ]  # fmt: skip
    assert stat.S_IMODE(env.stat().st_mode) == 0o600, ".env holds passwords: owner-only"


def test_write_env_values_creates_env_from_the_example(tmp_path: Path) -> None:
    example = tmp_path / ".env.example"
    example.write_text("DATASET=auto\nREDIS_PASSWORD=change-me-redis\n")
    env = tmp_path / ".env"
    write_env_values(env, {"REDIS_PASSWORD": "generated"}, example=example)
    assert dotenv_values(env) == {"DATASET": "auto", "REDIS_PASSWORD": "generated"}
    assert example.read_text() == "DATASET=auto\nREDIS_PASSWORD=change-me-redis\n", "the example is never changed"


def test_refusal_without_consent_changes_nothing(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("REDIS_PASSWORD=password\n")
    with pytest.raises(ServiceError) as err:
        ensure_strong_passwords(fake_settings(redis_password="password"), env, assume_yes=False, ask=lambda _: "n")
    assert "weak passwords" in str(err.value) and "python -m mlops.services.passwords" in str(err.value)
    assert env.read_text() == "REDIS_PASSWORD=password\n"


def test_non_interactive_refusal_prints_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", open("/dev/null"))  # not a TTY  # noqa: SIM115
    with pytest.raises(ServiceError) as err:
        ensure_strong_passwords(fake_settings(s3_secret_key=""), tmp_path / ".env", assume_yes=False)
    assert passwords.fix_command() in str(err.value)
    assert not (tmp_path / ".env").exists()


def test_consent_writes_strong_passwords_and_returns_reloaded_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = tmp_path / ".env"
    env.write_text("DATASET=ml-100k\nREDIS_PASSWORD=password\n")
    reloaded = fake_settings()
    seen = {}

    def fake_load(path: Path) -> SimpleNamespace:
        seen["values"] = dotenv_values(path)
        return reloaded

    monkeypatch.setattr(passwords, "load_settings", fake_load)
    result = ensure_strong_passwords(
        fake_settings(redis_password="password", grafana_admin_password=""), env, assume_yes=False, ask=lambda _: "y"
    )
    assert result is reloaded
    values = seen["values"]
    assert values["DATASET"] == "ml-100k"
    for name in ("REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        assert password_problem(name.lower(), values[name]) is None
    assert values["REDIS_PASSWORD"] != values["GRAFANA_ADMIN_PASSWORD"]


def test_an_overriding_environment_variable_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If the re-read settings are still weak, an environment variable wins over .env: say so."""
    monkeypatch.setattr(passwords, "load_settings", lambda path: fake_settings(redis_password="password"))
    with pytest.raises(ServiceError, match=r"REDIS_PASSWORD still weak .* environment variable"):
        ensure_strong_passwords(fake_settings(redis_password="password"), tmp_path / ".env", assume_yes=True)


def test_init_env_creates_a_missing_env_with_strong_passwords_only(tmp_path: Path) -> None:
    """What `./run.sh` does on a fresh clone: every password strong and distinct, the rest as the example has
    it, mode 600; an existing complete .env is never touched."""
    env = tmp_path / ".env"
    assert init_env(env) == [name.upper() for name in PASSWORD_SETTINGS]
    values, example = dotenv_values(env), dotenv_values(passwords.ENV_EXAMPLE)
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    generated = [values[name.upper()] for name in PASSWORD_SETTINGS]
    assert len(set(generated)) == len(generated)
    assert all(password_problem(name, values[name.upper()], placeholder_values()) is None for name in PASSWORD_SETTINGS)
    assert {k: v for k, v in values.items() if k.lower() not in PASSWORD_SETTINGS} == {
        k: v for k, v in example.items() if k.lower() not in PASSWORD_SETTINGS
    }
    before = env.read_text()
    assert init_env(env) == [] and env.read_text() == before


def test_init_env_adds_only_the_passwords_an_older_env_lacks(tmp_path: Path) -> None:
    """An .env from before a password setting existed gets a strong value for it; every line it had stays,
    a weak value set by hand included (that one is refused at start, with its name, not silently replaced)."""
    env = tmp_path / ".env"
    env.write_text("# mine\nREDIS_PASSWORD=change-me-redis\nSEED=7\n")
    written = init_env(env)
    values = dotenv_values(env)
    assert "REDIS_PASSWORD" not in written and "MLFLOW_TRACKING_PASSWORD" in written
    assert values["REDIS_PASSWORD"] == "change-me-redis" and values["SEED"] == "7"
    assert env.read_text().startswith("# mine\n")
    assert all(password_problem(name.lower(), values[name]) is None for name in written)
    assert stat.S_IMODE(env.stat().st_mode) == 0o600


def test_a_secret_file_is_never_readable_by_others_even_for_a_moment(tmp_path: Path) -> None:
    """Created 600 (not chmod-ed after writing), whatever the umask, and a stale world-readable temporary file
    from a crash is replaced, not reused with its mode."""
    path = tmp_path / "redis.conf"
    stale = tmp_path / ".redis.conf.tmp"
    stale.write_text("old")
    stale.chmod(0o644)
    old_umask = os.umask(0)
    try:
        write_secret_file(path, "requirepass x\n")
    finally:
        os.umask(old_umask)
    assert path.read_text() == "requirepass x\n" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not stale.exists()


def test_local_mode_names_itself_and_every_weak_setting(tmp_path: Path, capsys) -> None:
    with pytest.raises(ServiceError, match=r"weak passwords in .*\(REDIS_PASSWORD, S3_SECRET_KEY\)") as caught:
        ensure_strong_passwords(fake_settings(redis_password="change-me-redis", s3_secret_key="short"),
                                tmp_path / ".env", assume_yes=False, ask=lambda _: "n", mode="local")  # fmt: skip
    assert caught.value.service == "local"
    assert "Local mode will not start with these passwords" in capsys.readouterr().out
    assert not (tmp_path / ".env").exists()
