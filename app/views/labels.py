"""Labels: the label vocabulary with counts and sources, spot-check samples, history with undo, snapshots, export."""

from __future__ import annotations

import streamlit as st

from selavi_app import studio_ui as ui
from selavi_core.config import STUDIO
from selavi_core.errors import SelaviError
from selavi_core.labels.semantics import describe
from selavi_core.labels.store import redact
from selavi_core.studio.browse import label_count, sample_captions
from selavi_core.studio.labelling import (
    DOWNLOAD_FORMATS,
    MIME,
    NO_LABEL,
    STUDIO_SOURCE,
    export_file_name,
    history_frame,
    label_options,
    label_sample,
    snapshot_frame,
    source_counts,
)

ref, sr, head = ui.context()
if sr is None:
    st.stop()
st.title("Labels")
ui.show_flash()
store = ui.store_or_warning(sr, carry_done=True)
if store is None:
    st.stop()
seen = store.version()  # read before anything the user sees is drawn
who = ui.annotator()
can_edit = who is not None
labels = store.effective_labels(head)
info = store.log_info()
st.caption(
    f"Head {head} · store `{redact(store.url)}` · {info['events']:,} events"
    + (f" by {', '.join(info['annotators'])}" if info["annotators"] else "")
)


def _undo(kind: str) -> None:
    ui.run_edit(lambda name: getattr(store, kind)(name, source=STUDIO_SOURCE),
                lambda ev: f"{kind.title()} done: {ev.old['summary']}.")  # fmt: skip


def _snapshot() -> None:
    name = ui.field("_snap_name")
    if ui.run_edit(lambda who: store.snapshot(name, annotator=who, source=STUDIO_SOURCE),
                   f"Snapshot {name!r} saved: exports can refer to exactly these labels.", attempted=name):  # fmt: skip
        st.session_state["_snap_name"] = ""


# ---- vocabulary -------------------------------------------------------------------------------------
st.subheader(f"Vocabulary of head {head}")
src = source_counts(labels)
m = st.columns(4)
m[0].metric("labelled clips", f"{src['override'] + src['cluster']:,}")
m[1].metric("from a cluster name", f"{src['cluster']:,}")
m[2].metric("own label (per clip)", f"{src['override']:,}")
m[3].metric("unlabelled", f"{src['none']:,}")
vocab = store.vocabulary(head)
if vocab.empty:
    st.info("No labels yet: name a cluster on the Clusters page, or label a selection on the Map.")
else:
    st.dataframe(
        vocab, hide_index=True, width="stretch", key="vocabulary",
        column_config={
            "label": st.column_config.TextColumn("label"),
            "count": st.column_config.NumberColumn("clips", format="%d"),
            "override": st.column_config.NumberColumn("own label (per clip)", format="%d"),
            "cluster": st.column_config.NumberColumn("from a cluster name", format="%d"),
        },
    )  # fmt: skip

