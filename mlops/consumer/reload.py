"""Hot reload: a background thread follows the registry alias and swaps the ranker atomically.

The consumer takes `holder.ranker` once per micro-batch, so a batch is answered by exactly one model
version and a swap never fails or mixes a request. Loading happens off the consuming thread, so the
stream keeps flowing on the old model until the new one is ready.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class RankerHolder:
    """The ranker currently serving; replacing the reference is atomic in Python."""

    def __init__(self) -> None:
        self.ranker: Any | None = None
        self.on_swap: Callable[[Any], None] | None = None

    def swap(self, ranker: Any) -> None:
        previous, self.ranker = self.ranker, ranker
        if self.on_swap is not None:
            self.on_swap(ranker)
        log.info(
            "serving model version %s (feature set %s)%s", ranker.info.model_version, ranker.info.feature_set,
            f", replacing {previous.info.model_version}" if previous is not None else "",
        )  # fmt: skip


class ModelWatcher(threading.Thread):
    """Polls `current_version()` every `interval` seconds and loads + swaps when it differs."""

    def __init__(
        self, holder: RankerHolder, current_version: Callable[[], str | None], load: Callable[[], Any],
        interval: float, stop: threading.Event,
    ) -> None:  # fmt: skip
        super().__init__(name="model-watcher", daemon=True)
        self.holder, self.current_version, self.load = holder, current_version, load
        self.interval, self.stop = interval, stop

    def check_once(self) -> bool:
        """Swap if the alias moved; True when a new ranker went live."""
        wanted = self.current_version()
        serving = self.holder.ranker
        if wanted is None or (serving is not None and str(serving.info.model_version) == wanted):
            return False
        log.info("champion is version %s: loading it (the current model keeps serving meanwhile)", wanted)
        self.holder.swap(self.load())
        return True

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.check_once()
            except Exception as exc:  # the registry or the store may be briefly down: keep serving, retry later
                log.warning("model reload check failed (still serving the current model): %s", exc)
