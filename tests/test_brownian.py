"""odeverify.brownian.BrownianTree: a path that is a pure function of its seed (consistency),
Brownian in law (statistics with fixed seeds, their false-alarm probability and power
stated), and strict about its input.

Statistical conventions: every test statistic is computed on a fixed seed, so a run either
always passes or always fails; the threshold is set for a false-alarm probability of 0.1 %
per statistic (two-sided, |z| <= 3.29, or a chi-square / Kolmogorov-Smirnov p-value >= 0.001)
had the seed been drawn at random. Powers are computed for the sample sizes used (scipy.stats;
the Kolmogorov-Smirnov power by 200 simulations).
"""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats

from odeverify.brownian import BrownianTree

ALPHA = 1e-3  #: false-alarm probability of each statistic
Z_CRIT = stats.norm.isf(ALPHA / 2)  # 3.29
M, m = 4000, 2  #: paths x components: N = 8000 standardized increments per interval
FINE = 2.0**-24  #: the default tree's finest dyadic spacing on [0, 1]
#: consecutive (so disjoint) intervals at several levels: level 1 and 3 dyadic, non-dyadic
#: ends, one shorter than the finest level starting at a dyadic point, one of level 10, one of
#: length 2^-20 between non-dyadic times
TIMES = np.array([0.0, 0.1, 0.3, 1.0 / 3.0, 0.5, 0.5 + 0.3 * FINE, 0.625, 0.625 + 2.0**-10, 0.7,
                  0.7 + 2.0**-20, 0.75, 1.0])


def standardized(seed=12345):
    bm = BrownianTree(0.0, 1.0, (M, m), seed=seed)
    dw = bm.grid_increments(TIMES)  # (K, M, m)
    return dw / np.sqrt(np.diff(TIMES))[:, None, None]


def two_sided_chi2(ss, n):
    return 2.0 * min(stats.chi2.cdf(ss, n), stats.chi2.sf(ss, n))


# ----------------------------------------------------------------------------- consistency
def test_fine_increments_sum_to_the_coarse_one_in_any_query_order():
    rng = np.random.default_rng(0)
    s, t = 0.1, 0.9
    inner = np.sort(np.concatenate([rng.uniform(s, t, 300), s + (t - s) * np.arange(1, 64) / 64.0]))
    grid = np.concatenate([[s], inner, [t]])
    shuffled = rng.permutation(grid)
    a = BrownianTree(0.0, 1.0, (5, 3), seed=7)
    w_shuffled = a.values(shuffled)
    w_a = a.values(grid)
    b = BrownianTree(0.0, 1.0, (5, 3), seed=7)  # fresh: nothing cached
    w_b = b.values(grid)
    c = BrownianTree(0.0, 1.0, (5, 3), seed=7)
    w_c = c.values(grid[::-1])[::-1]
    d = BrownianTree(0.0, 1.0, (5, 3), seed=7)
    w_d = np.stack([d(tq) for tq in shuffled])  # one at a time
    order = np.argsort(shuffled)
    np.testing.assert_array_equal(w_shuffled[order], w_a)
    np.testing.assert_array_equal(w_a, w_b)
    np.testing.assert_array_equal(w_a, w_c)
    np.testing.assert_array_equal(w_d[order], w_a)
    for tree in (a, b, c, d):
        fine = tree.grid_increments(grid).sum(axis=0)
        np.testing.assert_allclose(fine, tree.increment(s, t), rtol=0, atol=1e-13)
    np.testing.assert_array_equal(a.increment(t, s), -a.increment(s, t))


def test_same_seed_same_path_different_keys_differ():
    ts = np.array([0.0, 0.25, 1.0 / 3.0, 0.5, 1.0])
    w = BrownianTree(0.0, 1.0, (3, 2), seed=42).values(ts)
    np.testing.assert_array_equal(w, BrownianTree(0.0, 1.0, (3, 2), seed=42).values(ts))
    assert np.all(w[0] == 0.0)
    other = BrownianTree(0.0, 1.0, (3, 2), seed=43).values(ts)
    assert np.all(other[1:] != w[1:])
    # paths (rows) and components (columns) are different draws
    assert np.all(w[1:, 0, :] != w[1:, 1, :]) and np.all(w[1:, :, 0] != w[1:, :, 1])
    # the depth changes only what lies below the coarser tree's finest level
    shallow = BrownianTree(0.0, 1.0, (3, 2), seed=42, depth=8).values(ts)
    np.testing.assert_array_equal(shallow[[0, 1, 3, 4]], w[[0, 1, 3, 4]])
    # more paths keep the first ones (a batch can grow without changing its paths)
    np.testing.assert_array_equal(BrownianTree(0.0, 1.0, (5, 2), seed=42).values(ts)[:, :3], w)
    np.testing.assert_array_equal(BrownianTree(0.0, 1.0, (2,), seed=42).values(ts), w[:, 0])


