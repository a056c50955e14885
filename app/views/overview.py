"""Overview: the data set in numbers, the training curves and their warnings, the evaluation table, cluster sizes
against the prior, which head first."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from selavi_app import studio_ui as ui
from selavi_core.studio.browse import DUMPING_GROUND_MULTIPLE, dumping_grounds, size_facts
from selavi_core.studio.evaluation import evaluation_table
from selavi_core.studio.training import training_view

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

st.subheader("Training")
training = training_view(sr.run.dir)
if training is None:
    st.caption("No training log in this run folder (a run made by `selavi assign` has none), so no training curves.")
else:
    curves = training.curves
    for w in training.warnings:
        st.warning(f"**{w.message}** {w.advice}", icon=":material/warning:")
    lab, ep, rounds = curves.labellings, curves.epochs, curves.final_refine
    st.caption(
        f"{len(ep)} epochs and {curves.n_labellings} labellings"
        + (f", then {len(rounds)} rounds refining the heads on frozen features" if len(rounds) else "")
        + ". The log keeps the last labelling of each epoch. The warnings are judged from the end of training, "
        "without ground truth."
    )
    layout = {"height": 320, "margin": {"t": 40, "b": 40, "l": 10, "r": 10}, "legend": {"orientation": "h", "y": -0.3}}
    after = lab["labelling"].max() if len(lab) else 0  # refine rounds continue the labelling axis

    colours = {"loss": "#1f77b4", "label_loss": "#1f77b4", "contrast_loss": "#17becf", "stability_nmi": "#1f77b4",
               "agree_video": "#2ca02c", "agree_audio": "#d62728", "largest_share": "#ff7f0e", "nmi_gt_best": "#9467bd",
               "nmi_gt_head0": "#8c564b"}  # fmt: skip

    def line(fig: go.Figure, frame, x: str, y: str, name: str, offset=0, dash: str | None = None) -> None:
        """One series of the log, if it has one (refine rounds dotted, in the colour of their training series)."""
        if y in frame and frame[y].notna().any():
            style = {"line": {"dash": dash, "color": colours.get(y)}, "marker": {"size": 4}}
            fig.add_trace(go.Scatter(x=frame[x] + offset, y=frame[y], name=name,
                                     mode="lines" if dash else "lines+markers", **style))  # fmt: skip

    c1, c2 = st.columns(2)
    fig = go.Figure()
    if "label_loss" in ep:
        line(fig, ep, "epoch", "label_loss", "self-labelling loss (cross-entropy with the labels)")
    else:  # a correspondence term of unknown weight is mixed in
        line(fig, ep, "epoch", "loss", "training loss")
    line(fig, ep, "epoch", "contrast_loss", "picture-sound correspondence loss (InfoNCE)")
    if training.random_loss is not None and "loss" in ep:
        fig.add_hline(y=training.random_loss, line_dash="dash", line_color="grey",
                      annotation_text="a random guess (log K)")  # fmt: skip
    fig.update_layout(title="Loss per epoch", xaxis_title="epoch", **layout)
    c1.plotly_chart(fig, width="stretch", key="train_loss")

    fig = go.Figure()
    line(fig, lab, "labelling", "stability_nmi", "label stability (NMI to the previous labelling)")
    line(fig, lab, "labelling", "agree_video", "video alone predicts the label")
    line(fig, lab, "labelling", "agree_audio", "audio alone predicts the label")
    line(fig, rounds, "refine_round", "stability_nmi", "stability while refining", offset=after, dash="dot")
    if training.agreement_line is not None and "agree_video" in lab:
        fig.add_hline(y=training.agreement_line, line_dash="dash", line_color="grey",
                      annotation_text=f"agreement a modality needs (chance {1 / curves.k:.0%})")  # fmt: skip
    fig.update_layout(title="Stability and agreement per labelling", xaxis_title="labelling", yaxis_range=[0, 1.02],
                      **layout)  # fmt: skip
    c2.plotly_chart(fig, width="stretch", key="train_stability")

    c3, c4 = st.columns(2)
    if "largest_share" in lab:
        fig = go.Figure()
        line(fig, lab, "labelling", "largest_share", "largest cluster (mean over heads)")
        if training.largest_target is not None:
            fig.add_hline(y=training.largest_target, line_dash="dash", line_color="black",
                          annotation_text="the prior's largest share")  # fmt: skip
            fig.add_hline(y=training.swallow_line, line_dash="dot", line_color="red",
                          annotation_text="swallowing the data")  # fmt: skip
        fig.update_layout(title="Largest cluster's share of the clips", xaxis_title="labelling", yaxis_range=[0, 1.02],
                          yaxis_tickformat=".0%", **layout)  # fmt: skip
        c3.plotly_chart(fig, width="stretch", key="train_largest")
    else:
        c3.caption("This log predates the largest cluster's share: no plot of cluster sizes during training.")
    if curves.has_ground_truth:
        fig = go.Figure()
        for col, name in (("nmi_gt_best", "best head"), ("nmi_gt_head0", "head 0")):
            line(fig, lab, "labelling", col, name)
            line(fig, rounds, "refine_round", col, f"{name}, refining", offset=after, dash="dot")
        fig.update_layout(title="NMI of the labels with the ground truth", xaxis_title="labelling",
                          yaxis_range=[0, 1.02], **layout)  # fmt: skip
        c4.plotly_chart(fig, width="stretch", key="train_nmi_gt")
        c4.caption("Ground truth is only plotted here; no warning uses it.")

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
big = dumping_grounds(idx)
if big:
    times = "twice" if DUMPING_GROUND_MULTIPLE == 2 else f"{DUMPING_GROUND_MULTIPLE:g} times"
    st.warning(
        f"Head {head}: {len(big)} cluster(s) hold more than {times} the largest target share: "
        + ", ".join(str(c) for c in big[:20])
    )
facts = size_facts(idx)
st.caption(
    f"Head {head}: {facts['empty']} empty clusters of {sr.k}; "
    f"largest {facts['largest']:,} clips, median {facts['median']:,}."
)
st.page_link(
    ui.APP_DIR / "views" / "clusters.py",
    label=f"Browse the clusters of head {head} →",
    query_params={"run": ref.name, "head": str(head)},
)
