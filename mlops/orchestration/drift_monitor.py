"""The batch drift check behind the DAG `drift_monitor`: the latest served window against the champion's
reference, a drift report in MLflow, and whether to retrain.

The latest window is what the consumers publish to Redis (`mlops.drift_windows`: the sampled model inputs
and predictions each one served, refreshed while traffic flows, gone two hours after it stops). The
reference is the champion version's `reference_profile.json` in MLflow (`mlops.drift`). Every measured
check is one MLflow run in the experiment `<MLFLOW_EXPERIMENT>-drift` with the table (`drift_report.json`,
PSI and KS per column) and the plot (`drift_psi.png`).

Retraining is decided by `decide`, pure: the largest PSI must exceed the threshold, and the last
drift-triggered retrain must be at least the cool-down ago, whatever became of it. WHY the cool-down counts
from the trigger and not from a success: a retrain that fails (or whose model loses) leaves the champion
serving, so its drift stays; counting from a success would trigger again at the next check, and again.
The trigger is recorded (Redis `drift:last_retrain`) before `mlops_platform` is triggered, so a failure
between the two errs on the side of not retraining.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlops import drift, drift_windows
from mlops import features as fx
from mlops.settings import Settings
from mlops.topics import CONSUMER_GROUP

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

DAG_ID = "drift_monitor"
EXPERIMENT_SUFFIX = "-drift"
"""Drift reports go to the experiment `<MLFLOW_EXPERIMENT>-drift`, apart from the training runs."""
LAST_RETRAIN_KEY = "drift:last_retrain"
RUN_ID_PREFIX = "drift__"
"""Run id prefix of the `mlops_platform` runs this DAG triggers (the pipeline's runs stay apart)."""
REPORT_TABLE, REPORT_PLOT = "drift_report.json", "drift_psi.png"
MEASURED, UNAVAILABLE = "measured", "unavailable"


@dataclass(frozen=True)
class DriftReport:
    """Drift of one model version's served window, column by column (`drift.PREDICTION` for its output)."""

    model_version: str
    feature_set: str
    consumers: tuple[str, ...]
    rows: int
    columns: dict[str, drift.Drift]

    @property
    def worst(self) -> tuple[str, float]:
        """The column with the largest PSI, and that PSI: what the retrain decision is based on."""
        name = max(self.columns, key=lambda c: self.columns[c].psi)
        return name, self.columns[name].psi

    def table(self, threshold: float) -> list[dict[str, Any]]:
        """One row per column, the largest PSI first."""
        rows = [{"column": name, "kind": "prediction" if name == drift.PREDICTION else "model input",
                 "psi": round(d.psi, 5), "ks": None if d.ks is None else round(d.ks, 5), "rows": d.rows,
                 "drifted": d.psi > threshold} for name, d in self.columns.items()]  # fmt: skip
        return sorted(rows, key=lambda r: -r["psi"])


def measure(profile: dict[str, Any], rows: np.ndarray, model_version: str, feature_set: str,
            consumers: tuple[str, ...]) -> DriftReport:  # fmt: skip
    """Drift of `rows` (columns: FEATURE_NAMES, then the prediction) against a checked reference profile."""
    columns = {name: drift.column_drift(profile["features"][name], rows[:, k])
               for k, name in enumerate(fx.FEATURE_NAMES)}  # fmt: skip
    columns[drift.PREDICTION] = drift.column_drift(profile[drift.PREDICTION], rows[:, -1])
    return DriftReport(model_version, feature_set, consumers, len(rows), columns)


def summary(report: DriftReport, threshold: float) -> dict[str, Any]:
    """What the next task needs (an XCom: JSON only)."""
    worst, psi = report.worst
    drifted = sum(r["drifted"] for r in report.table(threshold))
    return {"status": MEASURED, "model_version": report.model_version, "feature_set": report.feature_set,
            "rows": report.rows, "consumers": list(report.consumers), "max_psi": round(psi, 5), "worst": worst,
            "prediction_psi": round(report.columns[drift.PREDICTION].psi, 5), "drifted_columns": drifted,
            "reason": f"max PSI {psi:.3f} ({worst}) over {report.rows} rows of v{report.model_version}"}  # fmt: skip


def unavailable(reason: str, model_version: str | None = None) -> dict[str, Any]:
    """A check that measured nothing: never reported as zero drift, never a reason to retrain."""
    return {"status": UNAVAILABLE, "model_version": model_version, "reason": reason}


@dataclass(frozen=True)
class Decision:
    """What `decide` concludes: retrain or not, and why in one line (recorded on the drift report's run)."""

    retrain: bool
    reason: str


def decide(check: dict[str, Any], threshold: float, last_retrain: dict[str, Any] | None, now: float,
           cooldown_s: float) -> Decision:  # fmt: skip
    """Retrain only on measured drift above `threshold` and at least `cooldown_s` after the last drift-triggered
    retrain (`last_retrain["at"]`, epoch seconds), whatever that one's outcome."""
    if check.get("status") != MEASURED:
        return Decision(False, f"drift unavailable: {check.get('reason')}")
    psi, worst = float(check["max_psi"]), check["worst"]
    if not psi > threshold:
        return Decision(False, f"no drift: max PSI {psi:.3f} ({worst}) <= threshold {threshold}")
    if last_retrain is not None:
        since = now - float(last_retrain["at"])
        if since < cooldown_s:
            ends = datetime.fromtimestamp(float(last_retrain["at"]) + cooldown_s, UTC).strftime("%Y-%m-%d %H:%M UTC")
            return Decision(False, f"drift (max PSI {psi:.3f}, {worst}) but in cool-down: the last drift-triggered "
                                   f"retrain {last_retrain.get('run_id')} was {since / 3600:.1f} h ago; "
                                   f"next possible after {ends}")  # fmt: skip
    return Decision(True, f"drift: max PSI {psi:.3f} ({worst}) > threshold {threshold}")


def figure(report: DriftReport, threshold: float) -> Figure:
    """PSI per column, largest first, with the threshold: the report's plot."""
    from matplotlib.figure import Figure

    table = report.table(threshold)
    fig = Figure(figsize=(9, max(4.0, 0.22 * len(table))), layout="constrained")
    ax = fig.subplots()
    names = [r["column"] for r in table][::-1]
    values = [r["psi"] for r in table][::-1]
    colors = ["#c0392b" if v > threshold else "#2e86c1" for v in values]
    ax.barh(names, values, color=colors)
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold}")
    ax.set_xlabel("PSI against the reference profile")
    ax.set_title(f"Drift of model v{report.model_version}: {report.rows} served rows, "
                 f"{len(report.consumers)} consumer(s)")  # fmt: skip
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(loc="lower right")
    return fig


