"""The Studio's server: Streamlit's ASGI app (``Home.py`` and its pages) plus the clip media route.

``selavi app`` runs ``streamlit run`` on this file; Streamlit sees the ``st.App`` below and serves it with
uvicorn, on the usual host and port. Next to Streamlit's own routes it mounts
``selavi_core.studio.serve.MEDIA`` at ``/selavi-media``: source clips and previews served with HTTP range
requests, only from the catalog's media folders and its previews folder (see that module). The pages
then play clips from same-origin URLs instead of reading whole files into Streamlit's memory.
Running ``Home.py`` directly (``streamlit run Home.py``, AppTest) still works: the pages fall back to
``st.video`` with a file when the route is not mounted.
"""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")  # before anything imports numba (UMAP)

import streamlit as st  # noqa: E402
from starlette.routing import Mount  # noqa: E402

from selavi_core.studio.serve import MEDIA, MEDIA_PREFIX  # noqa: E402

MEDIA.mounted = True
app = st.App("Home.py", routes=[Mount(MEDIA_PREFIX, app=MEDIA)])
