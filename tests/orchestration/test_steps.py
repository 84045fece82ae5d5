"""A step's command line, and how its exit code becomes the task outcome (real child processes)."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from mlops.orchestration.steps import STEPS, step_argv
from mlops.orchestration.tasks import raise_for, run_step
from mlops.run_params import RunParams
from mlops.settings import PROJECT_ROOT, Settings


def test_params_fall_back_to_settings_and_override(base_settings: Settings) -> None:
    assert RunParams.from_params({}, base_settings) == RunParams.defaults(base_settings)
    run = RunParams.from_params({"dataset": "ml-100k", "seed": "7", "test_fraction": 0.25}, base_settings)
    assert (run.dataset, run.seed, run.test_fraction) == ("ml-100k", 7, 0.25)
    assert run.split_strategy == base_settings.split_strategy


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"split_strategy": "weekly"}, "split_strategy"),
        ({"test_fraction": 1.5}, "test_fraction"),
        # no train side left: refused before any step starts, naming the setting
        ({"test_fraction": 0.5, "validation_fraction": 0.5}, "VALIDATION_FRACTION"),
        ({"tuning_trials": -1}, "TUNING_TRIALS"),
    ],
)
def test_bad_params_are_refused(base_settings: Settings, params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RunParams.from_params(params, base_settings)


def test_spark_step_goes_through_spark_submit(base_settings: Settings) -> None:
    run = RunParams("synthetic", "random", 0.25, 0.1, 3, 0)
    argv = step_argv(base_settings, STEPS["features"], "manual__2026-01-01T00:00:00+00:00", run)
    assert argv[:3] == ["spark-submit", "--master", base_settings.spark_master]
    script = argv.index(str(PROJECT_ROOT / "spark-jobs/feature_engineering.py"))
    assert argv[script + 1 :] == [
        "--run-id", "manual__2026-01-01T00:00:00+00:00",
        "--dataset", "synthetic", "--split-strategy", "random", "--test-fraction", "0.25",
        "--validation-fraction", "0.1", "--seed", "3", "--tuning-trials", "0",
    ]  # fmt: skip


def test_the_train_step_gets_the_runs_tuning_trials(base_settings: Settings) -> None:
    """The DAG param `tuning_trials` turns the search on (or off) for one run."""
    on = RunParams.from_params({"tuning_trials": 12}, base_settings)
    argv = step_argv(base_settings, STEPS["train"], "r1", on)
    assert argv[argv.index("--tuning-trials") + 1] == "12"
    off = step_argv(base_settings, STEPS["train"], "r1", RunParams.from_params({"tuning_trials": 0}, base_settings))
    assert off[off.index("--tuning-trials") + 1] == "0"


def test_fractions_leaving_no_train_side_fail_before_spark_naming_the_setting(
    base_settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Run alone (not through the DAG, which refuses the params at trigger time), the split step refuses
    them too, before a Spark session or the object store is touched, with exit code 3 (no retry)."""
    from mlops import spark_io
    from mlops.jobs import split_dataset
    from mlops.jobs.runner import EXIT_DATA_ERROR, run

    monkeypatch.setattr(spark_io, "spark_session", lambda *a, **k: pytest.fail("Spark was started"))
    monkeypatch.setattr(split_dataset, "require_passed_gate", lambda *a: pytest.fail("the object store was read"))
    argv = ["--run-id", "t-fractions", "--test-fraction", "0.7", "--validation-fraction", "0.3"]
    with pytest.raises(SystemExit) as info:
        run(lambda a: split_dataset.main(a, base_settings), argv)
    assert info.value.code == EXIT_DATA_ERROR
    assert "VALIDATION_FRACTION=0.3 with TEST_FRACTION=0.7" in caplog.text


def test_dag_stages_the_feature_set_and_leaves_the_switch_to_promotion(base_settings: Settings) -> None:
    argv = step_argv(base_settings, STEPS["load_to_redis"], "r1", RunParams.defaults(base_settings))
    assert argv[-1] == "--stage-only"
    assert "--stage-only" not in step_argv(base_settings, STEPS["features"], "r1", RunParams.defaults(base_settings))


