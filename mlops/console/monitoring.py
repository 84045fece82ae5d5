"""The Model page's production figures: drift per model input as the consumers measure it, and the online
champion/challenger experiment as `./run.sh promote` would judge it.

Drift comes from the consumers' own gauges (their `/metrics`): the console shows what the alert rules
see, and never recomputes it from another sample. The experiment comes from the feedback counts in Redis
and the same pure rule `./run.sh promote` applies (`online_metrics.decide`), without acting on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import requests
from prometheus_client.parser import text_string_to_metric_families

from mlops import online_metrics
from mlops.consumer import drift_watch as dw
from mlops.drift import PSI_THRESHOLD
from mlops.feedback import FeedbackStore
from mlops.settings import Settings
from mlops.variants import CHALLENGER, CHAMPION

TIMEOUT_S = 2.0


@dataclass(frozen=True)
class FeatureDrift:
    """One model input (or the prediction) of one model version: the worst PSI and KS over the consumers."""

    name: str
    psi: float
    ks: float | None

    @property
    def drifted(self) -> bool:
        """Above the threshold the alert rule and `drift_monitor` use by default."""
        return self.psi > PSI_THRESHOLD


@dataclass
class DriftView:
    """What the consumers report for the version they serve; `problem` says in words why it is empty."""

    model_version: str | None = None
    window_rows: int = 0
    features: list[FeatureDrift] = field(default_factory=list)
    prediction: FeatureDrift | None = None
    problem: str | None = None


def parse_drift(texts: list[str]) -> DriftView:
    """Drift gauges of several consumers' `/metrics`, worst per feature (a drifted consumer is a drifted model)."""
    psi: dict[tuple[str, str], float] = {}
    ks: dict[tuple[str, str], float] = {}
    rows: dict[str, float] = {}
    available: dict[str, float] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                version = s.labels.get("model_version", "")
                if s.name == dw.FEATURE_PSI:
                    key = (version, s.labels["feature"])
                    psi[key] = max(psi.get(key, 0.0), s.value)
                elif s.name == dw.FEATURE_KS:
                    key = (version, s.labels["feature"])
                    ks[key] = max(ks.get(key, 0.0), s.value)
                elif s.name == dw.PREDICTION_PSI:
                    psi[(version, "")] = max(psi.get((version, ""), 0.0), s.value)
                elif s.name == dw.PREDICTION_KS:
                    ks[(version, "")] = max(ks.get((version, ""), 0.0), s.value)
                elif s.name == dw.WINDOW_ROWS:
                    rows[version] = rows.get(version, 0.0) + s.value
                elif s.name == dw.REFERENCE_AVAILABLE:
                    available[version] = max(available.get(version, 0.0), s.value)
    versions = sorted(set(rows) | set(available) | {v for v, _ in psi}, key=lambda v: (len(v), v))
    if not versions:
        return DriftView(problem="No consumer reports drift (none answers, or DRIFT_TRACKING is off).")
    version = versions[-1]  # the newest version served; an older one only lingers until its gauges clear
    view = DriftView(model_version=version, window_rows=int(rows.get(version, 0)))
    if not available.get(version):
        view.problem = (f"Drift is unavailable for v{version}: it has no reference profile (a version logged "
                        "before drift tracking), so there is nothing to compare with.")  # fmt: skip
        return view
    features = [FeatureDrift(name, value, ks.get((v, name))) for (v, name), value in psi.items() if v == version]
    view.prediction = next((f for f in features if f.name == ""), None)
    view.features = sorted((f for f in features if f.name), key=lambda f: -f.psi)
    if not view.features:
        view.problem = f"v{version} has a reference profile, but its window holds too few rows to measure yet."
    return view


def drift(metric_urls: list[str]) -> DriftView:
    """Scrape the consumers and reduce their drift gauges (`parse_drift`)."""
    texts = []
    for url in metric_urls:
        try:
            response = requests.get(url, timeout=TIMEOUT_S)
            response.raise_for_status()
            texts.append(response.text)
        except requests.RequestException:
            continue
    if not texts:
        return DriftView(problem=f"No consumer answered at {', '.join(metric_urls) or '(none configured)'}.")
    return parse_drift(texts)


@dataclass(frozen=True)
class OnlineView:
    """The online experiment: the share, each variant's figures, and what the promotion rule says now."""

    share: float
    share_problem: str | None
    rows: list[tuple[str, str | None, int, str, str]]  # variant, version, credited, hit rate, AUC (CIs, users)
    verdict: str


def online(settings: Settings, champion_version: str | None, challenger_version: str | None) -> OnlineView:
    """Each variant's feedback so far and the rule's verdict, read from Redis (nothing is promoted here)."""
    share, problem = settings.challenger_share()
    store = FeedbackStore.from_settings(settings)
    stats = {CHAMPION: store.stats(CHAMPION, champion_version), CHALLENGER: store.stats(CHALLENGER, challenger_version)}
    rows = [(variant, s.model_version, s.credited, str(online_metrics.hit_rate(s)), str(online_metrics.auc_summary(s)))
            for variant, s in stats.items()]  # fmt: skip
    if challenger_version is None or challenger_version == champion_version:
        verdict = "No challenger to compare: every user is served by the champion."
    else:
        recorded = store.decision(champion_version or "", challenger_version)
        if recorded is not None:  # the one look at the horizon was taken: later data is not tested again
            verdict = (f"Decided at the horizon on {recorded['decided_at']}: "
                       f"{'promote the challenger' if recorded['promote'] else 'keep the champion'}: "
                       f"{recorded['reason']}")  # fmt: skip
        else:
            decision = online_metrics.decide(stats[CHAMPION], stats[CHALLENGER], settings.promotion_min_users,
                                             settings.promotion_alpha)  # fmt: skip
            verdict = ("./run.sh promote would PROMOTE the challenger: " if decision.promote
                       else "./run.sh promote would keep the champion: ") + decision.reason  # fmt: skip
    return OnlineView(share, problem, rows, verdict)
