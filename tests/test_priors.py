"""Cluster priors: shapes, rank-matching direction (ours and the official reciprocal), files, CLI strings."""

from __future__ import annotations

import numpy as np
import pytest

from selavi_core.errors import SelaviError
from selavi_core.selflabel.priors import (
    GAUSS_FLOOR,
    PriorError,
    PriorSpec,
    column_mass,
    from_file,
    gaussian_draw,
    parse_prior,
    rank_match,
    uniform,
    zipf,
)


def test_uniform():
    np.testing.assert_allclose(uniform(4), 0.25)
    with pytest.raises(PriorError):
        uniform(0)


def test_gaussian_draw_shape_spread_and_clamp():
    rng = np.random.default_rng(0)
    g = gaussian_draw(20000, rng, sd=0.1)
    assert g.shape == (20000,) and g.mean() == pytest.approx(1.0, abs=0.005) and g.std() == pytest.approx(0.1, rel=0.05)
    assert not np.array_equal(g, gaussian_draw(20000, rng, sd=0.1)), "each call (head) is a new draw"
    wide = gaussian_draw(20000, rng, sd=2.0)
    assert wide.min() == GAUSS_FLOOR and np.all(wide > 0), "clamped positive at the floor"
    assert np.all(wide[wide > GAUSS_FLOOR] > GAUSS_FLOOR)
    with pytest.raises(PriorError):
        gaussian_draw(5, rng, sd=-1)


def test_zipf():
    r = zipf(5, 1.0)
    np.testing.assert_allclose(r * (1 + 1 / 2 + 1 / 3 + 1 / 4 + 1 / 5), [1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
    np.testing.assert_allclose(zipf(6, 0.0), 1 / 6)
    assert r.sum() == pytest.approx(1.0)
    with pytest.raises(PriorError):
        zipf(5, -1.0)


@pytest.mark.parametrize("seed", range(20))
def test_rank_match_direction_property(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 60))
    target = rng.uniform(0.1, 3.0, k)
    mass = rng.uniform(0.0, 100.0, k)
    r = rank_match(target, mass)
    assert r.sum() == pytest.approx(1.0)
    smallest, largest = np.argmin(mass), np.argmax(mass)
    # the smallest target lands on the currently smallest cluster, the largest on the largest
    assert r[smallest] == pytest.approx(target.min() / target.sum())
    assert r[largest] == pytest.approx(target.max() / target.sum())
    # and the whole assignment is monotone in the current mass
    assert np.all(np.diff(r[np.argsort(mass)]) >= 0)
    np.testing.assert_allclose(np.sort(r), np.sort(target / target.sum()))
    # official HEAD variant: reciprocal of the rank-matched g, so the smallest cluster gets the LARGEST share
    rec = rank_match(target, mass, reciprocal=True)
    assert rec[smallest] == pytest.approx(rec.max())
    assert rec[largest] == pytest.approx(rec.min())
    np.testing.assert_allclose(rec, (1 / (r * target.sum())) / np.sum(1 / (r * target.sum())))


def test_rank_match_ties_and_errors():
    np.testing.assert_allclose(rank_match([3.0, 1.0, 2.0], [5.0, 5.0, 5.0]), [1 / 6, 2 / 6, 3 / 6])
    with pytest.raises(PriorError):
        rank_match([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(PriorError):
        rank_match([1.0, 0.0], [1.0, 2.0])
    with pytest.raises(PriorError):
        rank_match([1.0, 2.0], [1.0, np.nan])


def test_from_file_formats(tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_text("# cluster shares\nshare\n1\n2\n3\n4\n")
    np.testing.assert_allclose(from_file(csv, 4), [0.1, 0.2, 0.3, 0.4])
    txt = tmp_path / "p.txt"
    txt.write_text("1 2, 3;4\n")
    np.testing.assert_allclose(from_file(txt, 4), [0.1, 0.2, 0.3, 0.4])
    npy = tmp_path / "p.npy"
    np.save(npy, np.array([[1.0, 1.0], [1.0, 1.0]]))
    np.testing.assert_allclose(from_file(npy, 4), 0.25)


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("missing.csv", None, "does not exist"),
        ("short.csv", "1\n2\n3\n", "holds 3 numbers but the model has 4"),
        ("neg.csv", "1\n2\n-3\n4\n", "positive"),
        ("zero.csv", "1\n0\n3\n4\n", "positive"),
        ("nan.csv", "1\nnan\n3\n4\n", "NaN"),
        ("junk.csv", "1\n2\nthree\n4\n", "line 3"),
        ("bad.npy", "not an array", "not a readable .npy"),
    ],
)
def test_from_file_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(PriorError, match=message):
        from_file(path, 4)
    assert issubclass(PriorError, SelaviError) and issubclass(PriorError, ValueError)


def test_parse_prior_kinds(tmp_path):
    rng = np.random.default_rng(1)
    mass = np.array([5.0, 1.0, 3.0])
    uni = parse_prior("uniform")
    assert uni.kind == "uniform" and str(uni) == "uniform"
    np.testing.assert_allclose(uni.marginal(uni.draw(3, 2, rng)[0], mass), 1 / 3)

    gauss = parse_prior("gauss")
    assert gauss.kind == "gauss" and gauss.sd == 0.1 and not gauss.reciprocal
    bases = gauss.draw(50, 3, rng)
    assert bases.shape == (3, 50) and not np.array_equal(bases[0], bases[1]), "one draw per head"
    m = gauss.marginal(np.array([1.0, 2.0, 3.0]), mass)
    np.testing.assert_allclose(m, [3 / 6, 1 / 6, 2 / 6])  # smallest target to the smallest cluster (index 1)
    rec = parse_prior("gauss-reciprocal").marginal(np.array([1.0, 2.0, 3.0]), mass)
    assert rec[1] == rec.max() and parse_prior("gauss-reciprocal").reciprocal
    assert parse_prior("gauss:0.25").sd == 0.25

    z = parse_prior("zipf:1.5")
    assert z.kind == "zipf" and z.s == 1.5
    zb = z.draw(4, 2, rng)
    np.testing.assert_allclose(zb[0], zipf(4, 1.5))
    np.testing.assert_allclose(np.sort(z.marginal(zb[0], np.arange(4.0))), np.sort(zipf(4, 1.5)))

    path = tmp_path / "prior.txt"
    path.write_text("1 1 2\n")
    f = parse_prior(str(path))
    assert f.kind == "file"
    np.testing.assert_allclose(f.draw(3, 2, rng), [[0.25, 0.25, 0.5]] * 2)
    np.testing.assert_allclose(f.marginal(f.draw(3, 1, rng)[0], mass), [0.5, 0.25, 0.25])

    with pytest.raises(PriorError, match="without a path"):  # built by hand, not by parse_prior
        PriorSpec("mine", "file").draw(3, 1, rng)


@pytest.mark.parametrize(
    "spec,message",
    [
        ("zipf", "needs an exponent"),
        ("zipf:abc", "must be a number"),
        ("zipf:-1", "non-negative"),
        ("gauss:x", "must be a number"),
        ("poisson", "unknown prior"),
        ("priors/nowhere.csv", "does not exist"),
    ],
)
def test_parse_prior_errors(spec, message):
    with pytest.raises(PriorError, match=message):
        parse_prior(spec)


def test_column_mass():
    log_p = np.log(np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]))
    np.testing.assert_allclose(column_mass(log_p), [1.6, 1.4])
    np.testing.assert_allclose(column_mass(log_p, power=2.0), [0.25 + 0.81 + 0.04, 0.25 + 0.01 + 0.64])
