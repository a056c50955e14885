"""Nearest clips by feature ("more like this clip"), with a faiss index built once per run and process.

An exact inner-product search over the unit-norm audio-visual embeddings. The index stores vectors
as float16 (``IndexScalarQuantizer`` QT_fp16): half the memory of a float32 flat index (400 MB rather
than 800 MB at 200,000 clips x 1024 dimensions) at the precision the run's features already have.
One query takes a few milliseconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from selavi_core.config import STUDIO
from selavi_core.studio.features import FEATURE_KINDS, embed, embed_chunks, feature_dim

if TYPE_CHECKING:
    import faiss

    from selavi_core.studio.runview import StudioRun


def feature_index(sr: StudioRun, kind: str = "both") -> faiss.Index:
    """The run's faiss index for ``kind`` features (built on first use, then memoised on ``sr``)."""
    if kind not in FEATURE_KINDS:
        raise ValueError(f"kind must be one of {FEATURE_KINDS}")
    key = ("faiss", kind)
    with sr._lock:
        if key not in sr._memo:
            import faiss

            d = feature_dim(sr.run, kind)
            index = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
            for _, x in embed_chunks(sr.run, None, kind):
                index.add(np.ascontiguousarray(x))
            sr._memo[key] = index
        return sr._memo[key]


def similar_clips(
    sr: StudioRun, row: int, *, k: int = STUDIO.similar_k, kind: str = "both", head: int | None = None
) -> pd.DataFrame:
    """The ``k`` clips most similar to clip ``row`` (itself excluded), most similar first.

    Columns: row, clip_id, similarity (cosine of the embeddings, 1 = identical), label when the
    catalog has one, and cluster of ``head`` when given.
    """
    index = feature_index(sr, kind)
    q = np.ascontiguousarray(embed(sr.run, np.asarray([row]), kind))
    sims, idx = index.search(q, min(k + 1, sr.n))
    sims, idx = sims[0], idx[0]
    keep = (idx >= 0) & (idx != row)
    sims, idx = sims[keep][:k], idx[keep][:k]
    out = sr.clip_rows(idx)
    out["similarity"] = sims.astype(np.float64)
    if head is not None:
        out["cluster"] = sr.head(head).joint[idx]
    return out
