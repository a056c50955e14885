"""Clustering metrics of SeLaVi's evaluation protocol (selavi-method.md §7.2), fast at VGG-Sound scale.

Everything is computed from one dense class x cluster contingency table built with ``np.bincount``
(sub-millisecond at N = 200k, K = 309; scikit-learn's sparse path is ~30x slower). The definitions
follow the official code where it has one:

- NMI, aNMI: scikit-learn's arithmetic normalisation, I(Y;C) / ((H(Y) + H(C)) / 2). aNMI needs the
  expected mutual information under random labelling; scikit-learn's ``adjusted_mutual_info_score``
  sums every hypergeometric term and takes 3-5 s at 200k x 309, so ``expected_mutual_information``
  here sums the same series by unique (class size, cluster size) pair and only over the window of
  the distribution that holds any mass (tails below 1e-20 are dropped). Tests check it against
  scikit-learn.
- ARI: scikit-learn's pair-counting formula, in exact integer arithmetic.
- Accuracy: maximum-weight one-to-one matching of clusters to classes (SciPy ``linear_sum_assignment``)
  on the rectangular table, so K != C works; unmatched clusters or classes count as errors. The
  official code asserted K == C.
- Purity ("avg purity" of the official code): the *unweighted* mean over non-empty clusters of
  max-class-count / size. ``purity_weighted`` is the usual (1/N) sum_k max_c n_kc, which equals
  many-to-one majority-vote accuracy.
- Entropy ("avg entropy"): unweighted mean over non-empty clusters of the Shannon entropy, in nats,
  of the class distribution inside the cluster.

Clips whose label is unknown (code -1, see ``Run.ground_truth``) are dropped before anything is
counted, so "non-empty cluster" means a cluster holding at least one *labelled* clip.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.special import gammaln

UNKNOWN = -1  # label code of a clip without ground truth
_EPS = float(np.finfo(np.float64).eps)
#: Half-width of the summed window of each hypergeometric term, in standard deviations plus a constant.
#: 10 sd + 30 leaves out mass below ~1e-20 for every size (Chernoff for large means, Poisson for small).
_EMI_SD = 10.0
_EMI_PAD = 30.0
_EMI_CHUNK = 4_000_000  # terms evaluated at once (memory ~ 10 x 8 bytes x this)


def _codes(y: Any, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        numeric = np.issubdtype(arr.dtype, np.floating) or arr.dtype == np.bool_
        if not numeric or not np.all(np.mod(arr, 1) == 0):
            raise ValueError(
                f"{name} must hold integer codes, got dtype {arr.dtype}; map class names to codes first "
                "(e.g. pandas.factorize)"
            )
    return arr.astype(np.int64, copy=False)


def _compact(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense 0..n-1 codes and the original value of each, in O(N) (no sort)."""
    if codes.size == 0:
        return codes, codes
    present = np.flatnonzero(np.bincount(codes))
    lookup = np.empty(int(codes.max()) + 1, dtype=np.int64)
    lookup[present] = np.arange(present.size)
    return lookup[codes], present


