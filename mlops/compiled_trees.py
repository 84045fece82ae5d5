"""LightGBM heads compiled to machine code (lleaves) for serving.

WHY: tree traversal is most of what a micro-batch costs the consumer. lleaves compiles a booster's own
trees and thresholds into native code: about 5x LightGBM's rows/s on one thread here, with the same
outputs to float rounding (~1e-15; `verify_streaming.py` checks served results against LightGBM itself).
Compiling takes seconds per head, so the object code is cached under the model text's hash: a restart,
a second consumer or the next reload of the same version reuses it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import lightgbm as lgb
import numpy as np


class CompiledHead:
    """A booster's `predict`, compiled: the subset of `lgb.Booster.predict` serving uses."""

    def __init__(self, booster: lgb.Booster, cache_dir: Path) -> None:
        import lleaves

        text = booster.model_to_string()
        digest = hashlib.sha256(text.encode()).hexdigest()[:24]
        cache_dir.mkdir(parents=True, exist_ok=True)
        source, code = cache_dir / f"{digest}.txt", cache_dir / f"{digest}.o"
        if not source.exists():
            _write_atomically(source, lambda tmp: tmp.write_text(text))
        self._model = lleaves.Model(model_file=str(source))
        if code.exists():
            self._model.compile(cache=str(code))
        else:  # compiled under a private name, then renamed: a concurrent loader never reads half a file
            _write_atomically(code, lambda tmp: self._model.compile(cache=str(tmp)))
        self.num_feature = booster.num_feature()

    def predict(self, x: np.ndarray, num_threads: int = 1) -> np.ndarray:
        """Like `Booster.predict`; a matrix of the wrong width is a ValueError, not a wrong score."""
        if x.ndim != 2 or x.shape[1] != self.num_feature:
            raise ValueError(f"expected a matrix of {self.num_feature} feature columns, got shape {x.shape}")
        return self._model.predict(np.ascontiguousarray(x, dtype=np.float64), n_jobs=num_threads)


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
