"""The champion/challenger rule as a pure function: metrics and tags in, decision and reason out.

WHY pure: the rule decides what every user is served, so it must be readable and testable on its own;
`registry.promote` does the MLflow reads (the candidate's metrics, the champion, re-scoring it) around
it and the writes (alias, tags, promotion.json) after it.

The rule, in order:
1. A version that is already champion stays champion.
2. No version becomes champion unless its test ndcg_at_10 is at least the best baseline's of its own run
   (the first version included): below it, it stays challenger and serving keeps what it had.
3. No champion yet: the candidate becomes champion.
4. The champion's lineage shows another split (it may have trained on this run's test rows, so re-scoring
   it here would flatter it): the candidate must also reach AUC_FLOOR on its own (`lineage_changed`).
5. The champion cannot be loaded (its files are gone, or it is a format this code cannot serve): it cannot
   serve, the candidate replaces it.
6. Same split: the candidate wins if its ndcg_at_10 beats the champion's, re-measured on this run's test;
   a tie is enough when only the candidate serves every ingested rating (a serving set beside its evaluation
   set, issue 26): equal on the test, it answers users from more of what they did.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mlops.variants import CHALLENGER, CHAMPION

# The version tags that identify a split: equal on two versions means the same train/validation/test rows.
LINEAGE_KEYS = ("dataset_checksum", "split_strategy", "seed", "test_fraction", "validation_fraction")
SAME_SPLIT = "same_split"
LINEAGE_CHANGED = "lineage_changed"
BELOW_BASELINE = "below_baseline"
AUC_FLOOR = 0.70  # test_auc a candidate must reach when it cannot be compared with the champion


@dataclass(frozen=True)
class Champion:
    """The current champion as the rule needs it; `ndcg` is re-measured on the candidate's test data (same
    split only), `gone` says why it cannot be loaded when its artifacts are confirmed missing."""

    version: str
    tags: Mapping[str, str]
    ndcg: float | None = None
    gone: str | None = None


@dataclass(frozen=True)
class Verdict:
    decision: str  # CHAMPION or CHALLENGER
    basis: str
    reason: str  # one short line (it ends up in a tag)
    replaced: bool = False  # the champion is replaced because its artifacts are gone


def same_split(candidate_tags: Mapping[str, str], champion_tags: Mapping[str, str]) -> bool:
    """True only when both versions carry every LINEAGE_KEYS tag, known and equal: then the split is the
    same (deterministic given these), so the champion never trained on the candidate's test rows."""
    return all(
        candidate_tags.get(k) not in (None, "", "unknown") and champion_tags.get(k) == candidate_tags.get(k)
        for k in LINEAGE_KEYS
    )


def serves_every_rating(tags: Mapping[str, str]) -> bool:
    """Whether a version serves from a serving set of every ingested rating, beside the evaluation set it was
    measured on (versions trained before serving sets had one set, their `feature_set`)."""
    evaluation = tags.get("evaluation_feature_set")
    return bool(evaluation) and evaluation != tags.get("feature_set")


def best_baseline(metrics: Mapping[str, float]) -> tuple[str, float] | None:
    """(name, ndcg_at_10) of the best `baseline_*_ndcg_at_10` of a run, None when it logged none."""
    baselines = {
        k.removeprefix("baseline_").removesuffix("_ndcg_at_10"): v
        for k, v in metrics.items()
        if k.startswith("baseline_") and k.endswith("_ndcg_at_10")
    }
    if not baselines:
        return None
    best = max(baselines, key=lambda k: baselines[k])
    return best, baselines[best]


def beats_baselines(metrics: Mapping[str, float]) -> tuple[bool, str]:
    """(passes, why): test ndcg_at_10 at least the best baseline's of the same run."""
    ndcg = metrics.get("ndcg_at_10", 0.0)
    best = best_baseline(metrics)
    if best is None:
        return False, "no baseline figures in its run"
    ok = ndcg >= best[1]
    return ok, f"ndcg_at_10 {ndcg:.4f} {'>=' if ok else '<'} {best[0]} {best[1]:.4f}"


def stands_alone(metrics: Mapping[str, float]) -> tuple[bool, str]:
    """(passes, why): at least every baseline of its own run, and the AUC floor.
    e.g. `ndcg_at_10 0.4712 >= ease 0.4650, test_auc 0.781 >= 0.7`."""
    ok, why = beats_baselines(metrics)
    auc = metrics.get("test_auc", 0.0)
    floor = auc >= AUC_FLOOR
    return ok and floor, f"{why}, test_auc {auc:.3f} {'>=' if floor else '<'} {AUC_FLOOR}"


def needs_champion_score(
    candidate_version: str, metrics: Mapping[str, float], tags: Mapping[str, str], champion: Champion | None
) -> bool:
    """Whether the rule will compare with the champion re-measured on this run's test (what costs I/O)."""
    return (
        champion is not None
        and champion.version != candidate_version
        and beats_baselines(metrics)[0]
        and same_split(tags, champion.tags)
    )


def decide(
    candidate_version: str, metrics: Mapping[str, float], tags: Mapping[str, str], champion: Champion | None
) -> Verdict:
    """The rule of the module docstring."""
    if champion is not None and champion.version == candidate_version:
        return Verdict(CHAMPION, SAME_SPLIT, "already champion")
    ok, why = beats_baselines(metrics)
    if not ok:
        return Verdict(CHALLENGER, BELOW_BASELINE, f"below its run's best baseline: {why}")
    if champion is None:
        return Verdict(CHAMPION, SAME_SPLIT, f"no champion yet; {why}")
    if not same_split(tags, champion.tags):
        passes, alone = stands_alone(metrics)
        differs = [k for k in LINEAGE_KEYS if champion.tags.get(k) != tags.get(k)]
        reason = f"{LINEAGE_CHANGED} vs v{champion.version} ({', '.join(differs) or 'unknown'}): {alone}"
        return Verdict(CHAMPION if passes else CHALLENGER, LINEAGE_CHANGED, reason)
    if champion.gone is not None:
        reason = f"champion v{champion.version} cannot be loaded ({champion.gone[:80]}), so it cannot serve"
        return Verdict(CHAMPION, SAME_SPLIT, reason, replaced=True)
    if champion.ndcg is None:
        raise ValueError("same split: the champion's ndcg_at_10 on this run's test data is needed")
    candidate = metrics.get("ndcg_at_10", 0.0)
    fresher = serves_every_rating(tags) and not serves_every_rating(champion.tags)
    won = candidate > champion.ndcg or (fresher and candidate >= champion.ndcg)
    sign = (">=" if fresher else ">") if won else ("<" if fresher else "<=")
    return Verdict(
        CHAMPION if won else CHALLENGER,
        SAME_SPLIT,
        f"ndcg_at_10 {candidate:.4f} {sign} champion v{champion.version}'s {champion.ndcg:.4f} on this run's test "
        f"data (same split){'; only the candidate serves every ingested rating' if fresher else ''}",
    )
