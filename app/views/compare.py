"""Compare heads: NMI/ARI between all heads (and ground truth), an ordered contingency table, cluster flow."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from selavi_app import studio_ui as ui
from selavi_core.studio import cluster_flow, contingency, head_agreement

ref, sr, head = ui.context()
if sr is None:
    st.stop()

st.title("Compare heads")
agree = head_agreement(sr)
c1, c2 = st.columns(2)
for col, name, title in ((c1, "nmi", "NMI"), (c2, "ari", "ARI")):
    mat = agree[name]
    fig = go.Figure(go.Heatmap(z=mat.to_numpy(), x=list(mat.columns), y=list(mat.index), zmin=0, zmax=1,
                               colorscale="Viridis", text=np.round(mat.to_numpy(), 2), texttemplate="%{text}",
                               hovertemplate="%{y} vs %{x}: %{z:.3f}<extra></extra>"))  # fmt: skip
    fig.update_layout(title=title, height=420, margin={"t": 40, "b": 10}, yaxis_autorange="reversed")
    col.plotly_chart(fig, width="stretch", key=f"agree_{name}")
st.caption(
    "Heads that find the same structure from independent initialisations agree (NMI near 1). "
    "The ground-truth row uses only labelled clips."
)

st.subheader("Contingency of two heads")
a1, a2, a3 = st.columns(3)
heads = list(range(sr.heads))
a1.markdown(f"**Head A:** head {head}  \n(the head picked in the sidebar)")
head_b = ui.shared_selectbox(a2, "Head B", heads, ui.HEAD_B, (head + 1) % sr.heads, format_func=lambda h: f"head {h}")
scale = a3.segmented_control("Colour", ["row share", "log count"], default="row share", key="_ct_scale")
ct = contingency(sr, head, head_b)
z = ct.row_normalised() if scale != "log count" else np.log1p(ct.table)
fig = go.Figure(go.Heatmap(
    z=z, x=[str(c) for c in ct.cols], y=[str(r) for r in ct.rows], customdata=ct.table, colorscale="Blues",
    hovertemplate="A %{y} → B %{x}: %{customdata:,} clips<extra></extra>",
))  # fmt: skip
fig.update_layout(height=640, margin={"t": 10, "b": 10}, xaxis={"type": "category", "title": f"head {head_b} cluster"},
                  yaxis={"type": "category", "autorange": "reversed", "title": f"head {head} cluster"})  # fmt: skip
st.plotly_chart(fig, width="stretch", key="contingency")
st.caption(
    f"Rows and columns are reordered so that matched clusters lie on the diagonal "
    f"({ct.matched:.0%} of clips sit on it); a row spread over several columns is a cluster that head "
    f"{head_b} splits."
)

st.subheader(f"Where a cluster of head {head} went in head {head_b}")
sizes = sr.sizes(head)
cluster = ui.shared_selectbox(st, "Cluster of head A", list(range(sr.k)), ui.CLUSTER, int(sizes.argmax()),
                              format_func=lambda c: f"{c}  ({sizes[c]:,} clips)")  # fmt: skip
flow = cluster_flow(sr, head, cluster, head_b)
f1, f2 = st.columns([3, 2])
top = flow.head(20)
bar = go.Figure(
    go.Bar(
        x=[str(c) for c in top["cluster"]],
        y=top["count"],
        customdata=top["of_b"],
        hovertemplate="B %{x}: %{y:,} clips (%{customdata:.0%} of that cluster)<extra></extra>",
    )
)
bar.update_layout(height=300, margin={"t": 10, "b": 10}, xaxis={"type": "category", "title": f"head {head_b} cluster"},
                  yaxis_title="clips")  # fmt: skip
f1.plotly_chart(bar, width="stretch", key="flow")
f2.dataframe(flow.rename(columns={"cluster": f"head {head_b}", "share": "share of A", "of_b": "share of B"}),
             hide_index=True, height=300, width="stretch",
             column_config={"share of A": st.column_config.NumberColumn(format="percent"),
                            "share of B": st.column_config.NumberColumn(format="percent")})  # fmt: skip
st.page_link(
    ui.APP_DIR / "views" / "clusters.py",
    label=f"Open cluster {cluster} of head {head} →",
    query_params={"run": ref.name, "head": str(head), "cluster": str(cluster)},
)
ui.sync_query_params(cluster=cluster, head_b=head_b)
