"""Comparing the heads of one run: NMI/ARI between every pair, ordered contingency tables, cluster flow.

SeLaVi trains 10 decorrelated heads; the official tools show head 0 only. Here every pair of heads
(and each head against ground truth, when there is any) gets NMI and ARI, and any two heads get a
contingency table whose rows and columns are ordered so that agreement shows as a bright diagonal
and splits or merges as short horizontal or vertical runs beside it.

Pure functions of assignment arrays: ``StudioRun`` (``runview``) calls them and memoises the results,
so this module does not know the run object (and the two modules do not import each other).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from selavi_core.evaluation import metrics

GT_NAME = "ground truth"


def head_names(n_heads: int) -> list[str]:
    return [f"head {h}" for h in range(n_heads)]


def agreement_matrices(labels: Sequence[np.ndarray], names: Sequence[str]) -> dict[str, pd.DataFrame]:
    """{"nmi": DataFrame, "ari": DataFrame}: symmetric matrices over labelings, named by ``names``.

    A labeling named ``GT_NAME`` is ground truth: its unknown (-1) codes are dropped from its pairs.
    """
    names = list(names)
    m = len(labels)
    nmi, ari = np.eye(m), np.eye(m)
    for i in range(m):
        for j in range(i + 1, m):
            # ground truth goes first: the metrics drop its unknown (-1) codes
            a, b = (labels[j], labels[i]) if names[j] == GT_NAME else (labels[i], labels[j])
            nmi[i, j] = nmi[j, i] = metrics.nmi(a, b)
            ari[i, j] = ari[j, i] = metrics.ari(a, b)
    return {
        "nmi": pd.DataFrame(nmi, index=names, columns=names),
        "ari": pd.DataFrame(ari, index=names, columns=names),
    }


@dataclass(frozen=True)
class Contingency:
    """Counts of clips in (cluster of head A, cluster of head B), reordered to show structure."""

    head_a: int
    head_b: int
    table: np.ndarray  # int64 (Ka, Kb) in display order: table[i, j] = clips in rows[i] of A and cols[j] of B
    rows: np.ndarray  # cluster ids of head A, display order
    cols: np.ndarray  # cluster ids of head B, display order
    matched: float  # share of clips on the best one-to-one matching (the diagonal)

    def row_normalised(self) -> np.ndarray:
        """Each A-cluster's members as shares over B's clusters (rows of empty clusters stay 0)."""
        s = self.table.sum(axis=1, keepdims=True)
        return np.divide(self.table, s, out=np.zeros(self.table.shape), where=s > 0)


def contingency_counts(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """(k, k) counts including empty clusters, row = cluster in ``a``, column = cluster in ``b``."""
    table, rows, cols = metrics.contingency(a, b)
    full = np.zeros((k, k), dtype=np.int64)
    full[np.ix_(rows, cols)] = table
    return full


def order_contingency(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Row and column orders that put a contingency table's structure on the diagonal.

    The best one-to-one matching of rows to columns (Hungarian, maximum weight) forms the diagonal,
    strongest matched cell first; unmatched or empty rows follow by size, and unmatched columns follow
    ordered by the position of the row that holds most of them. What is off the diagonal is then
    disagreement: a row spread over several columns is a cluster the other head splits. Returns
    (row order, column order, matched share).
    """
    n_r, n_c = table.shape
    total = table.sum()
    r_idx, c_idx = linear_sum_assignment(table, maximize=True)
    strength = table[r_idx, c_idx]
    keep = strength > 0
    r_idx, c_idx, strength = r_idx[keep], c_idx[keep], strength[keep]
    first = np.argsort(-strength, kind="stable")
    rows = list(r_idx[first])
    seen = np.zeros(n_r, dtype=bool)
    seen[rows] = True
    rest = np.flatnonzero(~seen)
    rows += list(rest[np.argsort(-table[rest].sum(axis=1), kind="stable")])
    rows_arr = np.asarray(rows, dtype=np.int64)
    pos = np.empty(n_r, dtype=np.int64)
    pos[rows_arr] = np.arange(n_r)
    matched_cols = c_idx[first]
    taken = np.zeros(n_c, dtype=bool)
    taken[matched_cols] = True
    rest_c = np.flatnonzero(~taken)
    home = np.where(table[:, rest_c].sum(axis=0) > 0, pos[table[:, rest_c].argmax(axis=0)], n_r)  # empty last
    rest_c = rest_c[np.lexsort((-table[:, rest_c].max(axis=0), home))]
    cols_arr = np.concatenate([matched_cols, rest_c]).astype(np.int64)
    matched = float(strength.sum() / total) if total else 0.0
    return rows_arr, cols_arr, matched


def ordered_contingency(full: np.ndarray, head_a: int, head_b: int, *, drop_empty: bool = True) -> Contingency:
    """The (K, K) counts of two heads reordered by ``order_contingency`` (empty rows/columns dropped)."""
    rows, cols, matched = order_contingency(full)
    if drop_empty:
        rows = rows[full[rows].sum(axis=1) > 0]
        cols = cols[full[:, cols].sum(axis=0) > 0]
    return Contingency(head_a, head_b, full[np.ix_(rows, cols)], rows, cols, matched)


def cluster_flow_table(full: np.ndarray, cluster: int) -> pd.DataFrame:
    """Where the members of one cluster of head A went in head B (``full``: their counts), largest first.

    Columns: cluster (of B), count, share (of the A cluster), of_b (share of the B cluster that came
    from this A cluster: 1.0 means B's cluster is a pure subset).
    """
    row = full[cluster]
    nz = np.flatnonzero(row)
    nz = nz[np.argsort(-row[nz], kind="stable")]
    b_size = full.sum(axis=0)
    return pd.DataFrame(
        {
            "cluster": nz,
            "count": row[nz],
            "share": row[nz] / max(int(row.sum()), 1),
            "of_b": row[nz] / np.maximum(b_size[nz], 1),
        }
    )
