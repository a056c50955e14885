"""Clustering metrics: agreement with scikit-learn, hand-computed purity/entropy/accuracy, invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, normalized_mutual_info_score

from selavi_core.evaluation import metrics as m


def _noisy(rng: np.random.Generator, n: int, c: int, k: int, keep: float) -> tuple[np.ndarray, np.ndarray]:
    """Classes 0..c-1 and clusters that copy the class (mod k) with probability ``keep``, else random."""
    y = rng.integers(0, c, n)
    p = np.where(rng.random(n) < keep, y % k, rng.integers(0, k, n))
    return y, p


CASES = [
    # (n, classes, clusters, share of clips whose cluster follows the class)
    (1000, 10, 10, 0.0),
    (1000, 10, 10, 0.6),
    (5000, 7, 20, 0.8),
    (300, 30, 4, 0.5),
    (2000, 2, 2, 0.9),
    (60, 40, 45, 0.3),
    (3000, 25, 25, 1.0),
]


@pytest.mark.parametrize(("n", "c", "k", "keep"), CASES)
def test_agrees_with_sklearn(n: int, c: int, k: int, keep: float) -> None:
    y, p = _noisy(np.random.default_rng(n + c + k), n, c, k, keep)
    assert m.nmi(y, p) == pytest.approx(normalized_mutual_info_score(y, p), abs=1e-12)
    assert m.adjusted_nmi(y, p) == pytest.approx(adjusted_mutual_info_score(y, p), abs=1e-10)
    assert m.ari(y, p) == pytest.approx(adjusted_rand_score(y, p), abs=1e-12)
    scores = m.clustering_scores(y, p)
    assert scores["nmi"] == pytest.approx(normalized_mutual_info_score(y, p), abs=1e-12)
    assert scores["anmi"] == pytest.approx(adjusted_mutual_info_score(y, p), abs=1e-10)
    assert scores["ari"] == pytest.approx(adjusted_rand_score(y, p), abs=1e-12)


def test_agrees_with_sklearn_on_skewed_sizes() -> None:
    """Very unequal cluster sizes stress the truncated expected-MI sum (large and tiny hypergeometric means)."""
    rng = np.random.default_rng(7)
    y = rng.choice(12, size=20_000, p=np.r_[0.5, np.full(11, 0.5 / 11)])
    p = np.where(rng.random(y.size) < 0.7, y, rng.choice(30, size=y.size, p=np.r_[0.4, np.full(29, 0.6 / 29)]))
    assert m.adjusted_nmi(y, p) == pytest.approx(adjusted_mutual_info_score(y, p), abs=1e-10)
    assert m.nmi(y, p) == pytest.approx(normalized_mutual_info_score(y, p), abs=1e-12)
    assert m.ari(y, p) == pytest.approx(adjusted_rand_score(y, p), abs=1e-12)


def test_degenerate_labellings_follow_sklearn() -> None:
    one = np.zeros(10, dtype=int)
    split = np.arange(10) % 3
    for y, p in ((one, one), (one, split), (split, one), (split, split), (np.arange(10), np.arange(10))):
        assert m.nmi(y, p) == pytest.approx(normalized_mutual_info_score(y, p))
        assert m.adjusted_nmi(y, p) == pytest.approx(adjusted_mutual_info_score(y, p))
        assert m.ari(y, p) == pytest.approx(adjusted_rand_score(y, p))


def test_contingency_counts_and_ids() -> None:
    y = np.array([5, 5, 2, 2, 2, -1, 9])
    p = np.array([3, 7, 7, 7, 3, 3, 100])
    table, classes, clusters = m.contingency(y, p)
    assert classes.tolist() == [2, 5, 9]
    assert clusters.tolist() == [3, 7, 100]
    # rows = classes 2, 5, 9; columns = clusters 3, 7, 100; the clip with label -1 is not counted
    assert table.tolist() == [[1, 2, 0], [1, 1, 0], [0, 0, 1]]


# A small table written out by hand: 3 classes (a=0, b=1, c=2), 3 clusters, 12 labelled clips.
#   cluster 0: a a a a b      size 5, majority a (4), purity 4/5
#   cluster 1: b b b          size 3, majority b (3), purity 1
#   cluster 2: a b c c        size 4, majority c (2), purity 2/4
HAND_Y = np.array([0, 0, 0, 0, 1] + [1, 1, 1] + [0, 1, 2, 2])
HAND_P = np.array([0] * 5 + [1] * 3 + [2] * 4)


def test_purity_and_entropy_by_hand() -> None:
    assert m.purity(HAND_Y, HAND_P) == pytest.approx((4 / 5 + 1 + 2 / 4) / 3)
    assert m.purity_weighted(HAND_Y, HAND_P) == pytest.approx((4 + 3 + 2) / 12)
    h0 = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))
    h1 = 0.0
    h2 = -(0.25 * math.log(0.25) * 2 + 0.5 * math.log(0.5))
    assert m.mean_entropy(HAND_Y, HAND_P) == pytest.approx((h0 + h1 + h2) / 3)
    table = m.cluster_table(HAND_Y, HAND_P, class_names=["a", "b", "c"])
    assert table["cluster"].tolist() == [0, 1, 2]
    assert table["size"].tolist() == [5, 3, 4]
    assert table["majority"].tolist() == ["a", "b", "c"]
    assert table["majority_count"].tolist() == [4, 3, 2]
    assert table["purity"].tolist() == pytest.approx([0.8, 1.0, 0.5])
    assert table["entropy_nats"].tolist() == pytest.approx([h0, h1, h2])
    # one-to-one matching: 0->a (4), 1->b (3), 2->c (2) = 9 of 12
    assert m.hungarian_accuracy(HAND_Y, HAND_P) == pytest.approx(9 / 12)


def test_unknown_labels_are_ignored() -> None:
    y = np.r_[HAND_Y, [-1, -1, -1]]
    p = np.r_[HAND_P, [0, 1, 7]]  # cluster 7 holds only an unlabelled clip: not a non-empty cluster
    assert m.clustering_scores(y, p) == m.clustering_scores(HAND_Y, HAND_P)
    assert m.clustering_scores(y, p)["k"] == 3


def test_hungarian_more_clusters_than_classes() -> None:
    # 2 classes, 4 clusters: class 0 is split 3 + 2 over clusters 0 and 1, class 1 split 4 + 1 over 2 and 3.
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    p = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    # best one-to-one: cluster 0 -> class 0 (3), cluster 2 -> class 1 (4); clusters 1 and 3 stay unmatched
    assert m.hungarian_accuracy(y, p) == pytest.approx(7 / 10)
    assert m.purity_weighted(y, p) == pytest.approx(1.0)  # many-to-one would be perfect


def test_hungarian_fewer_clusters_than_classes() -> None:
    # 3 classes, 2 clusters: cluster 0 = {a a a b}, cluster 1 = {b b c c c c}
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    p = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    # cluster 0 -> a (3), cluster 1 -> c (4); class b is unmatched
    assert m.hungarian_accuracy(y, p) == pytest.approx(7 / 10)


def test_hungarian_prefers_global_over_greedy_matching() -> None:
    # greedy takes the largest cell (class 0, cluster 0: 5) and is left with (class 1, cluster 1: 0) -> 5;
    # the best matching crosses over: 4 + 4 = 8
    table = np.array([[5, 4], [4, 0]])  # rows classes, columns clusters
    y = np.repeat([0, 0, 1, 1], table.ravel())
    p = np.repeat([0, 1, 0, 1], table.ravel())
    assert m.hungarian_accuracy(y, p) == pytest.approx((4 + 4) / 13)


def test_permutation_invariance() -> None:
    rng = np.random.default_rng(3)
    y, p = _noisy(rng, 4000, 12, 15, 0.6)
    relabel_clusters = rng.permutation(40)[:15]  # arbitrary distinct ids, not 0..K-1
    relabel_classes = rng.permutation(12)
    base = m.clustering_scores(y, p)
    moved = m.clustering_scores(relabel_classes[y], relabel_clusters[p])
    order = rng.permutation(y.size)
    shuffled = m.clustering_scores(y[order], p[order])
    for key, value in base.items():
        assert moved[key] == pytest.approx(value, abs=1e-12), key
        assert shuffled[key] == pytest.approx(value, abs=1e-12), key


def test_perfect_and_random_clusterings() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 9, 5000)
    perfect = m.clustering_scores(y, (y * 7 + 3) % 11)
    assert perfect["nmi"] == pytest.approx(1.0)
    assert perfect["accuracy"] == pytest.approx(1.0)
    assert perfect["purity"] == pytest.approx(1.0)
    assert perfect["entropy"] == pytest.approx(0.0, abs=1e-12)
    rand = m.clustering_scores(y, rng.integers(0, 9, y.size))
    assert abs(rand["ari"]) < 0.01 and abs(rand["anmi"]) < 0.01
    assert rand["nmi"] < 0.01


def test_adjusted_flag_skips_anmi() -> None:
    scores = m.clustering_scores(HAND_Y, HAND_P, adjusted=False)
    assert scores["anmi"] is None
    assert set(scores) == {"nmi", "anmi", "ari", "accuracy", "purity", "purity_weighted", "entropy", "k"}


def test_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        m.nmi([0, 1, 2], [0, 1])


def test_class_names_are_refused_with_a_clear_message() -> None:
    """Metrics take integer codes; strings (a common slip) get a ValueError naming the fix."""
    with pytest.raises(ValueError, match="integer codes.*factorize"):
        m.nmi(np.array(["3", "7", "3"]), [0, 1, 0])
    with pytest.raises(ValueError, match="integer codes"):
        m.nmi([0.0, 1.5, 1.0], [0, 1, 0])
