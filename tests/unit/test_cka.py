"""CKA: reference values from Kornblith et al.'s demo, invariances, formula agreement, streaming."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from probe.analysis import bootstrap as bs
from probe.analysis.cka import (
    LinearCKAAccumulator,
    cka_matrix,
    linear_cka,
    minibatch_cka,
    rbf_cka,
    subset_linear_cka,
)
from probe.errors import ProbeError


@pytest.fixture(scope="module")
def demo_xy() -> tuple[np.ndarray, np.ndarray]:
    """The data of the demo notebook (google-research representation_similarity/Demo.ipynb)."""
    np.random.seed(1337)
    x = np.random.randn(100, 10)
    y = x + np.random.randn(100, 10)
    return x, y


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _pair(n: int, dx: int, dy: int, seed: int = 0, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = _rng(seed)
    x = rng.standard_normal((n, dx)) + offset
    y = x @ rng.standard_normal((dx, dy)) + 2.0 * rng.standard_normal((n, dy)) - 3.0 * offset
    return x, y


# ---------------------------------------------------------------- independent naive references


def _naive_linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """tr(KHLH) / sqrt(tr(KHKH) tr(LHLH)) with an explicit centring matrix H."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    kc, lc = h @ x @ x.T @ h, h @ y @ y.T @ h
    return float(np.trace(kc @ lc) / np.sqrt(np.trace(kc @ kc) * np.trace(lc @ lc)))


def _song_hsic1(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """Unbiased HSIC of Song et al. (2012), written out directly from the paper."""
    n = k.shape[0]
    k, l = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))  # noqa: E741
    one = np.ones(n)
    return float(
        (np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
         - 2.0 / (n - 2) * (one @ k @ l @ one)) / (n * (n - 3))
    )


def _naive_debiased_cka(x: np.ndarray, y: np.ndarray) -> float:
    k, l = x @ x.T, y @ y.T  # noqa: E741  (no centring: the unbiased estimator is translation invariant)
    return _song_hsic1(k, l) / np.sqrt(_song_hsic1(k, k) * _song_hsic1(l, l))


# ---------------------------------------------------------------- reference values


def test_demo_reference_values(demo_xy):
    x, y = demo_xy
    assert linear_cka(x, y) == pytest.approx(0.55761, abs=1e-5)
    assert rbf_cka(x, y, threshold=0.5) == pytest.approx(0.65483, abs=1e-5)
    assert linear_cka(x, y, debiased=True) == pytest.approx(0.51346, abs=1e-5)


@pytest.mark.parametrize("method", ["features", "gram"])
def test_demo_values_both_formulas(demo_xy, method):
    x, y = demo_xy
    assert linear_cka(x, y, method=method) == pytest.approx(0.55761, abs=1e-5)
    assert linear_cka(x, y, debiased=True, method=method) == pytest.approx(0.51346, abs=1e-5)


def test_matches_naive_formulas():
    x, y = _pair(60, 7, 5, seed=3, offset=2.0)
    assert linear_cka(x, y) == pytest.approx(_naive_linear_cka(x, y), abs=1e-12)
    assert linear_cka(x, y, debiased=True) == pytest.approx(_naive_debiased_cka(x, y), abs=1e-12)
    assert linear_cka(x, y, debiased=True) != pytest.approx(linear_cka(x, y), abs=1e-3)


def test_rbf_bandwidth_follows_threshold(demo_xy):
    x, y = demo_xy
    values = [rbf_cka(x, y, threshold=t) for t in (0.25, 0.5, 1.0, 4.0)]
    assert len({round(v, 6) for v in values}) == 4
    # a very wide RBF kernel is locally linear: RBF CKA tends to linear CKA
    assert rbf_cka(x, y, threshold=200.0) == pytest.approx(linear_cka(x, y), abs=1e-4)


# ---------------------------------------------------------------- invariances


@pytest.mark.parametrize(("n", "d"), [(200, 12), (30, 80)])  # feature-space and Gram regimes
@pytest.mark.parametrize("debiased", [False, True])
def test_invariances(n, d, debiased):
    x, y = _pair(n, d, d, seed=1)
    base = linear_cka(x, y, debiased)
    q, _ = np.linalg.qr(_rng(7).standard_normal((d, d)))
    assert linear_cka(x @ q, y, debiased) == pytest.approx(base, abs=1e-10)
    assert linear_cka(3.7 * x, 0.02 * y, debiased) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x + 5.0, y - 11.0, debiased) == pytest.approx(base, abs=1e-10)
    assert linear_cka(y, x, debiased) == pytest.approx(base, abs=1e-12)
    assert linear_cka(x, x, debiased) == pytest.approx(1.0, abs=1e-12)
    assert 0.0 < base < 1.0


