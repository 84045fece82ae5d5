"""Which model family a run registers: the one with the best validation nDCG@10.

Learned families (`ranker`, `blend`) are scored out of fold (`learners.cross_fit`: never on a user whose
labels they learned); single-retriever families through the serving path on the selection world. All
of them on the same validation users, with the same candidates serving would use.
"""

from __future__ import annotations

from typing import Any

from mlops import evaluation
from mlops.model import learners
from mlops.model.families import FAMILIES
from mlops.model.recommender import Recommender
from mlops.model.retrievers import Retrievers
from mlops.training.evaluate import rank_all
from mlops.training.fit import user_rows
from mlops.training.offline_data import OfflineData


def family_figures(
    selection: OfflineData, retrievers: Retrievers, table: learners.Table, seed: int, ranker_params: dict[str, Any]
) -> dict[str, float]:
    """Validation nDCG@10 of every family of FAMILIES (`selection.test` is the validation split)."""
    relevant, _ = evaluation.relevant_sets(selection.test)
    users = sorted(relevant)
    known = user_rows(selection)
    # What serving answers a user the selection world does not know (the popular list), whatever the family.
    cold = rank_all(Recommender(None, FAMILIES["popularity"], None, retrievers.state()), selection,
                    [u for u in users if u not in known])  # fmt: skip
    out = {}
    for name, fam in FAMILIES.items():
        if fam.learned:
            recs = cold | learners.cross_fit(fam, table, seed, ranker_params if fam.scorer == "booster" else None)
        else:
            recs = rank_all(Recommender(None, fam, None, retrievers.state()), selection, users)
        out[name] = evaluation.ranking_metrics(recs, relevant)["ndcg_at_10"]
    return out


def choose(figures: dict[str, float]) -> str:
    """The family with the best figure; on a tie the one without learned state (the simpler model)."""
    return max(figures, key=lambda name: (figures[name], not FAMILIES[name].learned))
