"""energy_distance_lightsb (LightSB's convention: half the unbiased energy distance) and its scaling constant."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from scipy.stats import norm

from probflux.metrics import energy_distance_lightsb, lightsb_constant_scale, mmd


def _notebook_formula(x, y):
    """The notebook's expression, written out with full distance matrices."""
    kxx, kyy, kxy = cdist(x, x), cdist(y, y), cdist(x, y)
    m, n = len(x), len(y)
    return (-0.5 * (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) - 0.5 * (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
            + kxy.sum() / (m * n))


def test_two_point_closed_form():
    a = np.array([[0.0], [1.0]])
    # xy = 1/2, within-sample U-statistics = 1 each: 1/2 - 1/2 - 1/2
    assert energy_distance_lightsb(a, a) == pytest.approx(-0.5, abs=1e-15)


def test_matches_the_notebook_and_relates_to_the_v_statistic():
    r = np.random.default_rng(0)
    x, y = r.normal(size=(300, 5)), r.normal(size=(250, 5)) + 0.3
    assert energy_distance_lightsb(x, y) == pytest.approx(_notebook_formula(x, y), rel=1e-12)
    n, m = len(x), len(y)
    sxx, syy = cdist(x, x).sum(), cdist(y, y).sum()
    v = mmd(x, y, kernel="energy")  # 2 xy - sxx/n^2 - syy/m^2
    u2 = v + sxx / n**2 + syy / m**2 - sxx / (n * (n - 1)) - syy / (m * (m - 1))
    assert energy_distance_lightsb(x, y) == pytest.approx(0.5 * u2, rel=1e-10)


def test_gaussian_shift_expectation():
    """1-D N(0,1) vs N(mu,1): 2E|X-Y| - E|X-X'| - E|Y-Y'| with E|N(m, s^2)| = s sqrt(2/pi) e^{-m^2/2s^2} + m (1 - 2 Phi(-m/s))."""
    mu, s = 1.5, math.sqrt(2.0)
    exy = s * math.sqrt(2 / math.pi) * math.exp(-mu**2 / (2 * s**2)) + mu * (1 - 2 * norm.cdf(-mu / s))
    want = 0.5 * (2 * exy - 2 * 2 / math.sqrt(math.pi))
    r = np.random.default_rng(1)
    got = [energy_distance_lightsb(r.normal(size=(1500, 1)), mu + r.normal(size=(1500, 1))) for _ in range(6)]
    assert np.mean(got) == pytest.approx(want, rel=0.06)  # a factor-2 convention error would be 100 %


def test_constant_scale_and_bad_input():
    a, b = np.array([[0.0, 0.0], [2.0, 4.0]]), np.array([[1.0, 2.0]])
    pooled = np.concatenate([a, b])
    assert lightsb_constant_scale(a, b) == pytest.approx(pooled.std(axis=0).mean())
    with pytest.raises(ValueError, match="dimension"):
        lightsb_constant_scale(a, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="at least 2 points"):
        energy_distance_lightsb(a[:1], b)