def test_rbf_invariances(demo_xy):
    x, y = demo_xy
    base = rbf_cka(x, y, 0.5)
    q, _ = np.linalg.qr(_rng(2).standard_normal((10, 10)))
    assert rbf_cka(x @ q, 2.5 * y, 0.5) == pytest.approx(base, abs=1e-10)
    assert rbf_cka(y, x, 0.5) == pytest.approx(base, abs=1e-12)
    assert rbf_cka(x, x, 0.5) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_not_invariant_to_anisotropic_scaling(debiased):
    x, y = _pair(300, 6, 6, seed=4)
    scale = np.array([10.0, 1.0, 1.0, 0.1, 1.0, 3.0])
    assert abs(linear_cka(x * scale, y, debiased) - linear_cka(x, y, debiased)) > 0.02


# ---------------------------------------------------------------- formulas and streaming agree


@pytest.mark.parametrize(("n", "dx", "dy"), [(500, 20, 9), (40, 64, 100), (64, 64, 64)])
@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_feature_space_equals_gram(n, dx, dy, debiased, offset):
    x, y = _pair(n, dx, dy, seed=5, offset=offset)
    feat = linear_cka(x, y, debiased, method="features")
    gram = linear_cka(x, y, debiased, method="gram")
    assert feat == pytest.approx(gram, abs=1e-10)


@pytest.mark.parametrize("debiased", [False, True])
def test_accumulator_over_chunks_equals_one_shot(debiased):
    x, y = _pair(1000, 16, 24, seed=6, offset=50.0)
    acc = LinearCKAAccumulator(debiased=debiased)
    bounds = [0, 1, 5, 133, 400, 401, 999, 1000]  # uneven chunks, including single rows
    for a, b in itertools.pairwise(bounds):
        acc.update(x[a:b], y[a:b])
    assert acc.n == 1000
    assert acc.compute() == pytest.approx(linear_cka(x, y, debiased, method="gram"), abs=1e-12)
    xy, xx, yy = acc.hsic()
    assert xy / np.sqrt(xx * yy) == pytest.approx(acc.compute(), abs=1e-15)
    if debiased:  # a debiased accumulator also gives the plain value
        assert acc.compute(debiased=False) == pytest.approx(linear_cka(x, y, method="gram"), abs=1e-12)
    else:
        with pytest.raises(ProbeError, match="debiased=False"):
            acc.compute(debiased=True)


def test_accumulator_accepts_mixed_dtypes_and_torch():
    x, y = _pair(300, 8, 8, seed=8)
    acc = LinearCKAAccumulator()
    acc.update(x[:100].astype(np.float32), torch.from_numpy(y[:100]).float())
    acc.update(torch.from_numpy(x[100:]), y[100:])
    expected = linear_cka(np.vstack([x[:100].astype(np.float32), x[100:]]),
                          np.vstack([y[:100].astype(np.float32), y[100:]]))
    assert acc.compute() == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------- minibatch CKA


def test_minibatch_single_batch_is_debiased_cka():
    x, y = _pair(80, 6, 9, seed=9)
    value = minibatch_cka([x], [y])
    assert value == pytest.approx(linear_cka(x, y, debiased=True), abs=1e-12)
    assert value == pytest.approx(_naive_debiased_cka(x, y), abs=1e-12)


def test_minibatch_sums_unbiased_hsic_per_batch():
    x, y = _pair(90, 5, 7, seed=10)
    parts = [(0, 30), (30, 70), (70, 90)]  # unequal sizes: each batch is normalised by n_b(n_b - 3)
    k = [(x[a:b] @ x[a:b].T, y[a:b] @ y[a:b].T) for a, b in parts]
    xy = sum(_song_hsic1(kx, ky) for kx, ky in k)
    xx = sum(_song_hsic1(kx, kx) for kx, _ in k)
    yy = sum(_song_hsic1(ky, ky) for _, ky in k)
    got = minibatch_cka((x[a:b] for a, b in parts), (y[a:b] for a, b in parts))
    assert got == pytest.approx(xy / np.sqrt(xx * yy), abs=1e-12)


def test_minibatch_converges_to_linear_cka():
    x, y = _pair(40_000, 32, 32, seed=11)
    full = linear_cka(x, y)
    bx, by = np.split(x, 400), np.split(y, 400)  # 400 batches of 100 rows
    assert minibatch_cka(bx, by) == pytest.approx(full, abs=0.005)
    # averaging biased CKA over such small batches is far off; summing unbiased HSICs is not
    assert np.mean([linear_cka(a, b) for a, b in zip(bx, by, strict=True)]) > full + 0.03


def test_minibatch_matches_ckatorch():
    ckatorch_core = pytest.importorskip("ckatorch.core")
    x, y = _pair(400, 32, 16, seed=12)
    ours = minibatch_cka(np.split(x, 8), np.split(y, 8))
    theirs = ckatorch_core.cka_batch(torch.from_numpy(x).reshape(8, 50, 32),
                                     torch.from_numpy(y).reshape(8, 50, 16)).item()
    assert ours == pytest.approx(theirs, abs=1e-12)


