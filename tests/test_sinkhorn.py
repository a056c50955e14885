"""Sinkhorn-Knopp pseudo-labelling: marginals, stopping rule, agreement with the float64 log-domain reference,
robustness on confident/adversarial posteriors, exact order independence, input validation."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch

from selavi_core.selflabel.priors import from_file, gaussian_draw, rank_match, zipf
from selavi_core.selflabel.sinkhorn import (
    DENSE_FRACTION,
    SERIAL_WORK,
    SinkhornInputError,
    sinkhorn_knopp,
    sinkhorn_reference,
    soft_plan,
)


def make_log_p(n: int, k: int, scale: float = 3.0, seed: int = 0, dtype=np.float32) -> np.ndarray:
    """log_softmax(scale * randn(n, k)), perf-baselines §1.1's synthetic posteriors."""
    z = scale * np.random.default_rng(seed).standard_normal((n, k))
    z -= z.max(axis=1, keepdims=True)
    return (z - np.log(np.exp(z).sum(axis=1, keepdims=True))).astype(dtype)


def assert_plan_follows(log_p: np.ndarray, res, rel: float) -> None:
    """Rows of the soft plan sum to 1/N; its columns equal the reported marginal and are within ``rel`` of target."""
    q = soft_plan(log_p, res)
    n = log_p.shape[0]
    np.testing.assert_allclose(q.sum(axis=1), 1.0 / n, rtol=1e-12)
    np.testing.assert_allclose(q.sum(axis=0), res.marginal, rtol=1e-5, atol=1e-12)
    assert np.max(np.abs(res.marginal - res.target) / res.target) < rel


def test_uniform_marginal_plan_and_balanced_counts():
    log_p = make_log_p(6000, 50, seed=1)
    res = sinkhorn_knopp(log_p)
    assert res.converged and res.storage == "sparse"
    assert res.labels.dtype == np.int64 and res.labels.shape == (6000,)
    np.testing.assert_allclose(res.target, 1 / 50)
    assert_plan_follows(log_p, res, rel=0.01)
    assert res.counts.sum() == 6000
    np.testing.assert_array_equal(res.counts, np.bincount(res.labels, minlength=50))
    ratio = res.counts / (6000 / 50)
    assert ratio.min() > 0.85 and ratio.max() < 1.15, ratio


def test_gaussian_marginal_is_followed():
    k = 40
    log_p = make_log_p(8000, k, seed=2)
    mass = np.exp(log_p.astype(np.float64)).sum(axis=0)
    target = rank_match(gaussian_draw(k, np.random.default_rng(3), sd=0.3), mass)
    res = sinkhorn_knopp(log_p, target)
    np.testing.assert_allclose(res.target, target / target.sum())
    assert_plan_follows(log_p, res, rel=0.01)
    ratio = res.counts / (8000 * res.target)
    assert ratio.min() > 0.8 and ratio.max() < 1.2, ratio
    # the counts track the target's shape, not a uniform one
    assert np.corrcoef(res.counts, res.target)[0, 1] > 0.95


def test_zipf_marginal_is_followed():
    k = 12
    log_p = make_log_p(6000, k, seed=4)
    target = zipf(k, 1.0)
    res = sinkhorn_knopp(log_p, target)
    assert_plan_follows(log_p, res, rel=0.01)
    ratio = res.counts / (6000 * target)
    assert ratio.min() > 0.8 and ratio.max() < 1.2, ratio
    assert res.counts[0] > 5 * res.counts[-1]  # the Zipf head is really big


def test_file_marginal_is_followed(tmp_path):
    k = 8
    path = tmp_path / "prior.csv"
    path.write_text("share\n" + "\n".join(str(x) for x in [1, 2, 3, 4, 4, 3, 2, 1]) + "\n")
    target = from_file(path, k)
    log_p = make_log_p(5000, k, seed=5)
    res = sinkhorn_knopp(log_p, target)
    assert_plan_follows(log_p, res, rel=0.01)
    ratio = res.counts / (5000 * target)
    assert ratio.min() > 0.8 and ratio.max() < 1.2, ratio


@pytest.mark.parametrize("scale,lam,prior", [(3.0, 20.0, "uniform"), (3.0, 20.0, "gauss"), (10.0, 20.0, "uniform")])
def test_agrees_with_float64_log_domain_reference(scale, lam, prior):
    k = 60
    log_p = make_log_p(1500 if scale < 5 else 600, k, scale=scale, seed=6)  # the sharp case runs ~1300 iterations
    target = None if prior == "uniform" else gaussian_draw(k, np.random.default_rng(7))
    ours = sinkhorn_knopp(log_p, target, lam=lam)
    ref = sinkhorn_reference(log_p, target, lam=lam)
    assert np.mean(ours.labels == ref.labels) >= 0.999
    assert ours.n_iter == ref.n_iter and ours.converged == ref.converged
    assert ours.error == pytest.approx(ref.error, rel=1e-4)
    np.testing.assert_allclose(ours.marginal, ref.marginal, rtol=1e-5)
    # same duals up to the gauge (a constant)
    d = ours.log_alpha - ref.log_alpha
    assert np.ptp(d) < 1e-4


