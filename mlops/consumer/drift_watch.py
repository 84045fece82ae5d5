"""Drift in the stream: a bounded window of what each model version serves, compared with its reference.

WHY this shape: the hot path only copies a few rows of each micro-batch's model input (and their
predictions) into a fixed-size ring buffer, microseconds per batch; PSI and KS per column are computed
off the hot path, by a background thread every `interval` seconds, and exported as Prometheus gauges.
Only score requests feed the window: their inputs are the rated-pair features the reference profile was
built from (top-k candidates are a different population by design).

The same thread publishes the window to Redis (`mlops.drift_windows`, at most every PUBLISH_INTERVAL_S and
only when it gained rows), where the batch check, the DAG `drift_monitor`, reads the latest traffic.

The window belongs to one model version and restarts when the champion changes. A version without a
reference profile (trained before profiles existed) is reported as unavailable
(`inference_drift_reference_available` 0 and no drift series), never as zero drift.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Gauge

from mlops import drift
from mlops import features as fx
from mlops.drift_windows import PUBLISH_INTERVAL_S, PublishedWindow

log = logging.getLogger(__name__)

ROWS_PER_BATCH = 64
"""Rows of each micro-batch copied into the window: enough to follow the traffic, cheap at any batch size."""
INTERVAL_S = 10.0

FEATURE_PSI, FEATURE_KS = "inference_feature_drift_psi", "inference_feature_drift_ks"
PREDICTION_PSI, PREDICTION_KS = "inference_prediction_drift_psi", "inference_prediction_drift_ks"
WINDOW_ROWS, REFERENCE_AVAILABLE = "inference_drift_window_rows", "inference_drift_reference_available"


class DriftGauges:
    """The drift series of one consumer (names in docs/contracts.md)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        labels = ["feature", "model_version"]
        self.feature_psi = Gauge(FEATURE_PSI, "PSI of a model input vs its reference", labels,
                                 registry=r)  # fmt: skip
        self.feature_ks = Gauge(FEATURE_KS, "KS statistic of a continuous model input vs its "
                                "reference", labels, registry=r)  # fmt: skip
        self.prediction_psi = Gauge(PREDICTION_PSI, "PSI of the served P(like) vs its reference",
                                    ["model_version"], registry=r)  # fmt: skip
        self.prediction_ks = Gauge(PREDICTION_KS, "KS statistic of the served P(like) vs its "
                                   "reference", ["model_version"], registry=r)  # fmt: skip
        self.rows = Gauge(WINDOW_ROWS, "Rows in the drift window", ["model_version"], registry=r)
        self.available = Gauge(
            REFERENCE_AVAILABLE,
            "1 when the serving version has a reference profile, 0 when drift is unavailable", ["model_version"],
            registry=r,
        )  # fmt: skip

    def clear(self) -> None:
        """Drop every series, so the gauges of a model version no longer served stop being exported."""
        for gauge in (self.feature_psi, self.feature_ks, self.prediction_psi, self.prediction_ks, self.rows,
                      self.available):  # fmt: skip
            gauge.clear()