# ---------------------------------------------------------------- layer × layer matrix


@pytest.mark.parametrize(("n", "widths"), [(150, (5, 12, 20)), (24, (30, 48, 64))])
@pytest.mark.parametrize("debiased", [False, True])
def test_cka_matrix(n, widths, debiased):
    rng = _rng(13)
    base = rng.standard_normal((n, widths[0]))
    layers = [base]
    for d in widths[1:]:
        mixed = np.tanh(layers[-1] @ rng.standard_normal((layers[-1].shape[1], d)))
        layers.append(mixed + 0.3 * rng.standard_normal((n, d)))
    other = [a + 0.5 * rng.standard_normal(a.shape) for a in layers[:2]]
    same = cka_matrix(layers, layers, debiased)
    np.testing.assert_allclose(np.diag(same), 1.0, atol=1e-12)
    np.testing.assert_allclose(same, same.T, atol=1e-12)
    cross = cka_matrix(layers, other, debiased)
    assert cross.shape == (3, 2)
    for i, a in enumerate(layers):
        for j, b in enumerate(other):
            assert cross[i, j] == pytest.approx(linear_cka(a, b, debiased), abs=1e-10)
        for j, b in enumerate(layers):
            assert same[i, j] == pytest.approx(linear_cka(a, b, debiased), abs=1e-10)


# ---------------------------------------------------------------- torch inputs


def test_torch_inputs_match_numpy():
    x, y = _pair(120, 10, 6, seed=14)
    xf, yf = x.astype(np.float32), y.astype(np.float32)
    tx, ty = torch.from_numpy(xf), torch.from_numpy(yf)
    for debiased in (False, True):
        assert linear_cka(tx, ty, debiased) == linear_cka(xf, yf, debiased)
    assert rbf_cka(tx, ty, 0.5) == rbf_cka(xf, yf, 0.5)
    assert minibatch_cka(tx.split(40), ty.split(40)) == minibatch_cka(np.split(xf, 3), np.split(yf, 3))
    np.testing.assert_array_equal(cka_matrix([tx, ty], [ty]), cka_matrix([xf, yf], [yf]))
    bx, by = tx.bfloat16(), ty.bfloat16()  # NumPy has no bfloat16: values are taken exactly
    assert linear_cka(bx, by) == linear_cka(bx.float().numpy(), by.float().numpy())
    assert linear_cka(tx.double(), ty.double()) == pytest.approx(linear_cka(x, y), abs=1e-6)


# ---------------------------------------------------------------- bad inputs


