"""The decodability probe's Newton logistic regression solves scikit-learn's problem."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from probe.analysis.logistic import fit_logistic


@pytest.mark.parametrize("c", [0.01, 0.1, 1.0, 10.0])
@pytest.mark.parametrize(("n", "d"), [(40, 5), (600, 33)])
def test_equals_scikit_learns_solution(c, n, d):
    rng = np.random.default_rng(n + d)
    x = rng.normal(size=(n, d)) * rng.uniform(0.2, 3.0, d)
    y = x[:, 0] - 0.5 * x[:, 1] + rng.normal(size=n) > 0.8
    ref = LogisticRegression(C=c, tol=1e-12, max_iter=100_000).fit(x, y)
    got = fit_logistic(x, y, c)
    np.testing.assert_allclose(got.coef, ref.coef_[0], rtol=1e-4, atol=1e-6)
    assert got.intercept == pytest.approx(ref.intercept_[0], rel=1e-4, abs=1e-6)
    np.testing.assert_allclose(got.decision_function(x), ref.decision_function(x), rtol=1e-4, atol=1e-5)


def test_a_warm_start_reaches_the_same_solution():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 10))
    y = x @ rng.normal(size=10) + rng.normal(size=300) > 0
    cold = fit_logistic(x, y, 1.0)
    warm = fit_logistic(x, y, 1.0, init=fit_logistic(x, y, 0.1).packed)
    np.testing.assert_allclose(warm.coef, cold.coef, rtol=1e-6, atol=1e-8)
    assert np.abs(fit_logistic(x, y, 0.01).coef).sum() < np.abs(cold.coef).sum()  # stronger penalty, smaller weights