@pytest.mark.parametrize("strength,scale", [(0.3, 3.0), (0.8, 3.0), (0.9, 30.0)])
def test_semi_relaxed_agrees_with_the_reference(strength, scale):
    """``marginal_strength`` < 1 (a KL column penalty): same labels, marginal and column duals (up to the constant
    that leaves the plan unchanged) as the float64 log-domain loop, also when the sharp case makes the solver absorb
    its duals and rebuild the kernel. The marginal only matches if the solver kept the absolute gauge inside."""
    k = 8
    log_p = make_log_p(1000, k, scale=scale, seed=21).astype(np.float64)
    log_p[:, 0] += 3 * scale  # one cluster far more probable than its 2 % share: the duals drift apart
    target = np.r_[0.02, np.full(k - 1, 0.98 / (k - 1))]
    ours = sinkhorn_knopp(log_p, target, marginal_strength=strength, tol=1e-9, max_iter=20_000)
    ref = sinkhorn_reference(log_p, target, marginal_strength=strength, tol=1e-9, max_iter=20_000)
    assert ours.converged and ref.converged
    if scale > 10:
        assert ours.rebuilds > 0
    assert np.mean(ours.labels == ref.labels) >= 0.999
    np.testing.assert_allclose(ours.marginal, ref.marginal, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.log_alpha - ours.log_alpha.max(), ref.log_alpha - ref.log_alpha.max(), atol=1e-5)


def test_a_weaker_marginal_lets_the_sizes_follow_the_posteriors():
    """Three true sizes 60/25/15 % against a uniform target: strength 1 splits the big cluster to equal thirds, and
    the weaker the pull, the closer the sizes come to the posteriors' own."""
    rng = np.random.default_rng(4)
    y = np.repeat([0, 1, 2], [600, 250, 150])
    z = 2.0 * np.eye(3)[y] + rng.normal(0, 1, (1000, 3))
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    biggest = {}
    for strength in (1.0, 0.97, 0.8, 0.5):
        res = sinkhorn_knopp(log_p, None, marginal_strength=strength)
        biggest[strength] = int(res.counts.max())
    assert abs(biggest[1.0] - 333) <= 3
    assert biggest[1.0] + 50 < biggest[0.97] < biggest[0.8] < biggest[0.5]
    assert biggest[0.5] > 520  # near the ~560 of the posteriors' own argmax
    np.testing.assert_array_equal(
        sinkhorn_knopp(log_p, None, marginal_strength=1.0).labels, sinkhorn_knopp(log_p, None).labels
    )


def test_stopping_rule():
    log_p = make_log_p(3000, 30, seed=8)
    res = sinkhorn_knopp(log_p, tol=0.1)
    assert res.converged and not res.capped
    assert res.n_iter % 10 == 0 and res.error <= 0.1
    # the check ten iterations earlier had not yet met the rule: we stop at the first check that does
    earlier = sinkhorn_knopp(log_p, tol=0.1, max_iter=res.n_iter - 10)
    assert not earlier.converged and earlier.capped and earlier.n_iter == res.n_iter - 10 and earlier.error > 0.1
    # a looser tolerance stops no later; a cap that is not a multiple of 10 is honoured
    assert sinkhorn_knopp(log_p, tol=5.0).n_iter <= res.n_iter
    capped = sinkhorn_knopp(log_p, max_iter=25)
    assert capped.n_iter == 25 and capped.capped


