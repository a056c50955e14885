"""SeLaVi Studio: the Streamlit entry point (``selavi app RUN_DIR ...`` runs this file, ``selavi_app.HOME``).

It only declares the pages and draws the shared sidebar (run and head pickers); each page under
``views/`` is a thin script over ``selavi_core.studio``. Deep links: ``/clusters?run=NAME&head=3&cluster=12`` (never
who edits: that is the signed-in user, ``studio_ui.require_user``, or in single-user mode the sidebar's name).
(The folder is not called ``pages/``: Streamlit treats a ``pages/`` folder next to the entry script as
a legacy multipage app, and a deep link to ``/clusters`` would then run that page without this script.)
"""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")  # before anything imports numba (UMAP)

import streamlit as st  # noqa: E402

from selavi_app import studio_ui as ui  # noqa: E402
from selavi_app.studio_ui import APP_DIR  # noqa: E402

st.set_page_config(page_title="SeLaVi Studio", page_icon=":material/movie:", layout="wide")

PAGES = [
    st.Page(
        APP_DIR / "views" / "overview.py", title="Overview", icon=":material/home:", url_path="overview", default=True
    ),
    st.Page(APP_DIR / "views" / "clusters.py", title="Clusters", icon=":material/grid_view:", url_path="clusters"),
    st.Page(
        APP_DIR / "views" / "compare.py", title="Compare heads", icon=":material/compare_arrows:", url_path="compare"
    ),
    st.Page(APP_DIR / "views" / "map.py", title="Map", icon=":material/scatter_plot:", url_path="map"),
    st.Page(APP_DIR / "views" / "similar.py", title="Similar clips", icon=":material/search:", url_path="similar"),
    st.Page(APP_DIR / "views" / "labels.py", title="Labels", icon=":material/label:", url_path="labels"),
]

# The page is resolved from the URL first (so a deep link opened before signing in leads to its page after),
# but with --auth / --auth-header nothing is listed or run before the sign-in form (or the refusal) is passed.
page = st.navigation(PAGES, position="sidebar" if ui.signed_in() else "hidden")
ui.require_user()
st.session_state["_studio"] = ui.sidebar()
ui.run_page(page)
