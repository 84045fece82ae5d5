"""`./run.sh promote` and the DAG task of the same name: the online champion/challenger decision.

Reads the feedback credited to the current champion's and challenger's versions (`mlops.feedback`),
applies the fixed-horizon rule of `mlops.online_metrics.decide` (z-tests clustered by user, one-sided,
Bonferroni over the metrics compared, once both variants have PROMOTION_MIN_USERS users on a metric), records
the first decision taken at that horizon and repeats it at every later call (one look, however often this
runs), and only on a significant win promotes: the challenger's feature set becomes `fs:current`, the
`champion` alias moves to the challenger's version and the `challenger` alias is removed (the old champion
keeps its version, untagged as champion). Every decision, promotion or not, is written to MLflow: tags
`online_decision` and `online_reason` on both versions, and the whole decision as `online_promotion.json`
on the challenger's training run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mlops.feature_store import RedisFeatureStore
from mlops.feedback import FeedbackStore
from mlops.online_metrics import Decision, auc_summary, decide, hit_rate, plan
from mlops.registry import CHALLENGER, CHAMPION, client, version_by_alias, with_retries
from mlops.schemas import utc_now_iso
from mlops.settings import Settings, get_settings

log = logging.getLogger(__name__)

PROMOTED, KEPT, NOTHING = "promoted", "kept", "nothing_to_decide"
DECISION_ARTIFACT = "online_promotion.json"
MAX_TAG_CHARS = 4000  # MLflow's tag values are bounded; the artifact holds the whole decision


@dataclass(frozen=True)
class Outcome:
    """What `promote` did: `status` PROMOTED, KEPT or NOTHING, and why in one line."""

    status: str
    reason: str
    decision: Decision | None = None
    champion_version: str | None = None
    challenger_version: str | None = None


def evaluate(settings: Settings, store: FeedbackStore | None = None) -> tuple[Outcome, Any, Any]:
    """The decision without acting on it: (outcome, champion version, challenger version)."""
    champion = version_by_alias(settings, CHAMPION)
    challenger = version_by_alias(settings, CHALLENGER)
    if champion is None:
        return Outcome(NOTHING, f"{settings.model_name} has no `{CHAMPION}` yet (run the pipeline)"), None, None
    if challenger is None or challenger.version == champion.version:
        reason = f"{settings.model_name} has no `{CHALLENGER}` (a version that lost offline): nothing to compare"
        return Outcome(NOTHING, reason, champion_version=str(champion.version)), champion, None
    store = store or FeedbackStore.from_settings(settings)
    versions = str(champion.version), str(challenger.version)
    recorded = store.decision(*versions)
    decision = decide(store.stats(CHAMPION, versions[0]), store.stats(CHALLENGER, versions[1]),
                      settings.promotion_min_users, settings.promotion_alpha)  # fmt: skip
    if recorded is None and decision.final:
        recorded = store.record_decision(*versions, {"promote": decision.promote, "reason": decision.reason,
                                                     "decided_at": utc_now_iso()})  # fmt: skip
        if recorded["reason"] == decision.reason:
            recorded = None  # this call took it: report it as it is
    if recorded is not None:  # taken at the horizon before: the data that came since is not tested again
        status = PROMOTED if recorded["promote"] else KEPT
        reason = f"decided at the horizon on {recorded['decided_at']} (one look): {recorded['reason']}"
        return Outcome(status, reason, decision, *versions), champion, challenger
    status = PROMOTED if decision.promote else KEPT
    return Outcome(status, decision.reason, decision, *versions), champion, challenger


def promote(settings: Settings, store: FeedbackStore | None = None) -> Outcome:
    """Decide, act on a significant win, and record the decision in MLflow."""
    outcome, champion, challenger = evaluate(settings, store)
    if outcome.decision is None:
        return outcome
    if outcome.status == PROMOTED:
        features = RedisFeatureStore.from_settings(settings)
        feature_set = (challenger.tags or {}).get("feature_set", "")
        if not feature_set or not features.exists(feature_set):
            outcome = Outcome(KEPT, f"challenger v{challenger.version} won, but its feature set {feature_set!r} is "
                                    f"no longer in Redis, so it cannot serve everyone: {outcome.reason}",
                              outcome.decision, outcome.champion_version, outcome.challenger_version)  # fmt: skip
        else:
            features.switch_to(feature_set)
            c = client(settings)
            with_retries(
                settings,
                "set alias",
                lambda: c.set_registered_model_alias(settings.model_name, CHAMPION, challenger.version),
            )
            with_retries(settings, "delete alias",
                         lambda: c.delete_registered_model_alias(settings.model_name, CHALLENGER))  # fmt: skip
    _record(settings, outcome, champion, challenger)
    log.info("online promotion: %s (%s)", outcome.status, outcome.reason)
    return outcome


def _record(settings: Settings, outcome: Outcome, champion: Any, challenger: Any) -> None:
    """Tags on both versions (one line each) and the whole decision on the challenger's training run."""
    c = client(settings)
    reason = outcome.reason[:MAX_TAG_CHARS]
    for version, decision in ((champion, "demoted" if outcome.status == PROMOTED else "kept"),
                              (challenger, outcome.status)):  # fmt: skip
        c.set_model_version_tag(settings.model_name, version.version, "online_decision", decision)
        c.set_model_version_tag(settings.model_name, version.version, "online_reason", reason)
    assert outcome.decision is not None
    record = {"status": outcome.status, "champion_version": outcome.champion_version,
              "challenger_version": outcome.challenger_version, **outcome.decision.as_dict()}  # fmt: skip
    if challenger.run_id:
        c.log_dict(challenger.run_id, record, DECISION_ARTIFACT)