@pytest.mark.parametrize("check_every", [1, 7])
def test_check_every_sets_when_the_stopping_rule_is_tested(check_every):
    log_p = make_log_p(1500, 30, seed=8)
    default = sinkhorn_knopp(log_p)
    np.testing.assert_array_equal(default.labels, sinkhorn_knopp(log_p, check_every=10).labels)  # today's value
    assert default.n_iter == sinkhorn_knopp(log_p, check_every=10).n_iter
    res = sinkhorn_knopp(log_p, check_every=check_every)
    ref = sinkhorn_reference(log_p, check_every=check_every)
    assert res.converged and res.n_iter % check_every == 0 and res.n_iter == ref.n_iter
    assert res.error == pytest.approx(ref.error, rel=1e-4)
    # the first check that meets the rule stops it: the check before did not
    before = sinkhorn_knopp(log_p, max_iter=res.n_iter - check_every, check_every=check_every)
    assert not before.converged and before.error > 0.1
    if check_every == 1:  # testing every iteration stops at the earliest possible iteration
        assert default.n_iter - 10 < res.n_iter <= default.n_iter
    # only the testing moves: the iterates themselves are the same bits for any check_every
    a = sinkhorn_knopp(log_p, max_iter=35, check_every=check_every)
    b = sinkhorn_knopp(log_p, max_iter=35, check_every=1000)
    np.testing.assert_array_equal(a.log_alpha, b.log_alpha)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_confident_k400_with_logprobs_to_minus_1e4_converges_balanced():
    """lam=20, K=400, a third of the entries at log p = -1e4: (p_v p_a)^lam is exactly 0 there even in float64."""
    n, k = 12000, 400
    log_p = make_log_p(n, k, scale=3.0, seed=9).astype(np.float64)
    log_p[np.random.default_rng(19).random(log_p.shape) < 0.33] = -1e4
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    assert log_p.min() < -9999
    res = sinkhorn_knopp(log_p, lam=20.0)
    assert res.converged and np.isfinite(res.error)
    assert np.all(np.isfinite(res.log_alpha)) and np.all(np.isfinite(res.marginal))
    ratio = res.counts / (n / k)
    assert ratio.min() >= 0.6 and ratio.max() <= 1.4, (ratio.min(), ratio.max())
    np.testing.assert_allclose(res.marginal, res.target, rtol=0.02)


def test_near_one_hot_k400_is_finite_and_tracks_the_reference():
    """Logits of scale 1700 (log p down to -1e4, near one-hot rows): in float64, exp(lam * log_p) keeps only the top
    entry of most rows, so a plain scaling has nothing to rebalance with. We stay finite, follow the float64
    log-domain reference exactly, and keep moving toward the marginal. (Sinkhorn itself needs ~10^4 iterations here:
    lam times the log-probability gaps is in the thousands, i.e. almost no entropic smoothing.)"""
    n, k = 800, 400
    log_p = make_log_p(n, k, scale=1700.0, seed=9)
    assert log_p.min() < -9000
    with np.errstate(under="ignore"):
        nonzero = (np.exp(20.0 * log_p.astype(np.float64)) > 0).sum(axis=1)
    assert np.mean(nonzero == 1) > 0.9
    short = sinkhorn_knopp(log_p, lam=20.0, max_iter=60)
    ref = sinkhorn_reference(log_p, lam=20.0, max_iter=60)
    # Exact-transport regime: rows split between two clusters sit on exact ties (score gaps ~1e-13 against typical
    # gaps of ~6000), where either label is right. Every disagreement must be such a tie under the reference duals.
    scores = 20.0 * log_p.astype(np.float64) + ref.log_alpha
    differ = np.flatnonzero(short.labels != ref.labels)
    assert len(differ) <= 0.01 * n
    np.testing.assert_allclose(
        scores[differ, short.labels[differ]], scores[differ, ref.labels[differ]], rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(short.marginal, ref.marginal, rtol=1e-6)
    long = sinkhorn_knopp(log_p, lam=20.0, max_iter=1500)
    for res in (short, long):
        assert np.all(np.isfinite(res.log_alpha)) and np.all(np.isfinite(res.marginal)) and np.isfinite(res.error)
        assert res.counts.max() < 0.05 * n, "no collapse into a few clusters"
    distance = lambda r: np.abs(r.marginal - r.target).sum()  # noqa: E731
    assert distance(long) < 0.9 * distance(short)
    assert long.error < 0.9 * short.error


def test_adversarial_scale30_lam50_stays_balanced():
    """perf-baselines §1.7: float32 scaling with a row shift collapses to one cluster here."""
    n, k = 1500, 100
    log_p = make_log_p(n, k, scale=30.0, seed=10)
    res = sinkhorn_knopp(log_p, lam=50.0)
    assert np.all(np.isfinite(res.log_alpha)) and np.all(np.isfinite(res.marginal))
    assert res.counts.min() >= 12 and res.counts.max() <= 18, (res.counts.min(), res.counts.max())
    early = sinkhorn_knopp(log_p, lam=50.0, max_iter=200)
    ref = sinkhorn_reference(log_p, lam=50.0, max_iter=200)
    assert np.mean(early.labels == ref.labels) >= 0.999


def test_dense_kernel_for_flat_posteriors():
    log_p = make_log_p(2000, 40, scale=0.05, seed=11)
    res = sinkhorn_knopp(log_p)
    assert res.storage == "dense" and res.density > DENSE_FRACTION
    ref = sinkhorn_reference(log_p)
    assert np.mean(res.labels == ref.labels) >= 0.999 and res.n_iter == ref.n_iter


@pytest.mark.parametrize("n,scale,storage", [(60000, 2.0, "sparse"), (20000, 0.05, "dense")])
def test_exactly_independent_of_row_order_and_threads(n, scale, storage):
    """Column sums are int64 fixed point and per-row arithmetic is strict IEEE: permuting rows or changing the thread
    count changes no bit. Sizes are chosen so the parallel kernels run (kernel entries above SERIAL_WORK)."""
    k = 64
    log_p = make_log_p(n, k, scale=scale, seed=12)
    target = gaussian_draw(k, np.random.default_rng(13))
    base = sinkhorn_knopp(log_p, target)
    assert base.storage == storage and base.density * n * k >= SERIAL_WORK
    perm = np.random.default_rng(14).permutation(len(log_p))
    shuffled = sinkhorn_knopp(log_p[perm], target)
    np.testing.assert_array_equal(shuffled.labels, base.labels[perm])
    assert shuffled.n_iter == base.n_iter and shuffled.error == base.error
    np.testing.assert_array_equal(shuffled.marginal, base.marginal)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = sinkhorn_knopp(log_p, target)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one.labels, base.labels)
    np.testing.assert_array_equal(one.log_alpha, base.log_alpha)
    assert one.error == base.error