# ---- spot-check ---------------------------------------------------------------------------------------
st.subheader("Spot-check a label")
options = label_options(labels)
if options and options != [NO_LABEL]:
    s1, s2 = st.columns([3, 1])
    pick = s1.selectbox("Label", options, key=f"_spot_{head}")
    seed = int(s2.number_input("Sample", 0, 10_000, 0, key="_spot_seed", help="Another number: another sample"))
    sample = label_sample(labels, pick, STUDIO.page_size // 2, seed=seed)
    n_all = label_count(labels, pick)
    st.caption(f"{len(sample)} of {n_all:,} clips labelled {pick!r}, at random. ▶ plays one.")
    ui.player(sr, ui.current_clip(sr), head=head)
    ui.poster_grid(sr, sample["row"], key=f"spot-{head}-{pick}", captions=sample_captions(sample))
else:
    st.caption("Nothing to spot-check yet.")

# ---- history ------------------------------------------------------------------------------------------
st.subheader("History")
h1, h2, h3 = st.columns([2, 2, 2])
last = store.can_undo(who) if who else None
again = store.can_redo(who) if who else None
h1.button(f"Undo event {last.id}" if last else "Undo", key="_undo_btn", on_click=_undo, args=("undo",),
          disabled=last is None, help=None if last is None else f"Undo your edit: {describe(last)}")  # fmt: skip
h2.button(f"Redo event {again.id}" if again else "Redo", key="_redo_btn", on_click=_undo, args=("redo",),
          disabled=again is None, help=None if again is None else f"Redo: {describe(again)}")  # fmt: skip
mine = h3.toggle("Only my edits", key="_hist_mine", disabled=not can_edit)
if not can_edit:
    st.caption(ui.EDIT_HINT + " Undo and redo apply to your own edits only.")
elif last is not None:
    st.caption(f"Undo would take back your edit: {describe(last)}.")
hist = store.history(200, annotator=who if mine else None)
if hist.empty:
    st.caption("No edits yet.")
else:
    st.dataframe(history_frame(hist), hide_index=True, width="stretch", height=min(38 + 35 * len(hist), 420),
                 key="history")  # fmt: skip

# ---- snapshots ----------------------------------------------------------------------------------------
st.subheader("Snapshots")
n1, n2 = st.columns([4, 1], vertical_alignment="bottom")
n1.text_input("Snapshot name", key="_snap_name", placeholder="e.g. label set v3", disabled=not can_edit)
n2.button("Save snapshot", key="_snap_btn", on_click=_snapshot, disabled=not can_edit, width="stretch")
snaps = store.snapshots()
if snaps.empty:
    st.caption("No snapshots yet. A snapshot names the labels as they are now; exports can use it later.")
else:
    st.dataframe(snapshot_frame(snaps), hide_index=True, width="stretch", key="snapshots")

# ---- export -------------------------------------------------------------------------------------------
st.subheader("Export")
e1, e2, e3 = st.columns([2, 2, 2])
fmt = e1.selectbox("Format", DOWNLOAD_FORMATS, key="_exp_fmt")
snap = e2.selectbox("Labels", ["now", *snaps["name"].tolist()], key="_exp_snap",
                    format_func=lambda s: "as they are now" if s == "now" else f"snapshot {s!r}")  # fmt: skip
only_named = e3.toggle("Only labelled clips", key="_exp_named")
snapshot = None if snap == "now" else snap
try:
    data, prov = ui.export_download(store, seen, fmt, head, snapshot, only_named)
except SelaviError as err:
    st.error(f"Cannot export {fmt}: {err}")
else:
    counts = prov["counts"]
    by_source = ", ".join(f"{k} {v:,}" for k, v in counts["by_source"].items())
    st.download_button(f"Download {fmt}", data, file_name=export_file_name(ref.name, fmt, head, snapshot),
                       mime=MIME[fmt], key="_exp_download", type="primary", icon=":material/download:",
                       on_click="ignore")  # fmt: skip
    st.caption(f"{counts['written']:,} records · by source: {by_source}"
               + ("; skipped " + ", ".join(f"{k} {v}" for k, v in counts["skipped"].items()) if counts["skipped"] else "")
               + ". The provenance (run and catalog hashes, head, snapshot, counts, annotators) is its sidecar:")  # fmt: skip
    st.download_button("Download provenance.json", ui.json_bytes(prov),
                       file_name=export_file_name(ref.name, fmt, head, snapshot) + ".provenance.json",
                       mime="application/json", key="_exp_prov", on_click="ignore")  # fmt: skip
st.info(
    "FiftyOne's folder format (`<class>/<clip>.mp4`, `_unlabeled/`) is a tree of files, so it is written from "
    f"the command line: `selavi export {sr.run.dir} --format fiftyone --out DIR --head {head}"
    + (f" --snapshot '{snapshot}'" if snapshot else "")
    + "` (symlinks; `--copy` copies the clips)."
)
ui.sync_query_params()
