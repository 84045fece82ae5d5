"""Hot reload: a background thread follows the registry aliases and swaps the rankers atomically.

The consumer takes `holder.ranker` (and `holder.challenger`) once per micro-batch, so a batch is answered
by exactly one model version per variant and a swap never fails or mixes a request. Loading happens off
the consuming thread, so the stream keeps flowing on the old model until the new one is ready.

The challenger (only followed when CHALLENGER_TRAFFIC > 0) is best effort: no `challenger` alias, one on
the champion's own version, or one that cannot be loaded (e.g. its feature set expired) leaves
`holder.challenger` None, which sends every user to the champion; each such state is logged once, when
it begins, not at every check.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

FAILED_LOAD_RETRY_S = 300.0
"""A challenger version that failed to load is tried again this often (a load costs seconds)."""


class RankerHolder:
    """The ranker currently serving; replacing the reference is atomic in Python."""

    def __init__(self) -> None:
        self.ranker: Any | None = None
        self.challenger: Any | None = None
        """The ranker behind the `challenger` alias while it serves a share of the users, else None."""
        self.on_swap: Callable[[Any], None] | None = None
        self.on_challenger: Callable[[Any | None], None] | None = None

    def swap(self, ranker: Any) -> None:
        """Serve `ranker` from the next batch on, telling the `on_swap` hook (the drift watch) about it."""
        previous, self.ranker = self.ranker, ranker
        if self.on_swap is not None:
            self.on_swap(ranker)
        log.info(
            "serving model version %s (feature set %s)%s", ranker.info.model_version, ranker.info.feature_set,
            f", replacing {previous.info.model_version}" if previous is not None else "",
        )  # fmt: skip

    def set_challenger(self, ranker: Any | None) -> None:
        """Start (a ranker) or stop (None) serving a challenger to its share of the users."""
        previous, self.challenger = self.challenger, ranker
        if self.on_challenger is not None:
            self.on_challenger(ranker)
        if ranker is not None:
            log.info("challenger: model version %s (feature set %s) serves its share of the users",
                     ranker.info.model_version, ranker.info.feature_set)  # fmt: skip
        elif previous is not None:
            log.warning("challenger v%s retired: all traffic goes to the champion", previous.info.model_version)


@dataclass(frozen=True)
class ChallengerSource:
    """Where the challenger comes from: the alias's version now (None: no alias), and how to load it."""

    current_version: Callable[[], str | None]
    load: Callable[[], Any]
    share: float


class ModelWatcher(threading.Thread):
    """Polls `current_version()` every `interval` seconds and loads + swaps when it differs."""

    def __init__(
        self, holder: RankerHolder, current_version: Callable[[], str | None], load: Callable[[], Any],
        interval: float, stop: threading.Event, challenger: ChallengerSource | None = None,
    ) -> None:  # fmt: skip
        super().__init__(name="model-watcher", daemon=True)
        self.holder, self.current_version, self.load = holder, current_version, load
        self.interval, self.stop = interval, stop
        self.challenger = challenger
        self.challenger_state: str | None = None
        """Why no challenger serves (None while one does, or before the first check); logged when it changes."""
        self._failed: tuple[str, float] | None = None  # (challenger version, when its load failed)

    def check_once(self) -> bool:
        """Swap if the champion alias moved (True when a new champion went live); then follow the challenger."""
        swapped = self._follow_champion()
        if self.challenger is not None and self.holder.ranker is not None:
            self._follow_challenger(self.challenger)
        return swapped

    def _follow_champion(self) -> bool:
        wanted = self.current_version()
        serving = self.holder.ranker
        if wanted is None or (serving is not None and str(serving.info.model_version) == wanted):
            return False
        log.info("champion is version %s: loading it (the current model keeps serving meanwhile)", wanted)
        self.holder.swap(self.load())
        return True

    def _follow_challenger(self, source: ChallengerSource) -> None:
        """Load, swap or retire the challenger; never raises (the champion serves whatever happens here)."""
        try:
            wanted = source.current_version()
        except Exception as exc:
            log.warning("challenger lookup failed (keeping the current split): %s", exc)
            return
        serving = self.holder.challenger
        champion = str(self.holder.ranker.info.model_version)
        if wanted is None or wanted == champion:
            self._no_challenger(
                f"CHALLENGER_TRAFFIC={source.share} but the registered model has no `challenger` alias"
                if wanted is None else f"the `challenger` alias is the champion's own version {wanted}"
            )  # fmt: skip
            return
        if serving is not None and str(serving.info.model_version) == wanted:
            return
        if self._failed is not None and self._failed[0] == wanted and time.monotonic() < self._failed[1]:
            return
        log.info("challenger is version %s: loading it (%.0f%% of the users will see it)", wanted, 100 * source.share)
        try:
            ranker = source.load()
        except Exception as exc:
            self._failed = (wanted, time.monotonic() + FAILED_LOAD_RETRY_S)
            self._no_challenger(f"cannot load challenger v{wanted} ({type(exc).__name__}: {str(exc)[:200]})")
            return
        self._failed = None
        self.challenger_state = None
        self.holder.set_challenger(ranker)

    def _no_challenger(self, why: str) -> None:
        if self.holder.challenger is not None:
            self.holder.set_challenger(None)
        if why != self.challenger_state:
            log.warning("%s: all traffic goes to the champion", why)
            self.challenger_state = why

    def run(self) -> None:
        """Check for a new champion or challenger every `interval`; a failed check keeps the current models."""
        while not self.stop.wait(self.interval):
            try:
                self.check_once()
            except Exception as exc:  # the registry or the store may be briefly down: keep serving, retry later
                log.warning("model reload check failed (still serving the current model): %s", exc)