def render(outcome: Outcome, organic: dict[str, int] | None = None) -> str:
    """The decision for a person: one line per variant with its metrics and 95% intervals, then the verdict."""
    lines = []
    if outcome.decision is not None:
        for label, stats in (("champion", outcome.decision.champion), ("challenger", outcome.decision.challenger)):
            lines.append(f"  {label:<10} v{stats.model_version:<5} feedback credited {stats.credited:<7} "
                         f"hit rate {hit_rate(stats)}   AUC {auc_summary(stats)}")  # fmt: skip
    if organic:
        lines.append("  organic feedback (not credited): " + ", ".join(f"{k} {v}" for k, v in sorted(organic.items())))
    verdict = {PROMOTED: "PROMOTED the challenger", KEPT: "kept the champion", NOTHING: "nothing to decide"}
    lines.append(f"{verdict[outcome.status]}: {outcome.reason}")
    return "\n".join(lines)


def plan_text(settings: Settings, store: FeedbackStore) -> str:
    """`promote --plan`: the horizon, what each metric's test detects there, and the users still needed."""
    outcome, champion, challenger = evaluate(settings, store)
    if outcome.decision is None:
        return f"nothing to plan: {outcome.reason}"
    decision = outcome.decision
    lines = [f"fixed horizon: {settings.promotion_min_users} users per variant and metric (PROMOTION_MIN_USERS), "
             f"one-sided alpha {settings.promotion_alpha} over the metrics compared"]  # fmt: skip
    lines += [
        p.line(settings.promotion_min_users)
        for p in plan(decision.champion, decision.challenger, settings.promotion_min_users, settings.promotion_alpha)
    ]
    if store.decision(str(champion.version), str(challenger.version)) is not None:
        lines.append(f"already decided: {outcome.reason}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    """Exit 0 whatever the decision (not promoting is an answer, not a failure); 1 when it could not be made."""
    parser = argparse.ArgumentParser(prog="./run.sh promote", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the decision as one JSON object")
    parser.add_argument("--plan", action="store_true",
                        help="say what the test can detect at the horizon and how many more users it needs; "
                             "act on nothing (a look at or past the horizon still fixes the one decision)")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings or get_settings()
    try:
        store = FeedbackStore.from_settings(settings)
        if args.plan:
            print(plan_text(settings, store))
            return 0
        outcome = promote(settings, store)
        organic = store.organic()
    except Exception as exc:
        print(f"promote: could not decide ({type(exc).__name__}: {str(exc)[:300]}); is the stack up? "
              "./run.sh status", file=sys.stderr)  # fmt: skip
        return 1
    if args.json:
        doc = {"status": outcome.status, "reason": outcome.reason, "organic": organic,
               **(outcome.decision.as_dict() if outcome.decision else {})}  # fmt: skip
        print(json.dumps(doc))
    else:
        print(render(outcome, organic))
    return 0


if __name__ == "__main__":
    sys.exit(main())
