"""Similar clips: from any clip, its nearest neighbours by feature (faiss), playable."""

from __future__ import annotations

import streamlit as st

from selavi_app import studio_ui as ui
from selavi_core.config import STUDIO
from selavi_core.studio.browse import FEATURE_KIND_NAMES, similar_captions, start_clip
from selavi_core.studio.similar import FEATURE_KINDS, similar_clips

ref, sr, head = ui.context()
if sr is None:
    st.stop()
st.title("Similar clips")

row = ui.current_clip(sr)
if row is None:
    row = start_clip(sr, head)
    st.caption("No clip chosen yet: starting from the most confident clip of the largest cluster.")
    ui.set_clip(str(sr.clip_ids[row]))
c1, c2, c3 = st.columns([3, 2, 2])
typed = c1.text_input("Clip id", value="" if row is None else str(sr.clip_ids[row]), key=f"_sim_id_{row}")
if typed and typed != ("" if row is None else str(sr.clip_ids[row])):
    if typed in sr.row_of:
        ui.set_clip(typed)
        row = sr.row_of[typed]
    else:
        st.error(f"No clip {typed!r} in this run.")
kind = c2.selectbox(
    "Features",
    FEATURE_KINDS,
    key="_sim_kind",
    format_func=FEATURE_KIND_NAMES.__getitem__,
)
k = int(c3.number_input("Neighbours", 1, 100, STUDIO.similar_k, key="_sim_k"))
st.subheader("Query clip")
ui.player(sr, ui.current_clip(sr), head=head)
query_row = row
with st.spinner("Building the feature index (once per run)…"):
    nn = similar_clips(sr, query_row, k=k, kind=kind, head=head)
st.subheader(f"{len(nn)} nearest clips")
st.caption("▶ plays a clip and makes it the query, so you can walk from clip to clip.")
ui.poster_grid(sr, nn["row"], key=f"sim-{query_row}", captions=similar_captions(nn))
st.dataframe(nn.drop(columns=[c for c in ("path",) if c in nn]), hide_index=True, width="stretch")
ui.sync_query_params(clip=sr.clip_ids[ui.current_clip(sr)] if ui.current_clip(sr) is not None else None)
