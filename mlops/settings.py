"""Every setting of the platform, named once.

Precedence: environment variables, then the project's `.env`, then the defaults below. The defaults are
the local-mode endpoints; `.env.example` lists the same names (a test keeps the two in step), and
`docker-compose.yml` passes the same names to the containers.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

from dotenv import dotenv_values

PROJECT_ROOT = Path(__file__).resolve().parent.parent

SPLIT_STRATEGIES = ("temporal", "random", "global_temporal")
MIN_DRIFT_ROWS = 100
"""The least DRIFT_MIN_ROWS accepted: 10 PSI bins of 10 rows each."""
SERVED_SETS = ("serving", "evaluation")
"""What a consumer answers from: the champion's serving set (every ingested rating) or its evaluation set
(train + validation, the features offline evaluation saw: what the parity check serves)."""
DATASET_NAMES = ("auto", "ml-latest-small", "ml-100k", "ml-1m", "ml-25m", "ml-32m", "synthetic")


class SettingsError(ValueError):
    """A setting has a value the platform cannot use; the message names the setting."""


@dataclass(frozen=True)
class Settings:
    """Typed view of the environment; field names are the upper-cased variable names."""

    # Data and experiment
    dataset: str = "auto"
    synthetic_ratings: int = 100_000
    split_strategy: str = "temporal"
    test_fraction: float = 0.2
    validation_fraction: float = 0.1  # of each user's ratings, taken from the train side (per-user splits)
    seed: int = 42
    tuning_trials: int = 4  # Optuna trials per training run; 0 = off (the default parameters are used)
    tuning_timeout_seconds: int = 300  # the search's time budget: the best trial so far is kept when hit
    training_examples_max: int = 3_000_000  # above it, training examples come from a sample of users; 0 = all
    data_cache_dir: str = ".local/data/downloads"

    # Redis (feature store and predictions)
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    redis_password: str = "change-me-redis"
    prediction_ttl_seconds: int = 180  # what reads a result needs it for minutes (mlops.prediction_budget)
    prediction_budget_rps: int = 1_000  # the sustained request rate Redis must hold the results of
    redis_maxmemory_mb: int = 400  # Redis's maxmemory; results are evicted first (volatile-ttl)
    feature_set_ttl_seconds: int = 7 * 86_400

    # Kafka: SASL, one principal per role (mlops.kafka_auth); the admin signs in with PLAIN, the others SCRAM-SHA-512
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_admin_password: str = "change-me-kafka-admin"
    kafka_inference_password: str = "change-me-kafka-inference"
    kafka_platform_password: str = "change-me-kafka-platform"
    kafka_feedback_password: str = "change-me-kafka-feedback"
    kafka_console_password: str = "change-me-kafka-console"
    kafka_ui_password: str = "change-me-kafka-ui"

    # Object store (MinIO in Docker; natively MinIO when on PATH, else S3Proxy)
    s3_endpoint_url: str = "http://127.0.0.1:9000"
    s3_access_key: str = "mlops"
    s3_secret_key: str = "change-me-s3-secret"
    s3_region: str = "us-east-1"
    s3_bucket: str = "mlops-data"
    mlflow_artifact_bucket: str = "mlflow-artifacts"

    # MLflow
    mlflow_tracking_uri: str = "http://127.0.0.1:5000"
    mlflow_experiment: str = "movielens-recommender"
    model_name: str = "movielens-recommender"
    # MLflow's basic-auth app (mlops.services.mlflow_auth): every client signs in as the platform's user, under
    # MLflow's own variable names (its client reads them from the environment); the admin only manages users.
    mlflow_tracking_username: str = "platform"
    mlflow_tracking_password: str = "change-me-mlflow"
    mlflow_admin_password: str = "change-me-mlflow-admin"

    # Spark
    spark_master: str = "local[*]"
    spark_driver_memory: str = "4g"
    spark_io: str = "staged"  # "staged": via local scratch + S3 API; "s3a": direct (Docker's Spark image)
    spark_workers: int = 0  # local mode: >0 starts a standalone master at SPARK_MASTER (spark://) and N workers
    spark_executor_memory: str = "2g"  # per executor on a cluster; each local worker offers this much
    spark_master_ui_url: str = "http://127.0.0.1:8081"  # the standalone master's web UI (shown by status)
    spark_local_dir: str = ""  # shuffle and scratch space of Spark steps; empty: LOCAL_DIR/spark-tmp

    # Airflow
    airflow_url: str = "http://127.0.0.1:8080"
    airflow_admin_user: str = "admin"
    airflow_admin_password: str = "change-me-airflow"

    # Online champion/challenger (docs/reference.md, "Online champion/challenger")
    challenger_traffic: float = 0.0  # share of users served by the `challenger` alias (sticky by user id)
    feedback_window: int = 50_000  # scored pairs kept per variant and model version for the online AUC
    promotion_min_users: int = 200  # the fixed horizon: users per variant and metric at which `promote` decides, once
    promotion_alpha: float = 0.05  # significance level of `promote` (Bonferroni-split over the metrics compared)

    # Inference consumer
    inference_consumers: int = 1
    inference_metrics_port: int = 9108
    inference_metrics_host: str = "127.0.0.1"  # where /metrics and /healthz listen; 0.0.0.0 in Docker
    inference_batch_size: int = 500
    inference_batch_timeout_ms: int = 5
    serve_feature_set: str = "serving"  # "serving" (every rating) or "evaluation" (train + validation: parity checks)
    drift_tracking: bool = True  # each consumer compares what it serves with the model's reference profile
    drift_window: int = 5000  # rows (sampled model inputs + predictions) the drift window keeps per consumer
    drift_min_rows: int = 500  # no drift is measured on fewer served rows (PSI over 10 bins is noise below)

    # Drift monitor (the DAG drift_monitor: the consumers' latest windows vs the champion's reference)
    drift_monitor_schedule: str = "@hourly"  # an Airflow schedule (cron or preset); "none": triggered only
    drift_retrain_threshold: float = 0.2  # max PSI (any model input or the prediction) that triggers mlops_platform
    drift_retrain_cooldown_hours: float = 24.0  # no second drift-triggered retrain within this time, failed or not

    # Console (the web UI of the platform) and the Prometheus it reads charts from when one answers
    # (local mode's `up` starts one there; it scrapes the consumers and evaluates the alert rules)
    console_url: str = "http://127.0.0.1:8501"
    prometheus_url: str = "http://127.0.0.1:9090"

    # Local mode
    local_dir: str = ".local"

    # Docker mode only
    postgres_password: str = "change-me-postgres"
    grafana_admin_password: str = "change-me-grafana"

    @property
    def redis_url(self) -> str:
        """Connection URL of the Redis (database 0, with its password) every client uses."""
        return f"redis://:{self.redis_password}@{self.redis_host}:{self.redis_port}/0"

    @property
    def mlflow_auth(self) -> tuple[str, str]:
        """(user, password) of the platform's MLflow user, for REST calls made without the MLflow client."""
        return self.mlflow_tracking_username, self.mlflow_tracking_password

    def port_of(self, url_setting: str) -> int:
        """Port of a URL-valued setting such as `airflow_url`, for local mode's process manager."""
        parsed = urlparse(getattr(self, url_setting))
        if parsed.port is None:
            raise SettingsError(f"{url_setting.upper()}={getattr(self, url_setting)!r} has no port")
        return parsed.port

    def path(self, setting: str) -> Path:
        """A path-valued setting, resolved against the project root when relative."""
        p = Path(getattr(self, setting))
        return p if p.is_absolute() else PROJECT_ROOT / p

    def challenger_share(self) -> tuple[float, str | None]:
        """The share of users the challenger serves, and why it is 0 when CHALLENGER_TRAFFIC cannot be used.

        Not a `validate()` error on purpose: a bad value must not stop the stream, it sends every user to
        the champion and says so at start (issue 15)."""
        share = self.challenger_traffic
        if not 0.0 <= share <= 1.0:  # NaN fails this too
            return 0.0, (f"CHALLENGER_TRAFFIC={share}: expected a share of users between 0 and 1; "
                         "all traffic goes to the champion")  # fmt: skip
        return share, None

    def replace(self, **changes: object) -> Settings:
        """A copy with some fields changed (not validated: call `validate` on the result)."""
        return dataclasses.replace(self, **changes)

    def validate(self) -> Settings:
        """Refuse values the pipeline or the stream cannot use, with the setting named; self when all are fine."""
        if self.split_strategy not in SPLIT_STRATEGIES:
            raise SettingsError(f"SPLIT_STRATEGY={self.split_strategy!r}: expected one of {SPLIT_STRATEGIES}")
        if not 0.0 < self.test_fraction < 1.0:
            raise SettingsError(f"TEST_FRACTION={self.test_fraction}: expected a number between 0 and 1")
        if not 0.0 < self.validation_fraction < 1.0:
            raise SettingsError(f"VALIDATION_FRACTION={self.validation_fraction}: expected a number between 0 and 1")
        if self.test_fraction + self.validation_fraction >= 1.0:
            raise SettingsError(
                f"VALIDATION_FRACTION={self.validation_fraction} with TEST_FRACTION={self.test_fraction}: "
                "together they must stay below 1, or no ratings are left to train on"
            )
        if self.tuning_trials < 0:
            raise SettingsError(f"TUNING_TRIALS={self.tuning_trials}: expected 0 (off) or a positive integer")
        if self.training_examples_max < 0:
            raise SettingsError(
                f"TRAINING_EXAMPLES_MAX={self.training_examples_max}: expected 0 (no cap) or a positive integer"
            )
        if self.tuning_timeout_seconds < 1:
            raise SettingsError(f"TUNING_TIMEOUT_SECONDS={self.tuning_timeout_seconds}: expected a positive integer")
        if self.synthetic_ratings < 1:
            raise SettingsError(f"SYNTHETIC_RATINGS={self.synthetic_ratings}: expected a positive integer")
        if self.drift_min_rows < MIN_DRIFT_ROWS:
            raise SettingsError(f"DRIFT_MIN_ROWS={self.drift_min_rows}: expected at least {MIN_DRIFT_ROWS} rows "
                                "(with fewer, the PSI of 10 bins is sampling noise and reads as drift)")  # fmt: skip
        if self.drift_window < self.drift_min_rows:
            raise SettingsError(f"DRIFT_WINDOW={self.drift_window} is below DRIFT_MIN_ROWS={self.drift_min_rows}: "
                                "the window could never hold enough rows for a drift measurement")  # fmt: skip
        if not self.drift_retrain_threshold > 0:
            raise SettingsError(f"DRIFT_RETRAIN_THRESHOLD={self.drift_retrain_threshold}: expected a PSI above 0")
        if self.drift_retrain_cooldown_hours < 0:
            raise SettingsError(f"DRIFT_RETRAIN_COOLDOWN_HOURS={self.drift_retrain_cooldown_hours}: expected >= 0")
        if self.feedback_window < 1:
            raise SettingsError(f"FEEDBACK_WINDOW={self.feedback_window}: expected a positive number of pairs")
        if self.promotion_min_users < 2:
            raise SettingsError(
                f"PROMOTION_MIN_USERS={self.promotion_min_users}: expected at least 2 users per variant"
            )
        if not 0.0 < self.promotion_alpha < 0.5:
            raise SettingsError(f"PROMOTION_ALPHA={self.promotion_alpha}: expected a significance level in (0, 0.5)")
        if self.serve_feature_set not in SERVED_SETS:
            raise SettingsError(f"SERVE_FEATURE_SET={self.serve_feature_set!r}: expected one of {SERVED_SETS}")
        if self.spark_io not in ("staged", "s3a"):
            raise SettingsError(f"SPARK_IO={self.spark_io!r}: expected 'staged' or 's3a'")
        if self.spark_workers < 0:
            raise SettingsError(f"SPARK_WORKERS={self.spark_workers}: expected 0 (local[*]) or a number of workers")
        if self.spark_workers and not self.spark_master.startswith("spark://"):
            raise SettingsError(f"SPARK_WORKERS={self.spark_workers} starts a standalone cluster, so SPARK_MASTER "
                                f"must be the spark://host:port it listens on (got {self.spark_master!r})")  # fmt: skip
        return self


def env_names() -> list[str]:
    """The variable names, in declaration order (what `.env.example` must list)."""
    return [f.name.upper() for f in fields(Settings)]


def _coerce(name: str, raw: str, default: object) -> object:
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a {type(default).__name__}") from None
    return raw


def load_settings(env_file: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Build settings from the environment and the `.env` file (environment wins)."""
    env_file = env_file or PROJECT_ROOT / ".env"
    values: dict[str, str] = {}
    if env_file.exists():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    kwargs = {}
    for f in fields(Settings):
        name = f.name.upper()
        if name in values and values[name] != "":
            kwargs[f.name] = _coerce(name, values[name], f.default)
    return Settings(**kwargs).validate()


@cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
