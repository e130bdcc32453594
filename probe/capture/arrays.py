"""What one stored capture array is (shape, dtype, fill): shared by the recorder and the store, no torch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ArraySpec:
    """One stored array: shape (axis 0 = probes), dtype, and the fill for missing entries."""

    shape: tuple[int, ...]
    dtype: str
    fill: float | int = 0

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize
