"""The evaluation table of ``selavi evaluate``, as a DataFrame the Overview page can show."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pandas as pd

from selavi_core.evaluation import metrics

if TYPE_CHECKING:
    from selavi_core.studio.runview import StudioRun


def _as_frame(result: Any) -> pd.DataFrame:
    """Accept the shapes an evaluation result may take: a DataFrame, {"heads": [...]}, rows, or {head: row}."""
    if isinstance(result, pd.DataFrame):
        return result
    if isinstance(result, dict):
        for key in ("table", "heads", "rows"):
            if key in result and isinstance(result[key], list | pd.DataFrame):
                return _as_frame(result[key])
        if result and all(isinstance(v, dict) for v in result.values()):
            return pd.DataFrame.from_dict(result, orient="index")
        return pd.DataFrame([result])
    return pd.DataFrame(list(result))


def evaluation_table(sr: StudioRun) -> tuple[pd.DataFrame, str | None]:
    """(table, note): the run's metrics per head, from ``selavi_core.evaluation.evaluate`` when it is installed.

    Falls back to ``selavi_core.evaluation.metrics.clustering_scores`` per head (same protocol, without the
    extra columns ``selavi evaluate`` may add) and says so in the note. Memoised per run.
    """
    key = ("evaluation",)
    with sr._lock:
        if key in sr._memo:
            return sr._memo[key]
        note = None
        evaluate_run: Callable[..., dict[str, Any]] | None
        try:
            from selavi_core.evaluation.evaluate import evaluate_run as _evaluate_run

            evaluate_run = _evaluate_run
        except ImportError:
            evaluate_run = None
        if evaluate_run is not None:
            # k-means baselines are `selavi evaluate`'s job: they take minutes at 200k clips
            result = evaluate_run(sr.run, baselines=False)
            table = _as_frame(result)
            if "head" in table:
                table = table.set_index("head")
            if isinstance(result, dict) and "best_head" in result:
                note = (
                    f"Best head by NMI against the ground truth: head {result['best_head']} (an oracle choice, as in "
                    "SeLaVi's protocol; the Studio's own recommendation above uses no labels). Purity is the "
                    "unweighted mean over clusters, purity_weighted the size-weighted one; entropy in nats."
                )
        else:
            gt = sr.ground_truth
            if gt is None:
                raise ValueError("this run's catalog has no ground-truth labels")
            codes = gt[0]
            table = pd.DataFrame(
                [{"head": h, **metrics.clustering_scores(codes, sr.head(h).joint)} for h in range(sr.heads)]
            ).set_index("head")
            note = "Computed with selavi_core.evaluation.metrics (the `selavi evaluate` module is not installed)."
        sr._memo[key] = (table, note)
        return table, note