class DriftWindow:
    """The last `capacity` sampled rows (model input columns + prediction) served by one model version."""

    def __init__(self, model_version: str, profile: dict[str, Any] | None, capacity: int, min_rows: int,
                 names: Sequence[str] = fx.FEATURE_NAMES, feature_set: str = "") -> None:  # fmt: skip
        self.model_version = model_version
        self.min_rows = min_rows  # DRIFT_MIN_ROWS: no measurement on fewer
        self.feature_set = feature_set
        self.profile = profile
        self.names = tuple(names)
        self.buffer = np.empty((capacity, len(self.names) + 1))
        self.filled = 0
        self.position = 0
        self.added = 0  # rows ever added: tells the publisher whether the window moved
        self.lock = threading.Lock()

    def add(self, x: np.ndarray, p: np.ndarray) -> None:
        """Hot path: copy up to ROWS_PER_BATCH evenly spaced rows of this batch."""
        n = len(x)
        if n == 0:
            return
        step = max(1, n // ROWS_PER_BATCH)
        rows = np.column_stack([x[::step][:ROWS_PER_BATCH], p[::step][:ROWS_PER_BATCH]])
        capacity = len(self.buffer)
        with self.lock:
            end = self.position + len(rows)
            if end <= capacity:
                self.buffer[self.position : end] = rows
            else:
                split = capacity - self.position
                self.buffer[self.position :] = rows[:split]
                self.buffer[: end - capacity] = rows[split:]
            self.position = end % capacity
            self.filled = min(capacity, self.filled + len(rows))
            self.added += len(rows)

    def snapshot(self) -> np.ndarray:
        """A copy of the rows filled so far, safe to compute on while the hot path keeps adding."""
        with self.lock:
            return self.buffer[: self.filled].copy()

    def published(self, consumer: str) -> PublishedWindow:
        """The window as the batch check reads it from Redis (columns: the model inputs, then the prediction)."""
        return PublishedWindow(consumer, self.model_version, self.feature_set, (*self.names, drift.PREDICTION),
                               self.snapshot(), time.time())  # fmt: skip

    def measure(self) -> dict[str, drift.Drift] | None:
        """Drift per column (`drift.PREDICTION` for the predictions); None without a reference or enough rows."""
        if self.profile is None:
            return None
        rows = self.snapshot()
        if len(rows) < self.min_rows:
            return None
        out = {name: drift.column_drift(self.profile["features"][name], rows[:, k]) for k, name in
               enumerate(self.names)}  # fmt: skip
        out[drift.PREDICTION] = drift.column_drift(self.profile[drift.PREDICTION], rows[:, -1])
        return out


class DriftWatch(threading.Thread):
    """Follows the serving model version: a fresh window per version, drift gauges refreshed every `interval`."""

    def __init__(self, registry: CollectorRegistry, store: Any, capacity: int, stop: threading.Event,
                 interval: float = INTERVAL_S, consumer: str = "",
                 publisher: Callable[[PublishedWindow], None] | None = None, min_rows: int = 500) -> None:  # fmt: skip
        super().__init__(name="drift-watch", daemon=True)
        self.gauges = DriftGauges(registry)
        self.store, self.capacity, self.stop, self.interval = store, capacity, stop, interval
        self.min_rows = min_rows
        self.consumer, self.publisher = consumer, publisher
        self.window: DriftWindow | None = None
        self.last: dict[str, drift.Drift] | None = None
        self._published: tuple[DriftWindow | None, int] = (None, 0)  # the window and its `added` last published
        self._published_at = 0.0

    def use(self, ranker: Any) -> None:
        """A new model version serves: start its window (with its reference, if it has one) and observe it."""
        info = ranker.info
        version = str(info.model_version)
        profile = self._profile(str(info.feature_set), version)
        window = DriftWindow(version, profile, self.capacity, self.min_rows, feature_set=str(info.feature_set))
        self.window, self.last = window, None
        self.gauges.clear()
        self.gauges.available.labels(model_version=version).set(0 if profile is None else 1)
        ranker.core.observer = window.add
        if not self.is_alive() and not self.stop.is_set():
            self.start()

    def _profile(self, feature_set: str, version: str) -> dict[str, Any] | None:
        try:
            profile = self.store.reference_profile(feature_set)
            if profile is None:
                log.warning("model v%s: no reference profile with feature set %s; drift unavailable", version,
                            feature_set)  # fmt: skip
                return None
            if str(profile.get("model_version")) != version:
                log.warning("model v%s: the reference profile of feature set %s is v%s's; drift unavailable",
                            version, feature_set, profile.get("model_version"))  # fmt: skip
                return None
            return drift.check_profile(profile, fx.FEATURE_NAMES)
        except Exception as exc:  # a broken profile must never stop serving
            log.warning("model v%s: reference profile unusable (%s); drift unavailable", version, exc)
            return None

    def refresh(self) -> dict[str, drift.Drift] | None:
        """Compute drift for the current window and export it; what `run` does every `interval` seconds."""
        window = self.window
        if window is None:
            return None
        version = window.model_version
        self.gauges.rows.labels(model_version=version).set(window.filled)
        result = window.measure()
        if result is None or self.window is not window:
            return None
        for name, value in result.items():
            if name == drift.PREDICTION:
                self.gauges.prediction_psi.labels(model_version=version).set(value.psi)
                if value.ks is not None:
                    self.gauges.prediction_ks.labels(model_version=version).set(value.ks)
                continue
            self.gauges.feature_psi.labels(feature=name, model_version=version).set(value.psi)
            if value.ks is not None:
                self.gauges.feature_ks.labels(feature=name, model_version=version).set(value.ks)
        self.last = result
        return result

    def publish(self, now: float | None = None) -> bool:
        """Hand the window to the publisher when it gained rows and PUBLISH_INTERVAL_S has passed; True if sent."""
        window, now = self.window, time.time() if now is None else now
        if self.publisher is None or window is None or window.filled == 0:
            return False
        if self._published == (window, window.added) or now - self._published_at < PUBLISH_INTERVAL_S:
            return False
        added = window.added
        self.publisher(window.published(self.consumer))
        self._published, self._published_at = (window, added), now
        return True

    def run(self) -> None:
        """Recompute the drift gauges and publish the window every `interval` until stopped; never raises."""
        while not self.stop.wait(self.interval):
            try:
                self.refresh()
            except Exception:  # monitoring must never take serving down
                log.exception("drift computation failed; serving is unaffected")
            try:
                self.publish()
            except Exception as exc:  # Redis down: the gauges still work, the batch check sees an older window
                log.warning("drift window not published (%s: %s); serving is unaffected", type(exc).__name__, exc)