def labelled(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(y_true, y_pred)`` as int64 with the clips of unknown label (code -1) removed."""
    t, p = _codes(y_true, "y_true"), _codes(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} entries but y_pred has {p.size}")
    keep = t != UNKNOWN
    t, p = t[keep], p[keep]
    if t.size and (t.min() < 0 or p.min() < 0):
        raise ValueError("class codes must be >= 0 (or -1 for unknown) and cluster ids >= 0")
    return t, p


def contingency(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense class x cluster counts over labelled clips, with the class and cluster id of each row/column.

    Only classes and clusters that occur are kept, so every row and column sums to at least 1.
    """
    t, p = labelled(y_true, y_pred)
    tc, classes = _compact(t)
    pc, clusters = _compact(p)
    n_c, n_k = classes.size, clusters.size
    table = np.bincount(tc * n_k + pc, minlength=n_c * n_k).reshape(n_c, n_k)
    return table, classes, clusters


def _entropy(counts: np.ndarray) -> float:
    counts = counts[counts > 0].astype(np.float64)
    if counts.size <= 1:
        return 0.0
    total = counts.sum()
    return float(-np.sum(counts / total * (np.log(counts) - math.log(total))))


def _mutual_information(table: np.ndarray) -> float:
    """I(Y;C) in nats, as scikit-learn computes it (tiny terms zeroed, result clipped at 0)."""
    a, b = table.sum(axis=1), table.sum(axis=0)
    if a.size <= 1 or b.size <= 1:
        return 0.0
    n = float(table.sum())
    i, j = np.nonzero(table)
    nij = table[i, j].astype(np.float64)
    outer = a[i].astype(np.float64) * b[j].astype(np.float64)
    terms = nij / n * (np.log(nij) - math.log(n) - np.log(outer) + 2.0 * math.log(n))
    terms = np.where(np.abs(terms) < _EPS, 0.0, terms)
    return float(max(terms.sum(), 0.0))


def _nmi_from_table(table: np.ndarray) -> float:
    n_c, n_k = table.shape
    if n_c == n_k == 1 or n_c == n_k == 0:
        return 1.0  # neither labelling splits the data: a perfect match (scikit-learn's convention)
    mi = _mutual_information(table)
    if mi == 0.0:
        return 0.0
    return float(mi / ((_entropy(table.sum(axis=1)) + _entropy(table.sum(axis=0))) / 2.0))


def expected_mutual_information(class_sizes: np.ndarray, cluster_sizes: np.ndarray) -> float:
    """E[I(Y;C)] in nats when cluster labels are permuted at random (hypergeometric model of n_kc).

    Same series as scikit-learn's ``expected_mutual_information``, but summed once per unique
    (class size, cluster size) pair weighted by how often it occurs, and only over n_kc within
    ``_EMI_SD`` standard deviations (+ ``_EMI_PAD``) of the mean, outside which the probability mass is
    below 1e-20. At N = 200k, K = C = 309 this is ~0.2 s instead of 3-5 s.
    """
    a = np.asarray(class_sizes, dtype=np.int64)
    b = np.asarray(cluster_sizes, dtype=np.int64)
    a, b = a[a > 0], b[b > 0]
    n = int(a.sum())
    if n != int(b.sum()):
        raise ValueError("class and cluster sizes must sum to the same N")
    if n == 0:
        return 0.0
    ua, ca = np.unique(a, return_counts=True)
    ub, cb = np.unique(b, return_counts=True)
    pa = np.repeat(ua, ub.size)
    pb = np.tile(ub, ua.size)
    weight = np.repeat(ca, ub.size).astype(np.float64) * np.tile(cb, ua.size)
    mean = pa * pb / n
    var = pa * pb * (n - pa) * (n - pb) / (float(n) ** 2 * max(n - 1, 1))
    half = _EMI_SD * np.sqrt(var) + _EMI_PAD
    lo = np.maximum(np.maximum(1, pa + pb - n), np.floor(mean - half).astype(np.int64))
    hi = np.minimum(np.minimum(pa, pb), np.ceil(mean + half).astype(np.int64))
    length = np.maximum(hi - lo + 1, 0)

    log_fact = gammaln(np.arange(n + 1, dtype=np.float64) + 1.0)  # log(x!) for x = 0..N
    log_n = math.log(n)
    emi = 0.0
    # process pairs in chunks so that the ragged term arrays stay bounded in memory
    ends = np.cumsum(length)
    start_pair = 0
    while start_pair < pa.size:
        base = ends[start_pair - 1] if start_pair else 0
        stop_pair = int(np.searchsorted(ends, base + _EMI_CHUNK, side="right"))
        stop_pair = max(stop_pair, start_pair + 1)
        sl = slice(start_pair, stop_pair)
        lens = length[sl]
        total = int(lens.sum())
        if total:
            pair = np.repeat(np.arange(lens.size), lens)
            first = np.cumsum(lens) - lens
            nij = np.arange(total) - first[pair] + lo[sl][pair]
            ai, bj = pa[sl][pair], pb[sl][pair]
            log_p = (
                log_fact[ai] + log_fact[bj] + log_fact[n - ai] + log_fact[n - bj] - log_fact[n]
                - log_fact[nij] - log_fact[ai - nij] - log_fact[bj - nij] - log_fact[n - ai - bj + nij]
            )  # fmt: skip
            term = nij / n * (log_n + np.log(nij) - np.log(ai) - np.log(bj)) * np.exp(log_p)
            emi += float(np.dot(weight[sl][pair], term))
        start_pair = stop_pair
    return emi


def _anmi_from_table(table: np.ndarray) -> float:
    n_c, n_k = table.shape
    if n_c == n_k == 1 or n_c == n_k == 0:
        return 1.0
    if n_c == 1 or n_k == 1:
        return 0.0
    a, b = table.sum(axis=1), table.sum(axis=0)
    mi = _mutual_information(table)
    emi = expected_mutual_information(a, b)
    normalizer = (_entropy(a) + _entropy(b)) / 2.0
    # keep the sign when rounding makes these ~0 (scikit-learn's guard against 0/0 on perfect matches)
    den = normalizer - emi
    den = min(den, -_EPS) if den < 0 else max(den, _EPS)
    num = mi - emi
    num = min(num, -_EPS) if num < 0 else max(num, _EPS)
    return float(num / den)


def _ari_from_table(table: np.ndarray) -> float:
    n = int(table.sum())
    sum_sq = int(np.sum(table.astype(np.int64) ** 2))
    sum_a2 = int(np.sum(table.sum(axis=1).astype(np.int64) ** 2))
    sum_b2 = int(np.sum(table.sum(axis=0).astype(np.int64) ** 2))
    # ordered pair counts: same class & same cluster, different class & same cluster, ...
    tp = sum_sq - n
    fp = sum_b2 - sum_sq
    fn = sum_a2 - sum_sq
    tn = n * n - fp - fn - sum_sq
    if fn == 0 and fp == 0:
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def _accuracy_from_table(table: np.ndarray) -> float:
    n = table.sum()
    if n == 0:
        return 0.0
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / n)


