"""Overview: the data set in numbers, the evaluation table, cluster sizes against the prior, which head first."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import studio_ui as ui

from selavi_core.studio.evaluation import evaluation_table

ref, sr, head = ui.context()
st.title("SeLaVi Studio")
if sr is None:
    st.stop()
ui.sync_query_params()

st.subheader(f"Run `{ref.name}`")
st.caption(f"{ref.path} · catalog {sr.run.meta.catalog_dir}")
summary = sr.dataset_summary()
cols = st.columns(4)
for i, (name, value) in enumerate(summary.items()):
    cols[i % 4].metric(name, f"{value:,}" if isinstance(value, int) else str(value))

choice = sr.recommend_head()
st.subheader("Which head to start with")
st.success(choice.reason)
st.dataframe(
    choice.table.rename(columns={"av_agreement": "A/V agreement", "consistency": "mean NMI to other heads",
                                 "mean_confidence": "mean confidence", "empty_clusters": "empty clusters",
                                 "prior_gap": "distance to prior", "score": "score"}),
    width="stretch",
    column_config={"A/V agreement": st.column_config.NumberColumn(format="percent"),
                   "distance to prior": st.column_config.NumberColumn(format="percent")},
)  # fmt: skip

st.subheader("Evaluation against ground truth")
if sr.ground_truth is None:
    st.info("This catalog has no labels, so there is nothing to evaluate against. Browse the clusters instead.")
else:
    table, note = evaluation_table(sr)
    st.dataframe(table, width="stretch")
    if note:
        st.caption(note)

st.subheader("Cluster sizes against the prior")
st.caption(
    "SeLaVi's pseudo-labels are forced towards a target distribution of cluster sizes (the prior). "
    "Sorted sizes far above the prior's largest share flag dumping-ground clusters; many empty clusters mean "
    "the head collapsed."
)
shown = st.multiselect("Heads", list(range(sr.heads)), default=[head], format_func=lambda h: f"head {h}")
fig = go.Figure()
for h in shown:
    prof = sr.size_profile(h)
    fig.add_trace(go.Scatter(x=prof["rank"], y=prof["share"], mode="lines", name=f"head {h}"))
if shown:
    prof = sr.size_profile(shown[0])
    fig.add_trace(go.Scatter(x=prof["rank"], y=prof["prior"], mode="lines", name=f"prior (head {shown[0]})",
                             line={"dash": "dash", "color": "black"}))  # fmt: skip
fig.update_layout(xaxis_title="cluster rank (largest first)", yaxis_title="share of clips", height=360,
                  margin={"t": 20, "b": 40}, yaxis_tickformat=".1%")  # fmt: skip
st.plotly_chart(fig, width="stretch")
idx = sr.cluster_index(head)
big = idx[idx["share"] > 2 * idx["prior"].max()]
if len(big):
    st.warning(
        f"Head {head}: {len(big)} cluster(s) hold more than twice the largest target share: "
        + ", ".join(str(c) for c in big.index[:20])
    )
st.caption(
    f"Head {head}: {int((idx['size'] == 0).sum())} empty clusters of {sr.k}; "
    f"largest {int(idx['size'].max()):,} clips, median {int(np.median(idx['size'])):,}."
)
st.page_link(
    ui.APP_DIR / "views" / "clusters.py",
    label=f"Browse the clusters of head {head} →",
    query_params={"run": ref.name, "head": str(head)},
)
