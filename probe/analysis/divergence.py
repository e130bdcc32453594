"""Per-fact divergences between a variant's activations and the original's.

Hand-written in NumPy because each measure is a line or two and must run on whole
``[facts, heads, keys]`` blocks at once with exact conventions: Jensen–Shannon is the textbook
one, ``½KL(P‖M) + ½KL(Q‖M)`` with the mixture ``M = (P+Q)/2`` in nats (equal to the square of
``scipy.spatial.distance.jensenshannon`` with ``base=e``), not a symmetrised KL; zero
probabilities contribute nothing (``0·log 0 = 0``), so padded attention keys are harmless.
"""

from __future__ import annotations

import numpy as np

from probe.errors import ProbeError

_TINY = 1e-300


def check_finite(values: np.ndarray, where: str) -> None:
    """Refuse NaN/inf activations, naming the run and array (and so the layer)."""
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise ProbeError(f"NaN/inf in {where} ({bad.sum()} values, probes {rows[:5].tolist()}"
                         f"{' …' if len(rows) > 5 else ''}): the model or capture diverged there; recapture "
                         f"in float32 or check that variant")


def kl_logp(logp: np.ndarray, logq: np.ndarray) -> np.ndarray:
    """KL(P‖Q) over the last axis from log-probabilities (nats); ≥ 0, and 0 iff P = Q."""
    p = np.exp(logp)
    return np.maximum(np.sum(p * (logp - logq), axis=-1), 0.0)


def js_logp(logp: np.ndarray, logq: np.ndarray) -> np.ndarray:
    """Jensen–Shannon divergence over the last axis from log-probabilities (nats, in [0, ln 2])."""
    logm = np.logaddexp(logp, logq) - np.log(2.0)
    return np.clip(0.5 * kl_logp(logp, logm) + 0.5 * kl_logp(logq, logm), 0.0, np.log(2.0))


def _plogp_ratio(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Σ p·log(p/q) over the last axis, with 0·log 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(np.maximum(p, _TINY)) - np.log(np.maximum(q, _TINY))), 0.0)
    return terms.sum(-1)


def kl_prob(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(P‖Q) over the last axis from probabilities (nats)."""
    return np.maximum(_plogp_ratio(np.asarray(p, np.float64), np.asarray(q, np.float64)), 0.0)


def js_prob(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen–Shannon divergence over the last axis from probabilities (nats)."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    m = 0.5 * (p + q)
    return np.clip(0.5 * _plogp_ratio(p, m) + 0.5 * _plogp_ratio(q, m), 0.0, np.log(2.0))


def entropy(p: np.ndarray) -> np.ndarray:
    """Shannon entropy over the last axis (nats), 0·log 0 = 0."""
    p = np.asarray(p, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(np.maximum(p, _TINY)), 0.0).sum(-1)


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 − cosine similarity over the last axis (0 for identical directions)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return 1.0 - np.sum(a * b, axis=-1) / np.maximum(den, _TINY)


def relative_l2(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """‖a − ref‖ / ‖ref‖ over the last axis."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return np.linalg.norm(a - ref, axis=-1) / np.maximum(np.linalg.norm(ref, axis=-1), _TINY)
