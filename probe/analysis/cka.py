"""Centred kernel alignment (CKA) between layer representations, computed in float64.

Linear and RBF CKA follow Kornblith et al. (2019), "Similarity of Neural Network Representations
Revisited", and reproduce the numbers of their demo notebook (google-research
``representation_similarity/Demo.ipynb``). Debiased CKA replaces both HSIC estimates with the
unbiased estimator of Song et al. (2012); minibatch CKA is that of Nguyen, Raghu & Kornblith (2021).

Why hand-written: the demo notebook is not a package (its feature-space CKA, debiased included,
needs all rows in memory at once), and the PyTorch package ``ckatorch`` computes full CKA, plain or
debiased, only from two n×n Gram matrices (``cka_base``: 20 GB each in float64 at n = 50,000) or as
the minibatch estimator (``cka_batch``), which is a different quantity. Neither streams float64
feature-space sums over n with exact centring at the end, and ckatorch has no feature-space debiased
CKA. Here linear CKA accumulates ``XᵀX``, ``YᵀY``, ``XᵀY``, column sums and, for the debiased form, a
few row-norm moments (:class:`LinearCKAAccumulator`), so memory is O(d²) whatever n. (ckatorch's RBF
bandwidth also uses ``torch.median``, the lower middle value, so it gives 0.654852 instead of the
demo's 0.65483 on the demo data; this module takes NumPy's median, as the demo does.)

Inputs are ``[n, d]`` NumPy arrays or torch tensors of any real dtype, rows being examples (tokens).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
from scipy.linalg import blas  # scipy comes with scikit-learn

from probe.errors import ProbeError

__all__ = [
    "LinearCKAAccumulator",
    "cka_matrix",
    "linear_cka",
    "minibatch_cka",
    "rbf_cka",
    "subset_linear_cka",
]

Method = Literal["auto", "features", "gram"]

_MIN_DEBIASED_N = 4
_MAX_GRAM_N = 8192  # above this an n×n float64 Gram matrix (512 MB) is never built by "auto"
_CHUNK_ELEMENTS = 1 << 24  # float64 elements per streamed chunk of [x | y] (128 MB)


# --------------------------------------------------------------------------------------------
# input handling


def _as_matrix(a: Any, name: str) -> np.ndarray:
    """A 2-D real NumPy view of ``a`` (a torch tensor is moved to CPU; dtype kept where NumPy has it)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(a, torch.Tensor):
        t = a.detach()
        if t.is_complex():
            raise ProbeError(f"{name} must hold real numbers; got torch dtype {t.dtype}")
        if t.is_floating_point() and t.dtype not in (torch.float16, torch.float32, torch.float64):
            t = t.to(torch.float32)  # bfloat16, float8: exact in float32, which NumPy understands
        a = t.cpu().numpy()
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise ProbeError(f"{name} must be a 2-D [n, d] array; got shape {tuple(arr.shape)}")
    if arr.dtype.kind not in "fiu":
        raise ProbeError(f"{name} must hold real numbers; got dtype {arr.dtype}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ProbeError(f"{name} is empty (shape {tuple(arr.shape)}); CKA needs examples and features")
    return arr


def _check_pair(x: np.ndarray, y: np.ndarray, debiased: bool) -> int:
    n = x.shape[0]
    if y.shape[0] != n:
        raise ProbeError(f"x and y must have the same number of rows (examples); got {n} and {y.shape[0]}")
    _check_n(n, debiased)
    return n


def _check_n(n: int, debiased: bool) -> None:
    if debiased and n < _MIN_DEBIASED_N:
        raise ProbeError(f"debiased CKA needs at least {_MIN_DEBIASED_N} examples; got {n}")
    if n < 2:
        raise ProbeError(f"CKA needs at least 2 examples; got {n}")


def _f64(a: np.ndarray, name: str) -> np.ndarray:
    """``a`` as float64, refusing NaN and infinity."""
    out = np.asarray(a, dtype=np.float64)
    if not np.isfinite(out).all():
        raise ProbeError(f"{name} contains NaN or infinite values; CKA needs finite activations")
    return out


def _centred(a: np.ndarray, name: str) -> np.ndarray:
    out = _f64(a, name)
    return out - out.mean(axis=0, keepdims=True)


def _ratio(xy: float, xx: float, yy: float) -> float:
    if not xx > 0 or not yy > 0:
        which = "x" if not xx > 0 else "y"
        raise ProbeError(f"{which} has no variance left after centring (HSIC({which},{which}) <= 0); "
                         "CKA is undefined")
    return float(xy / np.sqrt(xx * yy))


# --------------------------------------------------------------------------------------------
# Gram-matrix formulas (n×n memory)


def _center_gram(gram: np.ndarray, unbiased: bool) -> np.ndarray:
    """Double-centre a symmetric Gram matrix in place (``HKH``), or U-centre it for the unbiased HSIC.

    U-centring (Székely & Rizzo 2014) zeroes the diagonal and subtracts adjusted row/column means;
    ``<Ũ(K), Ũ(L)> / (n(n-3))`` is then the unbiased HSIC estimator of Song et al.
    """
    n = gram.shape[0]
    if unbiased:
        np.fill_diagonal(gram, 0.0)
        means = gram.sum(axis=0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        gram -= means[:, None]
        gram -= means[None, :]
        np.fill_diagonal(gram, 0.0)
    else:
        means = gram.mean(axis=0)
        means -= means.mean() / 2
        gram -= means[:, None]
        gram -= means[None, :]
    return gram


def _hsic_scale(n: int, unbiased: bool) -> float:
    return float(n * (n - 3)) if unbiased else float((n - 1) ** 2)


def _gram_hsic(kx: np.ndarray, ky: np.ndarray, unbiased: bool) -> tuple[float, float, float]:
    """(HSIC(x,y), HSIC(x,x), HSIC(y,y)) from two raw Gram matrices (modified in place)."""
    n = kx.shape[0]
    kx = _center_gram(kx, unbiased)
    ky = _center_gram(ky, unbiased)
    scale = _hsic_scale(n, unbiased)
    xy = _inner(kx, ky) / scale
    xx = _inner(kx, kx) / scale
    yy = _inner(ky, ky) / scale
    return xy, xx, yy


def _linear_gram_hsic(x: np.ndarray, y: np.ndarray, unbiased: bool) -> tuple[float, float, float]:
    xc = _centred(x, "x")  # both estimators are translation invariant; centring first is more accurate
    yc = _centred(y, "y")
    return _gram_hsic(xc @ xc.T, yc @ yc.T, unbiased)


def _rbf_gram(x: np.ndarray, threshold: float, name: str) -> np.ndarray:
    """RBF Gram matrix with ``2σ² = 2·threshold²·median(squared distances)``, as the demo's ``gram_rbf``.

    The median is taken over the full n×n matrix of squared distances (diagonal zeros included),
    exactly as in the demo, so ``σ ≈ threshold × median pairwise distance``.
    """
    xc = _centred(x, name)
    dots = xc @ xc.T
    sq_norms = np.diag(dots).copy()
    sq_dist = dots
    sq_dist *= -2.0
    sq_dist += sq_norms[:, None]
    sq_dist += sq_norms[None, :]
    np.maximum(sq_dist, 0.0, out=sq_dist)  # clip round-off below zero
    sq_median = float(np.median(sq_dist))
    if not sq_median > 0:
        raise ProbeError(f"{name}: median pairwise distance is 0 (most rows identical); "
                         "the RBF bandwidth is undefined")
    sq_dist *= -1.0 / (2.0 * threshold**2 * sq_median)
    return np.exp(sq_dist, out=sq_dist)


# --------------------------------------------------------------------------------------------
# feature-space streaming accumulator (O(d²) memory)


class LinearCKAAccumulator:
    """Streams linear CKA over chunks of rows without ever building an n×n matrix.

    ``update(x_chunk, y_chunk)`` adds float64 sums: ``XᵀX``, ``YᵀY``, ``XᵀY`` and column sums, and,
    when ``debiased``, the row squared norms' moments ``Σkᵢlᵢ, Σkᵢ², Σlᵢ², Σkᵢ, Σlᵢ, Xᵀk, Xᵀl, Yᵀk,
    Yᵀl`` (``kᵢ = ||xᵢ||²``, ``lᵢ = ||yᵢ||²``). Centring is applied exactly in :meth:`hsic`. Rows are
    shifted by the first chunk's column means before summing (CKA is translation invariant), which
    keeps the final centring free of cancellation when activations have large means. The sums are
    updated in place by BLAS ``dsyrk``/``dgemm`` (no d×d temporaries). Memory: about ``(dx + dy)²``
    float64 values plus one float64 chunk; time: O(n (dx + dy)²).
    """

    def __init__(self, debiased: bool = False) -> None:
        self.debiased = bool(debiased)
        self.n = 0
        self._shift_x: np.ndarray | None = None
        self._shift_y: np.ndarray | None = None

    def update(self, x_chunk: Any, y_chunk: Any) -> None:
        """Add a chunk of paired rows (``[m, dx]`` and ``[m, dy]``; any real dtype, NumPy or torch)."""
        xa = _as_matrix(x_chunk, "x chunk")
        ya = _as_matrix(y_chunk, "y chunk")
        if xa.shape[0] != ya.shape[0]:
            raise ProbeError(f"x and y chunks must have the same number of rows; got {xa.shape[0]} "
                             f"and {ya.shape[0]}")
        if self._shift_x is None:
            xc, yc = _f64(xa, "x chunk"), _f64(ya, "y chunk")
            self._start(xc, yc)
            xc, yc = xc - self._shift_x, yc - self._shift_y
        else:
            if xa.shape[1] != self._sx.shape[0] or ya.shape[1] != self._sy.shape[0]:
                raise ProbeError(f"chunk feature sizes changed: expected {self._sx.shape[0]} and "
                                 f"{self._sy.shape[0]} columns, got {xa.shape[1]} and {ya.shape[1]}")
            xc = _f64(np.subtract(xa, self._shift_x, dtype=np.float64), "x chunk")
            yc = _f64(np.subtract(ya, self._shift_y, dtype=np.float64), "y chunk")
        self.n += xc.shape[0]
        self._sx += xc.sum(axis=0)
        self._sy += yc.sum(axis=0)
        # In-place rank-m updates. xc.T is Fortran-contiguous, so BLAS reads it without a copy.
        # syrk fills only the upper triangle of XᵀX and YᵀY (see _sym_* below).
        self._xtx = self._blas.dsyrk(1.0, xc.T, beta=1.0, c=self._xtx, overwrite_c=1)
        self._yty = self._blas.dsyrk(1.0, yc.T, beta=1.0, c=self._yty, overwrite_c=1)
        self._xty = self._blas.dgemm(1.0, xc.T, yc.T, beta=1.0, c=self._xty, trans_b=1, overwrite_c=1)
        if self.debiased:
            k = np.einsum("ij,ij->i", xc, xc)
            l = np.einsum("ij,ij->i", yc, yc)  # noqa: E741
            self._kl += float(k @ l)
            self._kk += float(k @ k)
            self._ll += float(l @ l)
            self._sk += float(k.sum())
            self._sl += float(l.sum())
            self._xtk += xc.T @ k
            self._xtl += xc.T @ l
            self._ytk += yc.T @ k
            self._ytl += yc.T @ l

    def _start(self, xc: np.ndarray, yc: np.ndarray) -> None:
        self._blas = blas
        dx, dy = xc.shape[1], yc.shape[1]
        self._shift_x = xc.mean(axis=0)
        self._shift_y = yc.mean(axis=0)
        self._sx = np.zeros(dx)
        self._sy = np.zeros(dy)
        self._xtx = np.zeros((dx, dx), order="F")
        self._yty = np.zeros((dy, dy), order="F")
        self._xty = np.zeros((dx, dy), order="F")
        if self.debiased:
            self._kl = self._kk = self._ll = self._sk = self._sl = 0.0
            self._xtk = np.zeros(dx)
            self._xtl = np.zeros(dx)
            self._ytk = np.zeros(dy)
            self._ytl = np.zeros(dy)

    def hsic(self, debiased: bool | None = None) -> tuple[float, float, float]:
        """(HSIC(x,y), HSIC(x,x), HSIC(y,y)): biased ``/(n-1)²`` or unbiased (Song et al.).

        ``debiased`` defaults to the accumulator's; a debiased accumulator can also give the biased form.
        """
        if self._shift_x is None:
            raise ProbeError("no data: call update(x_chunk, y_chunk) before computing CKA")
        if debiased is None:
            debiased = self.debiased
        if debiased and not self.debiased:
            raise ProbeError("this accumulator was built with debiased=False; it lacks the row-norm sums "
                             "that debiased CKA needs")
        n = self.n
        _check_n(n, debiased)
        sx, sy = self._sx, self._sy
        tr_xx, tr_yy, tr_xy = _sym_frob2(self._xtx), _sym_frob2(self._yty), _frob2(self._xty)
        sxs = float(sx @ _sym_matvec(self._xtx, sx))  # s_xᵀ(XᵀX)s_x
        sys_ = float(sy @ _sym_matvec(self._yty, sy))
        sxy = float(sx @ (self._xty @ sy))  # s_xᵀ(XᵀY)s_y
        nx, ny = float(sx @ sx), float(sy @ sy)
        if not debiased:
            # centred cross-products C = XᵀY - s_x s_yᵀ/n, so ||C||² = ||XᵀY||² - 2 s_xᵀXᵀY s_y/n + |s_x|²|s_y|²/n²
            scale = _hsic_scale(n, False)
            return ((tr_xy - 2.0 * sxy / n + nx * ny / n**2) / scale,
                    (tr_xx - 2.0 * sxs / n + nx * nx / n**2) / scale,
                    (tr_yy - 2.0 * sys_ / n + ny * ny / n**2) / scale)
        # Unbiased HSIC (Song et al. 2012) with K = XXᵀ, K̃ = K - diag(k):
        #   n(n-3)·HSIC = tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((n-1)(n-2)) - 2/(n-2)·1ᵀK̃L̃1
        # in feature space: tr(K̃L̃) = ||XᵀY||² - k·l,  1ᵀK̃1 = ||s_x||² - Σk,
        #   1ᵀK̃L̃1 = (X s_x - k)ᵀ(Y s_y - l) = s_xᵀ(XᵀY)s_y - s_x·(Xᵀl) - s_y·(Yᵀk) + k·l.
        off_x, off_y = nx - self._sk, ny - self._sl
        scale = _hsic_scale(n, True)

        def u_stat(tr_ab: float, kl: float, off_a: float, off_b: float, row_ab: float) -> float:
            return (tr_ab - kl + off_a * off_b / ((n - 1) * (n - 2)) - 2.0 * row_ab / (n - 2)) / scale

        row_xy = sxy - float(sx @ self._xtl) - float(sy @ self._ytk) + self._kl
        row_xx = sxs - 2.0 * float(sx @ self._xtk) + self._kk
        row_yy = sys_ - 2.0 * float(sy @ self._ytl) + self._ll
        return (u_stat(tr_xy, self._kl, off_x, off_y, row_xy),
                u_stat(tr_xx, self._kk, off_x, off_x, row_xx),
                u_stat(tr_yy, self._ll, off_y, off_y, row_yy))

    def compute(self, debiased: bool | None = None) -> float:
        """Linear CKA of all rows seen so far (debiased: as :meth:`hsic`)."""
        return _ratio(*self.hsic(debiased))


def _inner(a: np.ndarray, b: np.ndarray) -> float:
    """Σ a·b over all entries of two same-layout arrays.

    einsum's own loop rather than BLAS ddot: a threaded ddot stalls when the machine is oversubscribed.
    """
    return float(np.einsum("i,i->", a.ravel(order="K"), b.ravel(order="K")))


def _frob2(a: np.ndarray) -> float:
    return _inner(a, a)


def _sym_frob2(upper: np.ndarray) -> float:
    """||S||²_F of the symmetric S whose upper triangle is stored in ``upper`` (zeros below)."""
    diag = np.diagonal(upper)
    return 2.0 * _frob2(upper) - _frob2(diag)


def _sym_matvec(upper: np.ndarray, v: np.ndarray) -> np.ndarray:
    """S v for the symmetric S whose upper triangle is stored in ``upper`` (zeros below)."""
    return upper @ v + upper.T @ v - np.diagonal(upper) * v


def _chunk_rows(dx: int, dy: int) -> int:
    return max(1, _CHUNK_ELEMENTS // (dx + dy))


def _stream_hsic(x: np.ndarray, y: np.ndarray, debiased: bool) -> tuple[float, float, float]:
    acc = LinearCKAAccumulator(debiased=debiased)
    step = _chunk_rows(x.shape[1], y.shape[1])
    for start in range(0, x.shape[0], step):
        acc.update(x[start:start + step], y[start:start + step])
    return acc.hsic()


def _use_gram(n: int, dx: int, dy: int) -> bool:
    """Gram formula when n ≤ d (it is then the cheaper one) and the n×n matrix is small enough."""
    return n <= max(dx, dy) and n <= _MAX_GRAM_N


# --------------------------------------------------------------------------------------------
# public API


def linear_cka(x: Any, y: Any, debiased: bool = False, *, method: Method = "auto") -> float:
    """Linear CKA ``||YᵀX||²_F / (||XᵀX||_F ||YᵀY||_F)`` of centred ``x [n, dx]`` and ``y [n, dy]``.

    ``debiased`` uses the unbiased HSIC estimator in numerator and denominator (the CKA ratio is
    still biased, less so). ``method="auto"`` streams the feature-space sums over row chunks when
    n > d (memory O(d²), no full float64 copy) and uses the n×n Gram formula otherwise; ``"features"``
    and ``"gram"`` force one of them.
    """
    xa, ya = _as_matrix(x, "x"), _as_matrix(y, "y")
    n = _check_pair(xa, ya, debiased)
    if method not in ("auto", "features", "gram"):
        raise ProbeError(f"method must be 'auto', 'features' or 'gram'; got {method!r}")
    gram = method == "gram" or (method == "auto" and _use_gram(n, xa.shape[1], ya.shape[1]))
    terms = _linear_gram_hsic(xa, ya, debiased) if gram else _stream_hsic(xa, ya, debiased)
    return _ratio(*terms)


def rbf_cka(x: Any, y: Any, threshold: float = 1.0, debiased: bool = False) -> float:
    """RBF-kernel CKA with bandwidth ``σ = threshold × median pairwise distance`` (Kornblith et al.).

    Builds two n×n float64 Gram matrices, so memory is O(n²).
    """
    if not np.isfinite(threshold) or threshold <= 0:
        raise ProbeError(f"threshold must be a positive finite number; got {threshold!r}")
    xa, ya = _as_matrix(x, "x"), _as_matrix(y, "y")
    _check_pair(xa, ya, debiased)
    return _ratio(*_gram_hsic(_rbf_gram(xa, threshold, "x"), _rbf_gram(ya, threshold, "y"), debiased))


def minibatch_cka(batches_x: Iterable[Any], batches_y: Iterable[Any]) -> float:
    """Minibatch linear CKA (Nguyen, Raghu & Kornblith 2021).

    ``Σ_b HSIC₁(X_b, Y_b) / sqrt(Σ_b HSIC₁(X_b, X_b) · Σ_b HSIC₁(Y_b, Y_b))`` with HSIC₁ the
    unbiased estimator, each batch normalised by its own ``n_b(n_b - 3)``. With one batch this is
    exactly ``linear_cka(x, y, debiased=True)``; over many batches it tends to the population CKA, as
    full-data debiased CKA does (plain CKA is biased upwards unless n ≫ d). Each batch needs ≥ 4 rows.
    """
    total = np.zeros(3)
    count = 0
    iter_y = iter(batches_y)
    sentinel = object()
    for bx in batches_x:
        by = next(iter_y, sentinel)
        if by is sentinel:
            raise ProbeError(f"batches_y ran out after {count} batches; both need the same number")
        xa = _as_matrix(bx, f"x batch {count}")
        ya = _as_matrix(by, f"y batch {count}")
        if xa.shape[0] != ya.shape[0]:
            raise ProbeError(f"batch {count}: x and y have {xa.shape[0]} and {ya.shape[0]} rows")
        if xa.shape[0] < _MIN_DEBIASED_N:
            raise ProbeError(f"batch {count} has {xa.shape[0]} rows; minibatch CKA needs at least "
                             f"{_MIN_DEBIASED_N} per batch")
        if _use_gram(xa.shape[0], xa.shape[1], ya.shape[1]):
            terms = _linear_gram_hsic(xa, ya, True)
        else:
            terms = _stream_hsic(xa, ya, True)
        total += terms
        count += 1
    if next(iter_y, sentinel) is not sentinel:
        raise ProbeError(f"batches_y has more batches than batches_x ({count})")
    if count == 0:
        raise ProbeError("minibatch_cka got no batches")
    return _ratio(*total)


def cka_matrix(xs: Sequence[Any], ys: Sequence[Any], debiased: bool = False) -> np.ndarray:
    """Linear CKA for every layer pair: entry ``[i, j]`` is ``linear_cka(xs[i], ys[j], debiased)``.

    Every layer is centred (or its Gram matrix built) and its self-similarity computed once. When n is
    at most every layer's width the Gram formula is used, else the feature-space one; either way the
    prepared float64 layers are all held in memory (``Σ n·dᵢ`` or ``(len(xs)+len(ys))·n²`` values).
    """
    if len(xs) == 0 or len(ys) == 0:
        raise ProbeError("cka_matrix needs at least one layer in xs and in ys")
    mats_x = [_as_matrix(a, f"xs[{i}]") for i, a in enumerate(xs)]
    mats_y = [_as_matrix(a, f"ys[{j}]") for j, a in enumerate(ys)]
    n = mats_x[0].shape[0]
    named = [(f"xs[{i}]", m) for i, m in enumerate(mats_x)] + [(f"ys[{j}]", m) for j, m in enumerate(mats_y)]
    for name, m in named:
        if m.shape[0] != n:
            raise ProbeError(f"all layers need the same number of rows; xs[0] has {n}, {name} has "
                             f"{m.shape[0]}")
    _check_n(n, debiased)
    use_gram = n <= min(m.shape[1] for m in mats_x + mats_y) and n <= _MAX_GRAM_N

    def cross(a: np.ndarray, ka: np.ndarray | None, b: np.ndarray, kb: np.ndarray | None) -> float:
        """scale × HSIC between two prepared layers."""
        if use_gram:
            return _inner(a, b)
        ab = a.T @ b
        tr = _frob2(ab)
        if ka is None or kb is None:
            return tr
        # centred features: s = 0, so 1ᵀK̃1 = -Σk and 1ᵀK̃L̃1 = k·l (see LinearCKAAccumulator.hsic)
        return tr - n / (n - 2) * float(ka @ kb) + float(ka.sum()) * float(kb.sum()) / ((n - 1) * (n - 2))

    cache: dict[int, tuple[np.ndarray, np.ndarray | None, float]] = {}

    def prepare(m: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray | None, float]:
        """(centred features or centred Gram, row squared norms if debiased, scale × self-HSIC)."""
        if id(m) not in cache:
            c = _centred(m, name)
            if use_gram:
                g = _center_gram(c @ c.T, debiased)
                prepared = (g, None, _frob2(g))
            else:
                k = np.einsum("ij,ij->i", c, c) if debiased else None
                prepared = (c, k, cross(c, k, c, k))
            if not prepared[2] > 0:
                raise ProbeError(f"{name} has no variance left after centring; CKA is undefined")
            cache[id(m)] = prepared
        return cache[id(m)]

    prep_x = [prepare(m, f"xs[{i}]") for i, m in enumerate(mats_x)]
    prep_y = [prepare(m, f"ys[{j}]") for j, m in enumerate(mats_y)]
    out = np.empty((len(prep_x), len(prep_y)))
    for i, (a, ka, self_a) in enumerate(prep_x):
        for j, (b, kb, self_b) in enumerate(prep_y):
            out[i, j] = 1.0 if a is b else cross(a, ka, b, kb) / np.sqrt(self_a * self_b)
    return out


def subset_linear_cka(x: Any, y: Any, masks: np.ndarray, debiased: bool = True) -> np.ndarray:
    """Linear CKA of ``x`` and ``y`` restricted to each row subset: ``masks`` ``[R, n]`` (bool) → ``[R]``.

    Resampling WITHOUT replacement (half-samples, jackknife): with duplicated rows, a bootstrap
    resample is not a sample of distinct examples, the unbiased HSIC's zeroed diagonal no longer
    removes self-pairs, and CKA is inflated. For a 0/1 mask ``w`` over rows with ``m = Σw``, the
    Gram matrices ``K = XXᵀ``, ``L = YYᵀ`` (``K̃``, ``L̃``: diagonal zeroed) give every subset's terms from
    a few products shared by all subsets: debiased (Song et al.)
    ``m(m−3)·HSIC = wᵀ(K̃∘L̃)w + (wᵀK̃w)(wᵀL̃w)/((m−1)(m−2)) − 2/(m−2)·Σᵢ wᵢ(K̃w)ᵢ(L̃w)ᵢ``; biased
    ``(m−1)²·HSIC = wᵀ(K∘L)w − (2/m)·Σᵢ wᵢ(Kw)ᵢ(Lw)ᵢ + (wᵀKw)(wᵀLw)/m²``. Equal to :func:`linear_cka`
    of the masked rows (tested); NaN for a subset too small for the estimator; memory O(n² + R·n).
    """
    xa, ya = _as_matrix(x, "x"), _as_matrix(y, "y")
    _check_pair(xa, ya, debiased)
    w = np.asarray(masks)
    if w.ndim != 2 or w.shape[1] != xa.shape[0] or w.dtype != bool:
        raise ProbeError(f"masks must be a boolean [subsets, {xa.shape[0]}] array; got {w.dtype} {w.shape}")
    w = w.astype(np.float64)
    m = w.sum(1)
    small = m < (_MIN_DEBIASED_N if debiased else 2)  # too few rows for the estimator: NaN
    xc, yc = _centred(xa, "x"), _centred(ya, "y")  # conditioning only: both forms are translation invariant
    k, lg = xc @ xc.T, yc @ yc.T
    if debiased:
        np.fill_diagonal(k, 0.0)
        np.fill_diagonal(lg, 0.0)
    wk, wl = w @ k, w @ lg

    m = np.where(small, 4.0, m)  # keeps the formulas finite where the result is NaN anyway

    def hsic(a: np.ndarray, wa: np.ndarray, b: np.ndarray, wb: np.ndarray) -> np.ndarray:
        trace = np.einsum("rn,rn->r", w @ (a * b), w)
        sa, sb = np.einsum("rn,rn->r", w, wa), np.einsum("rn,rn->r", w, wb)
        rows = np.einsum("rn,rn,rn->r", w, wa, wb)
        if debiased:
            return trace + sa * sb / ((m - 1) * (m - 2)) - 2.0 * rows / (m - 2)
        return trace - 2.0 / m * rows + sa * sb / m ** 2

    xy, xx, yy = hsic(k, wk, lg, wl), hsic(k, wk, k, wk), hsic(lg, wl, lg, wl)
    den = np.sqrt(np.maximum(xx, 0) * np.maximum(yy, 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((den > 0) & ~small, xy / np.where(den > 0, den, 1.0), np.nan)