def test_spec_round_trip_and_conversion():
    bm = BrownianTree(0.5, 2.0, (4, 3), seed=9, depth=20)
    again = BrownianTree.from_spec(bm.spec())
    ts = [0.5, 0.7, 1.9, 2.0]
    np.testing.assert_array_equal(again.values(ts), bm.values(ts))
    assert bm.increment(0.7, 1.9).shape == (4, 3)
    torch = pytest.importorskip("torch")
    like = torch.zeros(1, dtype=torch.float32)
    out = bm.increment(0.7, 1.9, like=like)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), bm.increment(0.7, 1.9), rtol=1e-6)


def test_a_query_that_overflows_the_cache_still_answers():
    """prefetch used to empty a full cache, dropping times of the same query cached before
    (a KeyError in values())."""
    bm = BrownianTree(0.0, 1.0, (1,), seed=1)
    bm.prefetch(np.arange(1, 60000) / 60000.0)
    again = np.concatenate([np.arange(1, 5000) / 60000.0, 0.1 + np.arange(1, 7000) * 1e-5 + 1e-9])
    assert bm.values(again).shape == (again.size, 1)


# ----------------------------------------------------------------------------- statistics
def test_increments_have_mean_zero_and_variance_the_length():
    """Per interval (N = 8000 standardized increments): mean z-test (|z| <= 3.29) and a
    two-sided chi-square test of sum Z^2 ~ chi2_N (p >= 0.001). False alarm 0.1 % per
    statistic (22 statistics: at most 2.2 % for the whole test). Power per interval: a
    variance off by +10 % is caught with probability 0.997, by -10 % with 0.9996; a mean of
    0.05 standard deviations with 0.88."""
    z = standardized()
    n = z.shape[1] * z.shape[2]
    for k in range(z.shape[0]):
        zk = z[k].reshape(-1)
        zmean = zk.mean() * math.sqrt(n)
        ss = float(np.sum(zk * zk))
        p = two_sided_chi2(ss, n)
        print(f"[{TIMES[k]:.9g}, {TIMES[k + 1]:.9g}]: mean z = {zmean:+.2f}, var ratio = {ss / n:.4f}, chi2 p = {p:.3f}")
        assert abs(zmean) <= Z_CRIT, (TIMES[k], zmean)
        assert p >= ALPHA, (TIMES[k], ss / n, p)


def test_increments_are_independent():
    """Correlations, each on N standardized pairs, z = r sqrt(N) (|z| <= 3.29, false alarm
    0.1 % each): consecutive disjoint intervals (N = 8000; power against a correlation of 0.05:
    0.88), the two components pooled over intervals and adjacent paths pooled over intervals
    (N = 44000; power against 0.03: 0.9999)."""
    z = standardized()
    k = z.shape[0]
    for i in range(k - 1):
        r = np.corrcoef(z[i].reshape(-1), z[i + 1].reshape(-1))[0, 1]
        zr = r * math.sqrt(z[i].size)
        print(f"intervals {i}, {i + 1}: r = {r:+.4f}, z = {zr:+.2f}")
        assert abs(zr) <= Z_CRIT, (i, r)
    comp = np.corrcoef(z[..., 0].reshape(-1), z[..., 1].reshape(-1))[0, 1]
    paths = np.corrcoef(z[:, :-1, :].reshape(-1), z[:, 1:, :].reshape(-1))[0, 1]
    n_comp, n_paths = z[..., 0].size, z[:, :-1, :].size
    print(f"components: r = {comp:+.4f} (z = {comp * math.sqrt(n_comp):+.2f}); adjacent paths: r = {paths:+.4f}"
          f" (z = {paths * math.sqrt(n_paths):+.2f})")
    assert abs(comp) * math.sqrt(n_comp) <= Z_CRIT
    assert abs(paths) * math.sqrt(n_paths) <= Z_CRIT


def test_standardized_increments_are_normal():
    """Kolmogorov-Smirnov on all 88000 standardized increments pooled over intervals, and on
    the increments of each level separately via their pooled variance (p >= 0.001, false
    alarm 0.1 %). Power against a normal of standard deviation 1.05: 1.0 (200 of 200
    simulated samples of 88000 rejected); against a unit-variance Student t with 30 degrees
    of freedom (heavier tails only): 0.35 -- KS is weak in the tails, so the tails are also
    checked: the fraction beyond |z| > 3 (expected 0.0027) by a binomial test."""
    z = standardized().reshape(-1)
    ks = stats.kstest(z, "norm")
    tail = int(np.sum(np.abs(z) > 3.0))
    p_tail = stats.binomtest(tail, z.size, 2.0 * stats.norm.sf(3.0)).pvalue
    print(f"KS D = {ks.statistic:.5f}, p = {ks.pvalue:.3f}; |z| > 3: {tail} of {z.size}, binomial p = {p_tail:.3f}")
    assert ks.pvalue >= ALPHA
    assert p_tail >= ALPHA