# --- I/O: what the DAG's tasks call ---------------------------------------------------------------------------


def _redis(settings: Settings) -> Any:
    import redis

    return redis.Redis.from_url(settings.redis_url, socket_timeout=10)


def reference_of(settings: Settings, version: Any) -> dict[str, Any] | None:
    """The version's reference profile from its training run in MLflow; None for a version trained without one."""
    import mlflow
    from mlops.registry import artifact_missing, with_retries

    try:
        profile = with_retries(settings, "reference profile", lambda: mlflow.artifacts.load_dict(
            f"runs:/{version.run_id}/{drift.PROFILE_ARTIFACT}"))  # fmt: skip
    except Exception as exc:
        if artifact_missing(exc):
            return None
        raise
    return drift.check_profile(profile, fx.FEATURE_NAMES)


def compare(settings: Settings, threshold: float, group: str = CONSUMER_GROUP) -> dict[str, Any]:
    """The first task: the champion's latest served window against its reference; a report run in MLflow.
    (`group`: whose windows; the stack's consumer group unless a test runs consumers of its own.)"""
    import mlflow
    from mlops.registry import CHAMPION, client, version_by_alias, with_retries
    from mlops.training.register import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

    client(settings)
    version = version_by_alias(settings, CHAMPION)
    if version is None:
        return unavailable(f"no `{CHAMPION}` version of {settings.model_name} yet")
    number = str(version.version)
    profile = reference_of(settings, version)
    if profile is None:
        return unavailable(f"v{number} has no reference profile (trained before drift profiles)", number)
    windows = [w for w in drift_windows.read_all(_redis(settings), group) if w.model_version == number]
    columns = (*fx.FEATURE_NAMES, drift.PREDICTION)
    rows = drift_windows.combined(windows, number, columns)
    if len(rows) < settings.drift_min_rows:
        return unavailable(f"{len(rows)} served rows of v{number} in the consumers' windows (at least "
                           f"DRIFT_MIN_ROWS={settings.drift_min_rows} needed: score traffic, DRIFT_TRACKING=true)",
                           number)  # fmt: skip
    feature_set = str(version.tags.get("feature_set", "")) or windows[0].feature_set
    report = measure(profile, rows, number, feature_set, tuple(w.consumer for w in windows))
    result = summary(report, threshold)
    experiment = settings.mlflow_experiment + EXPERIMENT_SUFFIX
    created = with_retries(settings, "set experiment", lambda: mlflow.set_experiment(experiment))
    # MLflow 3 opens an untagged experiment in its GenAI view: these runs are tables, plots and metrics.
    client(settings).set_experiment_tag(created.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    with mlflow.start_run(run_name=f"drift-v{number}-{stamp}") as run:
        mlflow.set_tags({"model_name": settings.model_name, "model_version": number, "feature_set": feature_set,
                         "consumers": ",".join(report.consumers), "worst_column": result["worst"]})  # fmt: skip
        mlflow.log_params({"threshold": threshold, "window_rows": report.rows,
                           "oldest_window_age_s": round(time.time() - min(w.updated_at for w in windows))})  # fmt: skip
        mlflow.log_metrics({"max_psi": result["max_psi"], "prediction_psi": result["prediction_psi"],
                            "drifted_columns": result["drifted_columns"]})  # fmt: skip
        mlflow.log_metrics({f"psi_{name}": d.psi for name, d in report.columns.items()})
        mlflow.log_table(pd.DataFrame(report.table(threshold)), artifact_file=REPORT_TABLE)
        mlflow.log_figure(figure(report, threshold), REPORT_PLOT)
        result["mlflow_run_id"] = run.info.run_id
    log.info("drift_monitor: %s; MLflow run %s", result["reason"], result["mlflow_run_id"])
    return result


def last_retrain(settings: Settings) -> dict[str, Any] | None:
    """The record of the last drift-triggered retrain (None if none): its time starts the cool-down."""
    raw = _redis(settings).get(LAST_RETRAIN_KEY)
    return None if raw is None else json.loads(raw)


def decide_and_record(settings: Settings, check: dict[str, Any], threshold: float, now: float | None = None,
                      monitor_run_id: str | None = None) -> str:  # fmt: skip
    """The second task: the decision, as tags of the report's MLflow run; on retrain, the trigger recorded
    (that starts the cool-down) and the `mlops_platform` run id returned; "" otherwise (the trigger is skipped).

    A retry of the same drift_monitor run (`monitor_run_id`) after the record was written gets the same run
    id back, not a cool-down refusal of its own trigger.
    """
    now = time.time() if now is None else now
    last = last_retrain(settings)
    if monitor_run_id and last is not None and last.get("monitor_run_id") == monitor_run_id:
        return str(last["run_id"])
    decision = decide(check, threshold, last, now, settings.drift_retrain_cooldown_hours * 3600)
    log.info("drift_monitor: %s: %s", "RETRAIN" if decision.retrain else "no retrain", decision.reason)
    run_id = RUN_ID_PREFIX + datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ") if decision.retrain else ""
    if check.get("mlflow_run_id"):
        from mlops.registry import client

        c = client(settings)
        c.set_tag(check["mlflow_run_id"], "decision", "retrain" if decision.retrain else "none")
        c.set_tag(check["mlflow_run_id"], "decision_reason", decision.reason[:500])
        if run_id:
            c.set_tag(check["mlflow_run_id"], "triggered_run_id", run_id)
    if run_id:  # last: everything before it may fail and be retried without starting a cool-down
        record = {"at": now, "run_id": run_id, "monitor_run_id": monitor_run_id,
                  "model_version": check["model_version"], "max_psi": check["max_psi"], "worst": check["worst"],
                  "mlflow_run_id": check.get("mlflow_run_id")}  # fmt: skip
        _redis(settings).set(LAST_RETRAIN_KEY, json.dumps(record))
    return run_id
