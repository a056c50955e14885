"""Clusters: the chosen head's cluster index, one cluster's members as a poster grid, one player, a montage."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st
import studio_ui as ui

from selavi_core.config import STUDIO
from selavi_core.montage import cluster_montage

ref, sr, head = ui.context()
if sr is None:
    st.stop()

idx = sr.cluster_index(head)
SORTS = {"size": "size", "purity": "purity", "entropy": "entropy", "A/V agreement": "av_agreement",
         "mean confidence": "mean_confidence", "cluster id": None}  # fmt: skip
if sr.ground_truth is None:
    SORTS = {k: v for k, v in SORTS.items() if v not in ("purity", "entropy")}

sizes = idx["size"].to_numpy()


def _pick_from_table() -> None:
    sel = st.session_state.get("cluster_table")
    rows = sel.selection.rows if sel is not None else []
    order = st.session_state.get("_cluster_order", [])
    if rows and rows[0] < len(order):
        ui.set_shared(ui.CLUSTER, int(order[rows[0]]))


st.title(f"Clusters of head {head}")
left, right = st.columns([2, 3], gap="large")
with left:
    c1, c2 = st.columns([3, 2])
    sort_by = c1.selectbox("Sort clusters by", list(SORTS), key="_sort")
    descending = c2.toggle("Largest first", value=sort_by not in ("entropy", "cluster id"), key=f"_desc_{sort_by}")
    col = SORTS[sort_by]
    view = idx if col is None else idx.sort_values(col, ascending=not descending, na_position="last", kind="stable")
    if col is None and descending:
        view = view.iloc[::-1]
    st.session_state["_cluster_order"] = view.index.to_list()
    show = ["size", "av_agreement", "mean_confidence"] + [c for c in ("majority", "purity", "entropy") if c in view]
    st.dataframe(
        view[show], key="cluster_table", on_select=_pick_from_table, selection_mode="single-row", height=420,
        width="stretch",
        column_config={
            "size": st.column_config.NumberColumn("size", format="%d"),
            "av_agreement": st.column_config.ProgressColumn("A/V agreement", min_value=0.0, max_value=1.0,
                                                            format="percent"),
            "mean_confidence": st.column_config.NumberColumn("mean conf.", format="%.2f"),
            "purity": st.column_config.NumberColumn("purity", format="percent"),
            "entropy": st.column_config.NumberColumn("entropy (bits)", format="%.2f"),
        },
    )  # fmt: skip
    st.caption(
        "Select a row to open that cluster. A/V agreement: members whose video-only and audio-only "
        "predictions both equal the joint cluster."
    )
    cluster = ui.shared_selectbox(st, "Cluster", list(range(sr.k)), ui.CLUSTER, int(sizes.argmax()),
                                  format_func=lambda c: f"{c}  ({sizes[c]:,} clips)")  # fmt: skip

row_info = idx.loc[cluster]
with right:
    st.subheader(f"Cluster {cluster}")
    m = st.columns(4)
    m[0].metric("clips", f"{int(row_info['size']):,}")
    m[1].metric("A/V agreement", f"{row_info['av_agreement']:.0%}" if row_info["size"] else "–")
    m[2].metric("mean confidence", f"{row_info['mean_confidence']:.2f}" if row_info["size"] else "–")
    if "purity" in idx:
        m[3].metric("purity", f"{row_info['purity']:.0%}" if row_info["labelled"] else "–",
                    help=f"majority class: {row_info['majority']}")  # fmt: skip
    montage_on = st.toggle("Show the montage (several members playing at once)", key="_montage")
    if montage_on:
        path = cluster_montage(sr, head, cluster, render=False)
        if path is None:
            with st.spinner("Rendering the montage once (cached in the run folder)…"):
                try:
                    path = cluster_montage(sr, head, cluster)
                except Exception as err:  # a broken preview must not take the page down
                    path = None
                    st.error(f"Montage failed: {err}")
        if path is not None:
            st.video(str(path), loop=True)
        elif int(row_info["size"]):
            ui.placeholder("no member has a playable preview")
    else:
        clip_row = ui.current_clip(sr)
        if clip_row is not None and int(sr.head(head).joint[clip_row]) != cluster:
            clip_row = None  # the clip in the player belongs to another cluster
        ui.player(sr, clip_row, head=head)
        if clip_row is not None:
            st.page_link(
                ui.APP_DIR / "views" / "similar.py",
                label="Clips similar to this one →",
                query_params={"run": ref.name, "head": str(head), "clip": str(sr.clip_ids[clip_row])},
            )
    if "purity" in idx and row_info["labelled"]:
        hist = sr.cluster_histogram(head, cluster).head(15)
        fig = go.Figure(go.Bar(x=hist["count"][::-1], y=hist["label"][::-1].astype(str), orientation="h"))
        fig.update_layout(height=60 + 22 * len(hist), margin={"t": 10, "b": 10, "l": 10, "r": 10},
                          xaxis_title="clips (ground truth)")  # fmt: skip
        st.plotly_chart(fig, width="stretch", key="gt_hist")

st.divider()
g1, g2 = st.columns([3, 2])
order_label = g1.segmented_control(
    "Members", ["most confident first", "least confident first (borderline)"], key="_order",
    default="most confident first",
)  # fmt: skip
order = "least" if order_label and order_label.startswith("least") else "most"
with g2:
    page = ui.pager(sr.pages(head, cluster), key=f"_members_page_{head}_{cluster}_{order}")
members = sr.member_table(head, cluster, order=order, page=page, page_size=STUDIO.page_size)
captions = [
    f"{r.clip_id} · {r.confidence:.2f}" + (f" · {r.label}" if "label" in members and isinstance(r.label, str) else "")
    for r in members.itertuples()
]
ui.poster_grid(sr, members["row"], key=f"grid-{head}-{cluster}", captions=captions)
clip_row = ui.current_clip(sr)
ui.sync_query_params(cluster=cluster, clip=None if clip_row is None else sr.clip_ids[clip_row])
