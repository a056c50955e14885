"""Map: a 2-D UMAP of the clips' audio-visual features (computed once per run), box/lasso to see clips.

Labelling: colour and filter the points by their human label, and give the clips of a box/lasso
selection one label (``label_clips``: a per-clip label that wins over cluster names).
"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from selavi_app import studio_ui as ui
from selavi_core.config import LABELS, STUDIO
from selavi_core.studio.browse import has_human_labels, label_mask
from selavi_core.studio.labelling import NO_LABEL, STUDIO_SOURCE, label_options
from selavi_core.studio.mapping import HUMAN_LABEL, cached_map, colour_options, ensure_map, map_frame

ref, sr, head = ui.context()
if sr is None:
    st.stop()
st.title("Map")
ui.show_flash()
store = ui.store_or_warning(sr)
seen = store.version() if store is not None else 0  # read before anything the user sees is drawn
labels = store.effective_labels(head) if store is not None else None
human = labels["label"].to_numpy(dtype=object) if labels is not None else None
has_human = has_human_labels(labels)
can_edit = store is not None and ui.annotator() is not None


def _label_selection(version: int) -> None:
    ids = list(st.session_state.get("_map_selection") or [])
    label = ui.field("_map_label")
    if not ids or not label:
        ui.flash("warning", "Select clips on the map and type a label first.")
        return
    ui.run_edit(
        lambda who: store.label_clips(ids, label, annotator=who, expected_version=version, head=head,
                                      source=STUDIO_SOURCE),
        f"{len(ids)} clips labelled {label!r}.",
    )  # fmt: skip


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

f1, f2 = st.columns([2, 3])
with f1:
    options = colour_options(sr, human=has_human)
    colour = st.segmented_control("Colour by", options, default="cluster", key="_map_colour") or "cluster"
    colour = colour if colour in options else "cluster"
df = map_frame(sr, res, head, colour, human=human)
if has_human:
    keep = f2.multiselect("Show only clips labelled", label_options(labels), key=f"_map_filter_{head}")
    if keep:
        df = df[label_mask(df["human"], keep)]
extra = [c for c in ("label", "human") if c in df]
hover = "%{customdata[0]}<br>cluster %{customdata[1]}" + "".join(
    f"<br>{'ground truth' if c == 'label' else 'human label'}: %{{customdata[{i + 2}]}}" for i, c in enumerate(extra)
)
custom = df[["clip_id", "cluster", *extra]].astype(object).where(df[["clip_id", "cluster", *extra]].notna(), "–")
fig = go.Figure(go.Scattergl(
    x=df["x"], y=df["y"], mode="markers", customdata=custom.to_numpy(), hovertemplate=hover + "<extra></extra>",
    marker={"color": df["colour"], "colorscale": "Turbo", "size": 4 if len(df) > 20_000 else 7, "opacity": 0.8},
    showlegend=False,
))  # fmt: skip
if colour == HUMAN_LABEL:  # a legend: one empty trace per label, in the points' colours
    shown = df.drop_duplicates("colour")
    for lab, col in zip(shown["human"], shown["colour"], strict=True):
        fig.add_trace(go.Scattergl(x=[None], y=[None], mode="markers", name=lab if isinstance(lab, str) else NO_LABEL,
                                   marker={"color": col, "size": 9}, showlegend=True, hoverinfo="skip"))  # fmt: skip
fig.update_layout(height=640, margin={"t": 10, "b": 10, "l": 10, "r": 10}, dragmode="lasso",
                  xaxis={"visible": False}, yaxis={"visible": False, "scaleanchor": "x"},
                  legend={"orientation": "h", "x": 0, "y": 0, "yanchor": "bottom", "bgcolor": "rgba(255,255,255,0.75)"})  # fmt: skip
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
    if store is not None:
        l1, l2 = st.columns([4, 1], vertical_alignment="bottom")
        l1.text_input(f"Label for the {len(rows):,} selected clips", key="_map_label", disabled=not can_edit,
                      placeholder="e.g. dog barking", max_chars=LABELS.max_name_length)  # fmt: skip
        l2.button("Label the selection", key="_map_label_btn", on_click=_label_selection, args=(seen,),
                  disabled=not can_edit, type="primary", width="stretch")  # fmt: skip
        st.caption(ui.EDIT_HINT if not can_edit else "Their own label wins over cluster names, in every head.")
    ui.player(sr, ui.current_clip(sr), head=head)
    page = ui.pager(-(-len(rows) // STUDIO.page_size), key="_map_page")
    ui.poster_grid(sr, rows[page * STUDIO.page_size : (page + 1) * STUDIO.page_size], key="map-grid")
ui.sync_query_params()