def _cluster_purity_entropy(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per non-empty cluster: size, purity (max class share) and class entropy in nats."""
    size = table.sum(axis=0)
    keep = size > 0
    t, size = table[:, keep].astype(np.float64), size[keep].astype(np.float64)
    purity = t.max(axis=0) / size if t.size else np.zeros(0)
    share = t / size
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(share > 0, share * np.log(share), 0.0)
    entropy = -plogp.sum(axis=0) + 0.0  # + 0.0 turns -0.0 into 0.0
    return size, purity, entropy


def nmi(y_true: Any, y_pred: Any) -> float:
    """Normalised mutual information, arithmetic mean of the two entropies (scikit-learn's default)."""
    return _nmi_from_table(contingency(y_true, y_pred)[0])


def adjusted_nmi(y_true: Any, y_pred: Any) -> float:
    """Adjusted-for-chance NMI (scikit-learn's ``adjusted_mutual_info_score``, arithmetic), fast EMI."""
    return _anmi_from_table(contingency(y_true, y_pred)[0])


def ari(y_true: Any, y_pred: Any) -> float:
    """Adjusted Rand index (scikit-learn's pair-counting formula)."""
    return _ari_from_table(contingency(y_true, y_pred)[0])


def hungarian_accuracy(y_true: Any, y_pred: Any) -> float:
    """Share of clips whose cluster is matched to their class by the best one-to-one matching.

    Works for K != C: with more clusters than classes the extra clusters stay unmatched and their
    clips count as errors; with fewer, the unmatched classes' clips do.
    """
    return _accuracy_from_table(contingency(y_true, y_pred)[0])


def purity(y_true: Any, y_pred: Any) -> float:
    """SeLaVi's "avg purity": unweighted mean over non-empty clusters of (largest class count / size)."""
    _, pur, _ = _cluster_purity_entropy(contingency(y_true, y_pred)[0])
    return float(pur.mean()) if pur.size else 0.0


def purity_weighted(y_true: Any, y_pred: Any) -> float:
    """Size-weighted purity (1/N) sum_k max_c n_kc, i.e. many-to-one majority-vote accuracy."""
    table = contingency(y_true, y_pred)[0]
    n = table.sum()
    return float(table.max(axis=0).sum() / n) if n else 0.0


def mean_entropy(y_true: Any, y_pred: Any) -> float:
    """SeLaVi's "avg entropy": unweighted mean over non-empty clusters of the class entropy, in nats."""
    _, _, ent = _cluster_purity_entropy(contingency(y_true, y_pred)[0])
    return float(ent.mean()) if ent.size else 0.0


def cluster_table(y_true: Any, y_pred: Any, class_names: list[str] | None = None) -> pd.DataFrame:
    """One row per non-empty cluster: ``cluster, size, majority, majority_count, purity, entropy_nats``.

    ``size`` counts labelled clips only. ``majority`` is the class code, or its name when
    ``class_names`` is given (ties go to the lowest code).
    """
    table, classes, clusters = contingency(y_true, y_pred)
    size, pur, ent = _cluster_purity_entropy(table)
    if table.size:
        arg = table.argmax(axis=0)
        majority_code = classes[arg]
        majority_count = table[arg, np.arange(table.shape[1])]
    else:
        majority_code = majority_count = np.zeros(0, dtype=np.int64)
    majority: Any = [class_names[c] for c in majority_code] if class_names is not None else majority_code
    return pd.DataFrame(
        {
            "cluster": clusters.astype(np.int64),
            "size": size.astype(np.int64),
            "majority": majority,
            "majority_count": np.asarray(majority_count, dtype=np.int64),
            "purity": pur,
            "entropy_nats": ent,
        }
    )


def clustering_scores(y_true: Any, y_pred: Any, *, adjusted: bool = True) -> dict[str, Any]:
    """Every metric of the protocol from one contingency table (aNMI is ``None`` unless ``adjusted``).

    Keys: ``nmi, anmi, ari, accuracy, purity, purity_weighted, entropy, k`` where ``k`` is the number
    of clusters holding at least one labelled clip.
    """
    table = contingency(y_true, y_pred)[0]
    n = int(table.sum())
    _, pur, ent = _cluster_purity_entropy(table)
    return {
        "nmi": _nmi_from_table(table),
        "anmi": _anmi_from_table(table) if adjusted else None,
        "ari": float(_ari_from_table(table)),
        "accuracy": _accuracy_from_table(table),
        "purity": float(pur.mean()) if pur.size else 0.0,
        "purity_weighted": float(table.max(axis=0).sum() / n) if n else 0.0,
        "entropy": float(ent.mean()) if ent.size else 0.0,
        "k": int(pur.size),
    }