def _bad_cases():
    x, y = _pair(20, 3, 3)
    nan = x.copy()
    nan[3, 1] = np.nan
    inf = x.copy()
    inf[0, 0] = np.inf
    return {
        "1-D": lambda: linear_cka(x[:, 0], y),
        "3-D": lambda: linear_cka(x[None], y),
        "rows differ": lambda: linear_cka(x, y[:-1]),
        "debiased n<4": lambda: linear_cka(x[:3], y[:3], debiased=True),
        "n<2": lambda: linear_cka(x[:1], y[:1]),
        "nan": lambda: linear_cka(nan, y),
        "inf gram": lambda: linear_cka(inf, y, method="gram"),
        "nan torch": lambda: linear_cka(torch.from_numpy(nan), y),
        "empty": lambda: linear_cka(x[:, :0], y),
        "complex": lambda: linear_cka(x.astype(complex), y),
        "bool": lambda: linear_cka(x > 0, y),
        "constant": lambda: linear_cka(np.ones((20, 3)), y),
        "method": lambda: linear_cka(x, y, method="fast"),
        "rbf nan": lambda: rbf_cka(nan, y),
        "rbf threshold": lambda: rbf_cka(x, y, threshold=0.0),
        "rbf identical rows": lambda: rbf_cka(np.ones((20, 3)), y),
        "rbf debiased n<4": lambda: rbf_cka(x[:3], y[:3], debiased=True),
        "minibatch counts": lambda: minibatch_cka([x, x], [y]),
        "minibatch extra y": lambda: minibatch_cka([x], [y, y]),
        "minibatch empty": lambda: minibatch_cka([], []),
        "minibatch small": lambda: minibatch_cka([x[:3]], [y[:3]]),
        "minibatch rows": lambda: minibatch_cka([x], [y[:-1]]),
        "matrix rows": lambda: cka_matrix([x, x[:-1]], [y]),
        "matrix empty": lambda: cka_matrix([], [y]),
        "matrix nan": lambda: cka_matrix([nan], [y]),
        "matrix debiased n<4": lambda: cka_matrix([x[:3]], [y[:3]], debiased=True),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_bad_inputs_raise_probe_error(case):
    with pytest.raises(ProbeError) as info:
        _bad_cases()[case]()
    assert "\n" not in str(info.value) and str(info.value)


def test_accumulator_bad_use():
    x, y = _pair(20, 3, 4)
    acc = LinearCKAAccumulator(debiased=True)
    with pytest.raises(ProbeError, match="no data"):
        acc.compute()
    acc.update(x[:2], y[:2])
    with pytest.raises(ProbeError, match="at least 4"):
        acc.compute()
    with pytest.raises(ProbeError, match="feature sizes changed"):
        acc.update(x[:, :2], y)
    with pytest.raises(ProbeError, match="same number of rows"):
        acc.update(x, y[:5])
    with pytest.raises(ProbeError, match="NaN"):
        acc.update(np.full((2, 3), np.nan), y[:2])


# ---------------------------------------------------------------- the analysis's estimator and its intervals


def test_debiased_cka_of_independent_gaussians_at_n_close_to_d_is_zero_where_biased_is_half():
    """The demo's shape (608 facts × 576 dims): biased CKA of unrelated representations is ~0.49."""
    rng = _rng(0)
    x, y = rng.standard_normal((608, 576)), rng.standard_normal((608, 576))
    assert 0.47 < linear_cka(x, y) < 0.51
    assert abs(linear_cka(x, y, debiased=True)) < 0.02


@pytest.mark.parametrize("debiased", [False, True])
def test_subset_cka_equals_the_cka_of_each_subset_of_rows(debiased):
    x, y = _pair(40, 7, 5, seed=15, offset=3.0)
    masks = bs.half_samples(np.arange(40) // 2, 20, seed=1)  # clusters of two facts
    masks = np.vstack([masks, ~np.eye(40, dtype=bool)[:5]])  # and some leave-one-out subsets
    expected = [linear_cka(x[m], y[m], debiased) for m in masks]
    np.testing.assert_allclose(subset_linear_cka(x, y, masks, debiased), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(subset_linear_cka(x, x, masks, debiased), 1.0, atol=1e-12)
    with pytest.raises(ProbeError, match="boolean"):
        subset_linear_cka(x, y, masks.astype(int))


def test_half_samples_keep_half_of_the_clusters_whole():
    groups = np.repeat(np.arange(10), [1, 2, 3, 1, 1, 2, 5, 1, 1, 3])
    masks = bs.half_samples(groups, 50, seed=2)
    for m in masks:
        kept = set(groups[m])
        assert len(kept) == 5 and all(m[groups == g].all() for g in kept)
    np.testing.assert_array_equal(masks, bs.half_samples(groups, 50, seed=2))


def test_half_sample_interval_contains_the_estimate_where_a_bootstrap_with_duplicates_does_not():
    """n ≈ d, population CKA 1/(1 + 1.5²) ≈ 0.31: duplicates push bootstrap CKA above its own estimate."""
    rng = _rng(16)
    x = rng.standard_normal((200, 150))
    y = x + 1.5 * rng.standard_normal((200, 150))
    biased = linear_cka(x, y)
    boot_lo, _ = bs.percentile([linear_cka(x[i], y[i]) for i in bs.resample(200, 60, 0)])
    assert boot_lo > biased  # the failure the issue reports (estimate 0.53, interval [0.67, 0.69])
    point = linear_cka(x, y, debiased=True)
    lo, hi = bs.basic_interval(point, subset_linear_cka(x, y, bs.half_samples(np.arange(200), 200, 0)))
    assert lo < point < hi and lo < 1 / (1 + 1.5 ** 2) < hi and hi - lo < 0.1


def test_half_sample_intervals_cover_the_population_cka():
    """y = x + noise with unit variances: population linear CKA is exactly 1/2. n = 60 facts, d = 50."""
    covered = 0
    for r in range(40):
        rng = _rng(100 + r)
        x = rng.standard_normal((60, 50))
        y = x + rng.standard_normal((60, 50))
        point = linear_cka(x, y, debiased=True)
        lo, hi = bs.basic_interval(point, subset_linear_cka(x, y, bs.half_samples(np.arange(60), 100, r)))
        covered += lo <= 0.5 <= hi
    assert covered >= 36, covered  # measured: conservative at n ≈ d (all 40 cover)


def test_subset_cka_is_nan_for_a_subset_too_small_for_the_estimator():
    x, y = _pair(10, 3, 3, seed=17)
    masks = np.zeros((2, 10), bool)
    masks[0, :3], masks[1, :6] = True, True
    got = subset_linear_cka(x, y, masks)
    assert np.isnan(got[0]) and got[1] == pytest.approx(linear_cka(x[:6], y[:6], debiased=True), abs=1e-10)
