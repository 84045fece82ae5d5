"""What a pipeline run did, said in a few lines at the end of `./run.sh` and `./run.sh pipeline`.

The facts come from where the run recorded them, never from the run's own log: the ingest manifest
(dataset, source, rows; `layout.raw_prefix`), the split manifest (strategy, counts, users), and MLflow (the
version the run registered: its metrics beside the baselines, and the promotion decision tagged on its
run). Each part is read on its own: a part that cannot be read says why, and the rest is still shown.
`gather` reads, `render` formats (pure, tested on its own).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from mlops.settings import Settings

# The model's headline metric first, then the others of the same ranking at k = 10 and the scorer's AUC.
HEADLINE = ("ndcg_at_10", "precision_at_10", "recall_at_10", "map_at_10", "test_auc")
BASELINES = {
    "popularity": "baseline_popularity_ndcg_at_10",
    "co-occurrence": "baseline_cooccurrence_ndcg_at_10",
    "EASE": "baseline_ease_ndcg_at_10",
}
LABELS = {"ndcg_at_10": "nDCG@10", "precision_at_10": "precision@10", "recall_at_10": "recall@10",
          "map_at_10": "MAP@10", "test_auc": "AUC (P(like))"}  # fmt: skip


@dataclass(frozen=True)
class DatasetFacts:
    """What the manifests say of the data (users from the split's); a count they lack is None, shown as "?"."""

    name: str
    source: str
    synthetic: bool
    ratings: int | None
    movies: int | None
    users: int | None  # from the split (every user with a rating is in train)


@dataclass(frozen=True)
class SplitFacts:
    """What the split manifest says of the split; a value it lacks is None."""

    strategy: str
    test_fraction: float | None
    seed: int | None
    train: int | None
    test: int | None
    validation: int | None = None  # runs split in three parts (issue 14); None: an older two-part split


@dataclass(frozen=True)
class ModelFacts:
    """The version the run registered in MLflow, its metrics and the promotion decision tagged on it."""

    name: str
    version: str
    mlflow_run_id: str
    experiment_id: str
    metrics: dict[str, float]
    decision: str | None  # "champion", "challenger", or None when evaluate_and_promote has not decided
    reason: str | None
    family: str | None = None  # the model family top-k ranks with (`model_family`, chosen on validation)


@dataclass(frozen=True)
class RunSummary:
    """All that is known of a run; each part None when it could not be read, and `problems` says why."""

    run_id: str
    dataset: DatasetFacts | None = None
    split: SplitFacts | None = None
    model: ModelFacts | None = None
    problems: dict[str, str] = field(default_factory=dict)  # part -> why it could not be read


def _n(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def dataset_line(d: DatasetFacts) -> str:
    """e.g. `SYNTHETIC DATA (not MovieLens): synthetic (fallback from auto: ...): 20,000 ratings, ...`."""
    counts = f"{_n(d.ratings)} ratings, {_n(d.users)} users, {_n(d.movies)} movies"
    if d.synthetic:
        return f"SYNTHETIC DATA, not MovieLens ({d.source}): {counts}"
    source = d.source if d.name in d.source else f"{d.name}, {d.source}"
    return f"{source}: {counts}"


def split_line(s: SplitFacts) -> str:
    """e.g. `temporal, test fraction 0.2, seed 42: 80,000 train / 20,000 test ratings`."""
    fraction = "" if s.test_fraction is None else f", test fraction {s.test_fraction:g}"
    seed = "" if s.seed is None else f", seed {s.seed}"
    validation = "" if s.validation is None else f" / {_n(s.validation)} validation"
    return f"{s.strategy}{fraction}{seed}: {_n(s.train)} train{validation} / {_n(s.test)} test ratings"


def metrics_lines(metrics: Mapping[str, float]) -> list[str]:
    """The model's nDCG@10 beside each baseline's, then its other headline metrics."""
    if "ndcg_at_10" not in metrics:
        return ["no ndcg_at_10 logged on the training run"]
    beside = [f"model {metrics['ndcg_at_10']:.4f}"] + [
        f"{label} {metrics[key]:.4f}" for label, key in BASELINES.items() if key in metrics
    ]
    others = [f"{LABELS[k]} {metrics[k]:.4f}" for k in HEADLINE[1:] if k in metrics]
    return ["nDCG@10: " + " | ".join(beside), ", ".join(others)] if others else ["nDCG@10: " + " | ".join(beside)]


def decision_line(m: ModelFacts) -> str:
    """Whether the version now serves and the reason recorded for the decision, on one line."""
    if m.decision is None:
        return f"v{m.version} not decided yet (evaluate_and_promote did not run)"
    verdict = "is the new CHAMPION (serving it)" if m.decision == "champion" else f"stays {m.decision.upper()}"
    reason = " ".join((m.reason or "no reason recorded").split())
    return f"v{m.version} {verdict}: {reason}"


# MLflow 3's UI opens in its GenAI mode unless the link (or the browser's last choice) says otherwise.
MLFLOW_VIEW = "?workflowType=machine_learning"


def mlflow_urls(tracking_uri: str, m: ModelFacts) -> dict[str, str]:
    """Deep links into the MLflow UI (hash routes), in its model-training view."""
    base = tracking_uri.rstrip("/")
    return {
        "MLflow model version": f"{base}/#/models/{quote(m.name, safe='')}/versions/{m.version}{MLFLOW_VIEW}",
        "MLflow training run": f"{base}/#/experiments/{m.experiment_id}/runs/{m.mlflow_run_id}{MLFLOW_VIEW}",
        "MLflow experiment": f"{base}/#/experiments/{m.experiment_id}{MLFLOW_VIEW}",
    }


def render(summary: RunSummary, urls: Mapping[str, str], tracking_uri: str = "") -> str:
    """The summary as text: one labelled line per fact, then where to look next."""
    lines = [f"== Summary of run {summary.run_id}"]

    def row(label: str, text: str) -> None:
        lines.append(f"  {label:<10} {text}")

    def missing(part: str) -> str:
        return f"- ({summary.problems.get(part, 'not recorded')})"

    row("dataset", dataset_line(summary.dataset) if summary.dataset else missing("dataset"))
    row("split", split_line(summary.split) if summary.split else missing("split"))
    m = summary.model
    if m is None:
        row("model", missing("model"))
    else:
        row("model", f"{m.name} v{m.version}" + (f", family {m.family} (chosen on validation)" if m.family else ""))
        for text in metrics_lines(m.metrics):
            row("", text)
        row("promotion", decision_line(m))
    links = dict(urls)
    if m is not None and tracking_uri:
        links.update(mlflow_urls(tracking_uri, m))
    if links:
        lines.append("  look next:")
        width = max(len(k) for k in links)
        lines += [f"    {name:<{width}}  {url}" for name, url in links.items()]
    return "\n".join(lines)


# --- reading the facts ------------------------------------------------------------------------------------


def _dataset(settings: Settings, run_id: str) -> tuple[DatasetFacts, dict[str, Any]]:
    from mlops.layout import raw_prefix, split_key
    from mlops.spark_io import read_manifest

    raw = read_manifest(raw_prefix(run_id), settings)
    counts = raw.get("row_counts") or {}
    try:
        split = read_manifest(split_key(run_id, "train"), settings)
    except Exception:  # the split may not have run: the dataset line still stands
        split = {}
    users = (split.get("users") or {}).get("train")
    facts = DatasetFacts(
        name=str(raw.get("dataset", "?")),
        source=str(raw.get("source", "?")),
        synthetic=raw.get("kind") == "synthetic",
        ratings=counts.get("ratings"),
        movies=counts.get("movies"),
        users=None if users is None else int(users),
    )
    return facts, split


def _split(split: Mapping[str, Any]) -> SplitFacts:
    counts = split.get("counts") or {}
    return SplitFacts(
        strategy=str(split["strategy"]),
        test_fraction=split.get("test_fraction"),
        seed=split.get("seed"),
        train=counts.get("train"),
        test=counts.get("test"),
        validation=counts.get("validation"),
    )


def _model(settings: Settings, run_id: str) -> ModelFacts:
    from mlops.registry import client, version_of_run, with_retries

    version = version_of_run(settings, run_id)
    c = client(settings)
    run = with_retries(settings, "run lookup", lambda: c.get_run(version.run_id))
    tags = run.data.tags
    return ModelFacts(
        name=settings.model_name,
        version=str(version.version),
        mlflow_run_id=run.info.run_id,
        experiment_id=str(run.info.experiment_id),
        metrics=dict(run.data.metrics),
        decision=tags.get("promotion_decision"),
        reason=tags.get("promotion_reason"),
        family=(version.tags or {}).get("model_family"),
    )


def _why(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:160]


def gather(settings: Settings, run_id: str) -> RunSummary:
    """Read the run's facts; a part that cannot be read is named in `problems`, never raised."""
    problems: dict[str, str] = {}
    dataset = split = model = None
    try:
        dataset, split_manifest = _dataset(settings, run_id)
        split = _split(split_manifest) if split_manifest else None
        if split is None:
            problems["split"] = "no split manifest for this run"
    except Exception as exc:
        problems["dataset"] = problems["split"] = _why(exc)
    try:
        model = _model(settings, run_id)
    except Exception as exc:
        problems["model"] = _why(exc)
    return RunSummary(run_id, dataset, split, model, problems)


def next_urls(settings: Settings, run_id: str) -> dict[str, str]:
    """Where to look next, for `./run.sh pipeline` (which has no backend to ask for its URLs)."""
    from mlops.orchestration.steps import DAG_ID

    return {
        "Airflow run": f"{settings.airflow_url.rstrip('/')}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}",
        "Console": settings.console_url,
        "try the stream": "./run.sh recommend USER_ID   (or: ./run.sh status)",
    }


def summarize(settings: Settings, run_id: str) -> str:
    """`gather` then `render`: the text `./run.sh pipeline` ends with."""
    return render(gather(settings, run_id), next_urls(settings, run_id), settings.mlflow_tracking_uri)
