"""Everything the Studio's pages compute, as plain functions over a run folder (no streamlit here).

The pages under ``app/`` (installed as ``selavi_app``) are thin: they pick a run, a head and a cluster, call these functions and
draw the result. Keeping the logic here makes it testable without a browser and lets the app wrap
one ``StudioRun`` per run folder in ``st.cache_resource``, so a 200,000-clip run is read and indexed
once per process, not once per session or per click.
"""

from __future__ import annotations

from selavi_core.studio.compare import Contingency
from selavi_core.studio.runs import RunRef, runs_from_env
from selavi_core.studio.runview import HeadChoice, StudioRun, cluster_flow, contingency, head_agreement, open_run

__all__ = [
    "Contingency",
    "HeadChoice",
    "RunRef",
    "StudioRun",
    "cluster_flow",
    "contingency",
    "head_agreement",
    "open_run",
    "runs_from_env",
]
