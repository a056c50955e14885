"""Map: a 2-D UMAP of the clips' audio-visual features (computed once per run), box/lasso to see clips."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st
import studio_ui as ui

from selavi_core.config import STUDIO
from selavi_core.studio.mapping import cached_map, colour_options, ensure_map, map_frame

ref, sr, head = ui.context()
if sr is None:
    st.stop()
st.title("Map")

res = cached_map(sr)
if res is None:
    note = st.info(
        f"The map of this run has not been computed yet: {min(sr.n, STUDIO.map_max_points):,} clips, "
        "a faiss k-NN graph and UMAP. It is computed once and saved in the run folder."
    )
    bar = st.progress(0.0, text="computing the map…")
    res = ensure_map(sr, progress=lambda f, msg: bar.progress(min(max(f, 0.0), 1.0), text=msg))
    bar.empty()
    note.empty()

if res.sampled:
    st.warning(f"Showing a sample of {len(res.rows):,} of {sr.n:,} clips, stratified by the clusters of head "
               f"{res.stratified_by} (every cluster keeps its share).")  # fmt: skip

colour = st.segmented_control("Colour by", colour_options(sr), default="cluster", key="_map_colour") or "cluster"
df = map_frame(sr, res, head, colour)
hover = "%{customdata[0]}<br>cluster %{customdata[1]}" + ("<br>%{customdata[2]}" if "label" in df else "")
custom = df[["clip_id", "cluster"] + (["label"] if "label" in df else [])].to_numpy()
fig = go.Figure(go.Scattergl(
    x=df["x"], y=df["y"], mode="markers", customdata=custom, hovertemplate=hover + "<extra></extra>",
    marker={"color": df["colour"], "colorscale": "Turbo", "size": 4 if len(df) > 20_000 else 7, "opacity": 0.8},
))  # fmt: skip
fig.update_layout(height=640, margin={"t": 10, "b": 10, "l": 10, "r": 10}, dragmode="lasso",
                  xaxis={"visible": False}, yaxis={"visible": False, "scaleanchor": "x"})  # fmt: skip
event = st.plotly_chart(
    fig, width="stretch", key="map_chart", on_select="rerun", selection_mode=("box", "lasso", "points")
)
st.caption(f"Colour: {colour} (head {head}). Draw a box or lasso to list the clips inside it.")

# Selections carry clip ids (customdata), never positional indices: robust to traces and sampling.
points = (event.selection.points if event is not None and event.selection else []) or []
picked = [p["customdata"][0] for p in points if p.get("customdata")]
st.session_state["_map_selection"] = picked  # the labelling issue reads the same key to label a lasso
if picked:
    rows = [sr.row_of[c] for c in picked if c in sr.row_of]
    st.subheader(f"{len(rows):,} clips selected")
    ui.player(sr, ui.current_clip(sr), head=head)
    page = ui.pager(-(-len(rows) // STUDIO.page_size), key="_map_page")
    ui.poster_grid(sr, rows[page * STUDIO.page_size : (page + 1) * STUDIO.page_size], key="map-grid")
ui.sync_query_params()