@pytest.mark.parametrize("a, t, b", [(0.25, 0.3, 0.75), (0.1, 0.2 + 1e-3, 0.3), (0.5, 0.5 + 0.3 * FINE, 0.5 + FINE)],
                         ids=["dyadic ends", "non-dyadic ends", "below the finest level"])
def test_brownian_bridge_variance(a, t, b):
    """R = W(t) - W(a) - (t - a)/(b - a) (W(b) - W(a)) is independent of (W(a), W(b)) with
    variance (t - a)(b - t)/(b - a) (Lévy's construction). N = 8000: chi-square on R^2 / var
    (p >= 0.001; power against a variance 10 % off: 0.997) and |corr(R, W(a))|, |corr(R, W(b))|
    (z <= 3.29; power against 0.05: 0.88)."""
    bm = BrownianTree(0.0, 1.0, (M, m), seed=2024)
    wa, wt, wb = bm.values([a, t, b])
    r = (wt - wa - (t - a) / (b - a) * (wb - wa)).reshape(-1)
    var = (t - a) * (b - t) / (b - a)
    n = r.size
    ss = float(np.sum(r * r) / var)
    p = two_sided_chi2(ss, n)
    ca = np.corrcoef(r, wa.reshape(-1))[0, 1] if a > 0 else 0.0
    cb = np.corrcoef(r, wb.reshape(-1))[0, 1]
    print(f"bridge at t = {t!r} in [{a!r}, {b!r}]: var ratio {ss / n:.4f}, chi2 p = {p:.3f},"
          f" corr with W(a) {ca:+.4f}, with W(b) {cb:+.4f}")
    assert p >= ALPHA
    assert abs(ca) * math.sqrt(n) <= Z_CRIT and abs(cb) * math.sqrt(n) <= Z_CRIT


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("t0, t1", [(1.0, 1.0), (1.0, 0.0), (0.0, math.inf), (math.nan, 1.0)])
def test_bad_interval(t0, t1):
    with pytest.raises(ValueError, match=r"interval \(t0, t1\).*t0 < t1"):
        BrownianTree(t0, t1, (1,))


@pytest.mark.parametrize("shape", [(), (2, 3, 4), (0,), (3, -1), (0, 2)])
def test_bad_shape(shape):
    with pytest.raises(ValueError, match=r"shape=.*\(m,\) or \(M, m\)"):
        BrownianTree(0.0, 1.0, shape)


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0", None])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match=rf"seed={seed!r}.*non-negative int"):
        BrownianTree(0.0, 1.0, (1,), seed=seed)


@pytest.mark.parametrize("depth", [0, 49, 2.0])
def test_bad_depth(depth):
    with pytest.raises(ValueError, match=r"depth=.*1 \.\. 48"):
        BrownianTree(0.0, 1.0, (1,), depth=depth)


@pytest.mark.parametrize("t", [-0.1, 1.0 + 1e-12, 2.0])
def test_query_outside_the_interval(t):
    bm = BrownianTree(0.0, 1.0, (2,), seed=0)
    with pytest.raises(ValueError, match=r"t=\[.*outside the path's interval \[0\.0, 1\.0\]"):
        bm(t)
    with pytest.raises(ValueError, match="outside"):
        bm.increment(0.5, t)
    with pytest.raises(ValueError, match="outside"):
        bm.prefetch([0.5, t])


@pytest.mark.parametrize("t", [math.nan, math.inf])
def test_non_finite_query(t):
    with pytest.raises(ValueError, match="must be finite"):
        BrownianTree(0.0, 1.0, (2,), seed=0).values([0.5, t])


# ----------------------------------------------------------------------------- cost
def test_prefetch_cost_is_recorded(record_property):
    """The cost of one grid for a batch: 1025 times x 1000 paths (measured, not asserted;
    the time is in the test's report properties and printed with -s)."""
    bm = BrownianTree(0.0, 1.0, (1000, 1), seed=5)
    grid = np.linspace(0.0, 1.0, 1025)
    start = time.perf_counter()
    bm.prefetch(grid)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    w = bm.values(grid)
    warm = time.perf_counter() - start
    record_property("prefetch_1025x1000_s", cold)
    print(f"prefetch of 1025 times x 1000 paths: {cold:.3f} s; the cached values(): {warm:.4f} s")
    assert w.shape == (1025, 1000, 1) and np.all(np.isfinite(w))