def test_python_step_runs_with_this_interpreter(base_settings: Settings) -> None:
    argv = step_argv(base_settings, STEPS["train"], "r1", RunParams.defaults(base_settings))
    assert argv[:2] == [sys.executable, str(PROJECT_ROOT / "mlflow/train_model.py")]


def test_run_id_that_could_escape_its_prefix_is_refused(base_settings: Settings) -> None:
    with pytest.raises(ValueError, match="run id"):
        step_argv(base_settings, STEPS["ingest"], "../other", RunParams.defaults(base_settings))


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_success_keeps_output_tail() -> None:
    result = run_step(_python("for i in range(100): print('line', i)"), tail_lines=5)
    assert result.returncode == 0
    assert result.tail == [f"line {i}" for i in range(95, 100)]
    raise_for(result, STEPS["ingest"])  # no exception


def test_bad_data_exit_fails_without_retry() -> None:
    result = run_step(
        _python("import sys; print('QualityError: ratings.csv line 3: rating 9 out of range'); sys.exit(3)")
    )
    with pytest.raises(AirflowFailException, match=r"(?s)validate .*exited 3 \(bad data.*line 3: rating 9"):
        raise_for(result, STEPS["validate"])


def test_other_failure_is_retryable() -> None:
    result = run_step(_python("import sys; sys.stderr.write('redis: connection refused\\n'); sys.exit(1)"))
    with pytest.raises(AirflowException, match="connection refused") as info:
        raise_for(result, STEPS["load_to_redis"])
    assert not isinstance(info.value, AirflowFailException)


def test_child_killed_with_the_task(tmp_path) -> None:
    """A task interrupted while its step runs (timeout, user kill) stops the step's whole process group."""
    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, time, pathlib; p = subprocess.Popen(['sleep', '60']); "
        f"pathlib.Path({str(pid_file)!r}).write_text(str(p.pid)); time.sleep(60)"
    )

    class Interrupted(Exception):
        pass

    def interrupt(signum, frame):
        raise Interrupted

    old = signal.signal(signal.SIGALRM, interrupt)
    signal.alarm(3)
    try:
        with pytest.raises(Interrupted):
            run_step(_python(code))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    grandchild = int(pid_file.read_text())
    deadline = time.time() + 5
    while _alive(grandchild):
        assert time.time() < deadline, "the step's grandchild outlived the interrupted task"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


WINDOW_JOB = """
import pyspark.sql.functions as F
from pyspark.sql import SparkSession, Window

spark = SparkSession.builder.getOrCreate()
rows = spark.range(50).withColumn("r", F.row_number().over(Window.orderBy("id"))).count()
print(f"job done: {rows} rows", flush=True)
"""


@pytest.mark.slow
def test_known_harmless_spark_and_pandas_warnings_are_silenced_at_the_source(base_settings: Settings, tmp_path) -> None:
    """A real spark-submit of a window without PARTITION BY (Spark warns once per such window), launched the
    way a DAG task launches a step: the warning and PySpark's pandas-version warning are gone, the job's own
    output is there, and other warnings would still show (root level WARN)."""
    from mlops.orchestration.steps import SPARK_LOG_CONFIG, spark_submit

    job = tmp_path / "window_job.py"
    job.write_text(WINDOW_JOB)
    result = run_step([*spark_submit(base_settings, "window-test"), str(job)], tail_lines=400)
    text = "\n".join(result.tail)
    assert result.returncode == 0, text
    assert "job done: 50 rows" in text
    assert "WindowExec" not in text and "No Partition Defined" not in text
    assert "does not yet fully support pandas" not in text
    assert "Using Spark's default log4j profile" not in text  # ours was read
    assert "rootLogger.level = warn" in SPARK_LOG_CONFIG.read_text()