def test_torch_and_float64_inputs():
    log_p = make_log_p(1000, 20, seed=15)
    base = sinkhorn_knopp(log_p)
    t = torch.from_numpy(log_p.copy()).requires_grad_(True)
    from_torch = sinkhorn_knopp(t, torch.full((20,), 0.05))
    assert isinstance(from_torch.labels, np.ndarray) and from_torch.labels.dtype == np.int64
    np.testing.assert_array_equal(from_torch.labels, base.labels)
    as64 = sinkhorn_knopp(log_p.astype(np.float64))
    assert np.mean(as64.labels == base.labels) >= 0.999
    np.testing.assert_array_equal(log_p, make_log_p(1000, 20, seed=15)), "input not modified"


def test_minus_inf_entries_are_never_chosen():
    log_p = make_log_p(1500, 10, seed=16).astype(np.float64)
    forbidden = np.random.default_rng(17).random(log_p.shape) < 0.3
    forbidden[:, 0] = False  # every row keeps a possible cluster
    log_p[forbidden] = -np.inf
    res = sinkhorn_knopp(log_p)
    assert not np.any(forbidden[np.arange(len(log_p)), res.labels])
    assert np.all(np.isfinite(res.marginal)) and res.counts.min() > 0


def test_single_cluster_and_two_rows():
    assert np.all(sinkhorn_knopp(np.zeros((7, 1))).labels == 0)
    res = sinkhorn_knopp(np.log(np.array([[0.9, 0.1], [0.2, 0.8]])))
    assert res.labels.tolist() == [0, 1] and res.counts.tolist() == [1, 1]


@pytest.mark.parametrize(
    "log_p,kwargs,message",
    [
        (np.zeros(5), {}, "2-D"),
        (np.array([[0.0, np.nan]]), {}, "NaN"),
        (np.array([[0.0, np.inf]]), {}, "+inf"),
        (np.array([[0.0, 0.0], [-np.inf, -np.inf]]), {}, "entirely -inf"),
        (np.array([[0.0, -np.inf], [0.0, -np.inf]]), {}, "zero probability"),
        (np.zeros((3, 4)), {"marginal": [0.5, 0.5]}, "shape (4,)"),
        (np.zeros((3, 2)), {"marginal": [1.0, 0.0]}, "strictly positive"),
        (np.zeros((3, 2)), {"marginal": [1.0, np.nan]}, "NaN"),
        (np.zeros((3, 2)), {"lam": 0.0}, "lam"),
        (np.zeros((3, 2)), {"tol": -1.0}, "tol"),
        (np.zeros((3, 2)), {"max_iter": 0}, "max_iter"),
        (np.zeros((3, 2)), {"check_every": 0}, "check_every"),
        (np.zeros((3, 2)), {"check_every": 2.5}, "check_every"),
        (np.zeros((3, 2)), {"marginal_strength": 0.0}, "marginal_strength must be in (0, 1]"),
        (np.zeros((3, 2)), {"marginal_strength": 1.5}, "marginal_strength"),
        (np.zeros((3, 2)), {"marginal_strength": np.nan}, "marginal_strength"),
        (np.zeros((0, 2)), {}, "no rows"),
        (np.array([["a", "b"]]), {}, "numeric"),
    ],
)
def test_input_validation(log_p, kwargs, message):
    with pytest.raises(SinkhornInputError, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        sinkhorn_knopp(log_p, **kwargs)
    assert issubclass(SinkhornInputError, ValueError)


def test_marginal_is_normalised():
    log_p = make_log_p(2000, 5, seed=18)
    a = sinkhorn_knopp(log_p, [1, 2, 3, 4, 5])
    b = sinkhorn_knopp(log_p, np.array([1, 2, 3, 4, 5]) / 15)
    np.testing.assert_allclose(a.target, np.arange(1, 6) / 15)
    np.testing.assert_array_equal(a.labels, b.labels)
