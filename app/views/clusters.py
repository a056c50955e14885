"""Clusters: the chosen head's cluster index, one cluster's members as a poster grid, one player, a montage.

Labelling: name the cluster inline, merge clusters from the index, split a cluster (k-means proposal,
then apply, then name the parts), and correct single clips of the grid ("not this", their own label).
Every edit passes the store version read before this page was drawn (``seen``), so an edit based on
a view someone else has changed since is refused with a message instead of overwriting theirs.
"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from selavi_app import studio_ui as ui
from selavi_core.config import LABELS, STUDIO
from selavi_core.labels import LabelError
from selavi_core.studio.browse import (
    MEMBER_ORDERS,
    clip_in_cluster,
    cluster_choice_label,
    cluster_sorts,
    descending_by_default,
    filter_clusters_by_labels,
    has_human_labels,
    index_columns,
    member_captions,
    member_order,
    sort_clusters,
    split_parts_max,
)
from selavi_core.studio.labelling import (
    STUDIO_SOURCE,
    clip_tag,
    cluster_label_counts,
    describe_name,
    index_with_names,
    label_options,
    name_info,
    proposal_table,
    reset_clips,
    splittable_nodes,
    sub_clusters,
)
from selavi_core.studio.montage import cluster_montage

ref, sr, head = ui.context()
if sr is None:
    st.stop()

store = ui.store_or_warning(sr)
seen = store.version() if store is not None else 0  # read before anything the user sees is drawn
labels = store.effective_labels(head) if store is not None else None
names = store.clusters(head) if store is not None else None
can_edit = store is not None and ui.annotator() is not None
idx = sr.cluster_index(head)
if names is not None:
    idx = index_with_names(idx, names)
SORTS = cluster_sorts(sr.ground_truth is not None)
sizes = idx["size"].to_numpy()


def _cluster_label(c: int) -> str:
    return cluster_choice_label(idx, c)


# ---- edit callbacks (run before the next script run; ``seen`` is bound when the button is drawn) -----
def _rename(node: str, key: str, version: int) -> None:
    new = ui.field(key)
    ui.run_edit(
        lambda who: store.rename_cluster(head, node, new or None, annotator=who, expected_version=version,
                                         source=STUDIO_SOURCE),
        f"Cluster {node} is now named {new!r}." if new else f"The name of cluster {node} was cleared.",
        attempted=new,
    )  # fmt: skip


def _merge(version: int) -> None:
    picked = st.session_state.get(f"_merge_{head}") or []
    name = ui.field(f"_merge_name_{head}") or None
    ok = ui.run_edit(
        lambda who: store.merge_clusters(head, picked, name=name, annotator=who, expected_version=version,
                                         source=STUDIO_SOURCE),
        lambda ev: f"Merged clusters {', '.join(map(str, picked))}" + (f" as {ev.new['name']!r}." if ev.new.get("name")
                                                                       else " (no name yet)."),
    )  # fmt: skip
    if ok:
        st.session_state[f"_merge_{head}"] = []


def _propose(node: str, k_key: str) -> None:
    try:
        parts = store.propose_split(head, node, k=int(st.session_state.get(k_key) or LABELS.split_k))
    except LabelError as err:
        ui.flash("error", f"Cannot split: {err}")
        return
    st.session_state["_split_proposal"] = {"head": head, "node": node, "parts": parts}


def _apply_split(node: str, version: int) -> None:
    prop = st.session_state.get("_split_proposal") or {}
    ok = ui.run_edit(
        lambda who: store.split_cluster(head, node, proposal=prop.get("parts"), annotator=who,
                                        expected_version=version, source=STUDIO_SOURCE),
        lambda ev: f"Split cluster {node} into " + ", ".join(f"{s} ({len(v)} clips)" for s, v in ev.new["parts"].items())
        + ": name the parts below.",
    )  # fmt: skip
    if ok:
        st.session_state.pop("_split_proposal", None)


def _clips(action: str, pick_key: str, version: int) -> None:
    ids = list(st.session_state.get(pick_key) or [])
    if not ids:
        ui.flash("warning", "Select one or more clips first.")
        return
    label = ui.field("_clip_label") or None
    n = f"{len(ids)} clip{'s' * (len(ids) != 1)}"
    if action == "override":
        if label is None:
            ui.flash("warning", "Type the label to give the selected clips.")
            return
        ok = ui.run_edit(
            lambda who: store.override_clips(ids, label, annotator=who, expected_version=version, head=head,
                                             source=STUDIO_SOURCE),
            f"{n} now labelled {label!r} (their own label wins over any cluster name).",
        )  # fmt: skip
    elif action == "reject":
        ok = ui.run_edit(
            lambda who: store.reject_clips(head, ids, annotator=who, expected_version=version, source=STUDIO_SOURCE),
            f"{n} marked 'not this': they no longer take the cluster's name.",
        )
    else:
        ok = ui.run_edit(
            lambda who: reset_clips(store, head, ids, annotator=who, expected_version=version),
            lambda done: f"{n} follow their cluster's name again." if done else f"{n} had nothing to reset.",
        )
    if ok:
        st.session_state[pick_key] = []


def _pick_from_table() -> None:
    sel = st.session_state.get("cluster_table")
    rows = sel.selection.rows if sel is not None else []
    order = st.session_state.get("_cluster_order", [])
    if rows and rows[0] < len(order):
        ui.set_shared(ui.CLUSTER, int(order[rows[0]]))


st.title(f"Clusters of head {head}")
ui.show_flash()
left, right = st.columns([2, 3], gap="large")
with left:
    c1, c2 = st.columns([3, 2])
    sort_by = c1.selectbox("Sort clusters by", list(SORTS), key="_sort")
    descending = c2.toggle("Largest first", value=descending_by_default(sort_by), key=f"_desc_{sort_by}")
    view = sort_clusters(idx, SORTS[sort_by], descending)
    if has_human_labels(labels):
        wanted = st.multiselect("Only clusters with members labelled", label_options(labels), key=f"_lab_filter_{head}",
                                help="Human labels: cluster names and clips' own labels.")  # fmt: skip
        view = filter_clusters_by_labels(view, labels, wanted)
    st.session_state["_cluster_order"] = view.index.to_list()
    st.dataframe(
        view[index_columns(view)], key="cluster_table", on_select=_pick_from_table, selection_mode="single-row", height=420,
        width="stretch",
        column_config={
            "name": st.column_config.TextColumn("human name", help="The name people gave the cluster"),
            "parts": st.column_config.TextColumn("sub-clusters"),
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
                                  format_func=_cluster_label)  # fmt: skip
    if store is not None:
        with st.expander("Merge clusters", expanded=False):
            picked = st.multiselect("Clusters to merge (they will share one name)", list(range(sr.k)),
                                    format_func=_cluster_label, key=f"_merge_{head}", disabled=not can_edit)  # fmt: skip
            st.text_input("Name of the merged clusters", key=f"_merge_name_{head}", disabled=not can_edit,
                          placeholder="optional: else the first named cluster's name")  # fmt: skip
            st.button(
                "Merge", key="_merge_btn", on_click=_merge, args=(seen,), disabled=not can_edit or len(picked) < 2
            )
            if not can_edit:
                st.caption(ui.EDIT_HINT)

row_info = idx.loc[cluster]
with right:
    st.subheader(f"Cluster {cluster}")
    if store is not None:
        info = name_info(names, cluster)
        st.markdown(describe_name(info))
        n1, n2 = st.columns([4, 1], vertical_alignment="bottom")
        name_key = f"_name_{head}_{cluster}_{info.version}"  # a new field when someone renames it
        n1.text_input("Cluster name", value=info.name or "", key=name_key, disabled=not can_edit,
                      placeholder="e.g. dog barking", max_chars=LABELS.max_name_length)  # fmt: skip
        n2.button("Rename", key="_rename_btn", on_click=_rename, args=(str(cluster), name_key, seen),
                  disabled=not can_edit, type="primary", width="stretch")  # fmt: skip
        if not can_edit:
            st.caption(ui.EDIT_HINT)
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
        clip_row = clip_in_cluster(sr, head, cluster, ui.current_clip(sr))  # not a clip of another cluster
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
    if labels is not None and int(row_info["size"]):
        counts = cluster_label_counts(labels, cluster)
        if (counts["label"] != "(no label)").any() or (counts["source"] != "none").any():
            st.caption("Human labels of the members")
            st.dataframe(counts, hide_index=True, width="stretch", height=min(35 * (len(counts) + 1) + 3, 220))

    if store is not None:
        subs = sub_clusters(names, cluster)
        if len(subs):
            st.markdown(f"**Sub-clusters of cluster {cluster}** (a part without its own name keeps the parent's)")
            for sub in subs.itertuples():
                s1, s2 = st.columns([4, 1], vertical_alignment="bottom")
                key = f"_name_{head}_{sub.cluster}_{sub.version}"
                s1.text_input(f"{sub.cluster} · {sub.size} clips", value=sub.name or "", key=key,
                              disabled=not can_edit, max_chars=LABELS.max_name_length)  # fmt: skip
                s2.button("Name", key=f"_rename_btn_{sub.cluster}", on_click=_rename, args=(sub.cluster, key, seen),
                          disabled=not can_edit, width="stretch")  # fmt: skip
        with st.expander("Split this cluster", expanded=st.session_state.get("_split_proposal") is not None):
            nodes = splittable_nodes(names, cluster)
            if not nodes:
                st.caption("Fewer than two clips: nothing to split.")
            else:
                p1, p2 = st.columns(2)
                node = p1.selectbox("Split", nodes, key=f"_split_node_{head}_{cluster}",
                                    help="The cluster, or one of its parts after an earlier split")  # fmt: skip
                k_key = f"_split_k_{head}_{cluster}"
                n_max = split_parts_max(names, node)
                p2.number_input("Parts (k-means on the members' audio-visual features)", 2, n_max, LABELS.split_k,
                                key=k_key)  # fmt: skip
                st.button("Propose a split", key="_propose_btn", on_click=_propose, args=(node, k_key),
                          disabled=not can_edit)  # fmt: skip
                prop = st.session_state.get("_split_proposal")
                if prop and prop["head"] == head and prop["node"] == node:
                    st.dataframe(proposal_table(prop["parts"]), hide_index=True, width="stretch",
                                 column_config={"share": st.column_config.NumberColumn(format="percent")})  # fmt: skip
                    for sub, ids in prop["parts"].items():
                        st.caption(f"{sub}: {len(ids)} clips, e.g.")
                        ui.poster_grid(sr, [sr.row_of[c] for c in ids[: STUDIO.grid_columns]], key=f"prop-{sub}")
                    a1, a2 = st.columns(2)
                    a1.button("Apply this split", key="_split_btn", on_click=_apply_split, args=(node, seen),
                              disabled=not can_edit, type="primary")  # fmt: skip
                    a2.button("Discard", key="_split_discard", on_click=lambda: st.session_state.pop("_split_proposal"))

st.divider()
g1, g2 = st.columns([3, 2])
order_label = g1.segmented_control("Members", list(MEMBER_ORDERS), key="_order", default="most confident first")
order = member_order(order_label)
with g2:
    page = ui.pager(sr.pages(head, cluster), key=f"_members_page_{head}_{cluster}_{order}")
members = sr.member_table(head, cluster, order=order, page=page, page_size=STUDIO.page_size)
tags = [clip_tag(r) for r in labels.iloc[members["row"]].itertuples()] if labels is not None else [""] * len(members)
ui.poster_grid(sr, members["row"], key=f"grid-{head}-{cluster}", captions=member_captions(members), notes=tags)
if store is not None and len(members):
    st.markdown("**Correct clips of this page** · ∈ label from the cluster's name · ✎ the clip's own label · "
                "✗ not this (out of the cluster's name)")  # fmt: skip
    tag_of = dict(zip(members["clip_id"].astype(str), tags, strict=True))
    pick_key = f"_pick_{head}_{cluster}_{order}_{page}"
    k1, k2 = st.columns([3, 2])
    k1.multiselect("Clips", members["clip_id"].astype(str).tolist(), key=pick_key, disabled=not can_edit,
                   format_func=lambda c: f"{c} {tag_of.get(c, '')}".strip())  # fmt: skip
    k2.text_input("Their label", key="_clip_label", disabled=not can_edit, placeholder="for 'Give them this label'",
                  max_chars=LABELS.max_name_length)  # fmt: skip
    b1, b2, b3 = st.columns(3)
    b1.button("Give them this label", key="_override_btn", on_click=_clips, args=("override", pick_key, seen),
              disabled=not can_edit, width="stretch")  # fmt: skip
    b2.button("Not this", key="_reject_btn", on_click=_clips, args=("reject", pick_key, seen), disabled=not can_edit,
              width="stretch", help="The clips stop taking this cluster's name (in this head)")  # fmt: skip
    b3.button("Back to the cluster's name", key="_reset_btn", on_click=_clips, args=("reset", pick_key, seen),
              disabled=not can_edit, width="stretch", help="Clear their own label and 'not this'")  # fmt: skip
    if not can_edit:
        st.caption(ui.EDIT_HINT)
clip_row = ui.current_clip(sr)
ui.sync_query_params(cluster=cluster, clip=None if clip_row is None else sr.clip_ids[clip_row])
