"""The curated label set in the formats the field uses, each with a provenance sidecar.

``export_labels(store, fmt, out, ...)`` writes one of ``FORMATS`` (../shared/docs/app-field-notes.md §5.1):

- ``csv``         clip_id, file (the clip's file name), path, start_s, end_s, label, label_source, head, cluster, confidence, annotator, time
- ``json``        ``{"clips": [same rows], "vocabulary": [label, count, override, cluster], ...}``
- ``kinetics``    ``label,youtube_id,time_start,time_end,split`` (the DeepMind annotation CSV)
- ``vggsound``    headerless ``youtube_id,start,label,split`` (the hche11/VGGSound CSV)
- ``fiftyone``    FiftyOne's VideoClassificationDirectoryTree: ``OUT/<class>/<clip_id>.<ext>``, unlabelled
                  clips in ``OUT/_unlabeled/``; symlinks (or copies with ``copy=True``)
- ``labelstudio`` a Label Studio import file: one task per clip with the video and a ``predictions``
                  entry carrying the label as a ``choices`` result, the model version and the confidence

YouTube ids (Kinetics, VGG-Sound) come from the catalog's ``source_id`` (set by the vggsound,
kinetics and ave layouts, or a csv with that column) and times from the segment's place in the
YouTube video (``yt_start_s``/``yt_end_s``) or the clip window; rows without them are skipped and
counted in the sidecar, and an export where *no* row has an id fails with a clear error.

Every export writes ``<out>.provenance.json``: format, time, run folder and hashes of run, catalog
and checkpoint, head, snapshot and last folded event, filters, row counts per label, per source and
per skip reason, annotators, the selavi version, and the output's sha256 (files) or file count
(folders). Everything is written atomically: files go to a temporary sibling and ``os.replace``;
folders are built in a temporary sibling and renamed into place, so an interrupted export never
leaves a half file or a half tree under the final name.

``--min-confidence`` filters labels propagated from a cluster (and unlabelled clips) by the model's
confidence; a label a person gave one clip is kept whatever the model thought of it.

Spreadsheet safety. The CSV-like formats (``csv``, ``kinetics``, ``vggsound``) open in spreadsheets, which
run a cell that starts with ``= + - @``, a tab or a carriage return as a formula (OWASP "CSV injection":
``=HYPERLINK(...)`` in a label). In them such a text cell gets a leading ``'`` (``'=HYPERLINK(...)``), which
spreadsheets show as text; numbers are written as numbers, and a YouTube id made only of YouTube's id
characters (``-3B32lodo2M``: ids may start with ``-``, and without brackets, quotes or ``|`` nothing runs)
is kept exact so that it still names its video. The sidecar counts the cells changed
(``neutralised_cells``). ``json``, ``fiftyone`` and ``labelstudio`` keep every value exact. Names with a
line break or other control character cannot be given (the store refuses them); one that an older log
holds makes a ``kinetics`` or ``vggsound`` export (one line per clip) fail with the name, so that it can
be renamed first; ``csv`` quotes it.

``out`` (and its sidecar) must be a regular file or a new path (a folder, for ``fiftyone``): a symlink, a
device, a FIFO or a socket there is refused, never replaced.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd

from selavi_core import __version__
from selavi_core.errors import SelaviError
from selavi_core.io import file_hash, fsync_dir, replace_tree
from selavi_core.labels.schema import redact
from selavi_core.labels.semantics import (
    SOURCE_CLUSTER,
    SOURCE_NONE,
    SOURCE_OVERRIDE,
    has_control_chars,
    vocabulary,
)
from selavi_core.labels.store import LabelStore
from selavi_core.runs.run import CLIPS_FILE, META_FILE

FORMATS = ("csv", "json", "kinetics", "vggsound", "fiftyone", "labelstudio")
CSV_COLUMNS = (
    "clip_id", "file", "path", "start_s", "end_s", "label", "label_source", "head", "cluster", "confidence", "annotator",
    "time",
)  # fmt: skip
KINETICS_HEADER = ("label", "youtube_id", "time_start", "time_end", "split")
UNLABELED_DIR = "_unlabeled"  # FiftyOne's name for the class folder of unlabelled samples
LS_FROM_NAME = "label"  # Label Studio control (<Choices name=...>) and object (<Video name=...>) names
LS_TO_NAME = "video"
SIDECAR_SUFFIX = ".provenance.json"
#: A clip whose window ends this close to its file's end is the whole file, not a window in it.
WINDOW_TOLERANCE_S = 0.05
#: First characters that make a spreadsheet read a cell as a formula (OWASP CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: What YouTube ids are made of: such a cell cannot call or link anything even when it starts with ``-``.
YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]+")


#: What a writer returns: which table rows it wrote (None: all), skip counts by reason, sidecar extras.
Written = tuple[np.ndarray | None, dict[str, int], dict[str, Any]]


class ExportError(SelaviError):
    """An export that cannot be written as asked (no YouTube ids, an occupied output folder...)."""


@dataclass
class ExportResult:
    format: str
    path: Path
    sidecar: Path
    rows: int  # records written (rows, tasks or files)
    by_label: dict[str, int] = field(default_factory=dict)
    by_source: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------- atomic writes


def sidecar_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + SIDECAR_SUFFIX)


@contextmanager
def open_text(path: Path) -> Iterator[Any]:
    """A text file for a staged export; flushed and fsynced before it is renamed into place."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def _is_previous_export(path: Path) -> bool:
    try:
        return bool(json.loads(sidecar_path(path).read_text()).get("format"))
    except (OSError, ValueError):
        return False


_KINDS = (
    (stat.S_ISLNK, "symbolic link"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISFIFO, "named pipe (FIFO)"),
    (stat.S_ISSOCK, "socket"),
)


def _check_special(path: Path, what: str) -> None:
    """Refuse a ``path`` that exists and is neither a regular file nor a folder (``os.lstat``: a link is a link)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as err:
        raise ExportError(f"{what} {path} cannot be checked: {err.strerror}") from None
    for test, kind in _KINDS:
        if test(mode):
            raise ExportError(
                f"{what} {path} is a {kind}; an export replaces its output, so give a regular file or a new path"
            )


def _check_target(out: Path, folder: bool) -> None:
    """Refuse to replace what is not ours: a link, device or FIFO, a file where a folder goes (or back), a
    stranger's folder, and likewise for the sidecar."""
    _check_special(out, "--out")
    side = sidecar_path(out)
    _check_special(side, "the provenance sidecar")
    if side.is_dir():
        raise ExportError(f"the provenance sidecar {side} is a folder; move it away or choose another --out")
    if folder and out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file; give a folder name for this format")
    if not folder and out.is_dir():
        raise ExportError(f"{out} is a folder; give a file name for this format")
    if folder and out.is_dir() and any(out.iterdir()) and not _is_previous_export(out):
        raise ExportError(f"{out} exists and is not a previous SeLaVi export; choose another --out")


# --------------------------------------------------------------------------------- the rows


def _iso(t: Any) -> str | None:
    if t is None or (isinstance(t, float) and math.isnan(t)):
        return None
    return datetime.fromtimestamp(float(t), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _seconds_text(x: float) -> str:
    """Whole seconds as ``12`` (as the Kinetics/VGG-Sound CSVs write them), else ``12.5``."""
    return str(int(round(x))) if abs(x - round(x)) < 1e-6 else f"{x:.3f}".rstrip("0")


def neutralise(text: str, *, youtube_id: bool = False) -> str:
    """``text`` as a spreadsheet shows it as text: a leading ``'`` when it starts with ``FORMULA_START``.

    With ``youtube_id``, an id made only of YouTube's id characters is kept as is (ids start with ``-``)."""
    if not text.startswith(FORMULA_START) or (youtube_id and YOUTUBE_ID.fullmatch(text)):
        return text
    return "'" + text


def _one_line(fmt: str, rows: list[tuple[Any, ...]]) -> None:
    """Refuse rows with a line break or control character (an older log's name) for a one-line-per-clip format."""
    for row in rows:
        for cell in row:
            if isinstance(cell, str) and has_control_chars(cell):
                raise ExportError(
                    f"{cell!r} holds a line break or another control character, and {fmt} files are one line per "
                    "clip; rename it in the Studio (or `selavi labels`) and export again, or export csv or json"
                )


def export_table(
    store: LabelStore,
    head: int = 0,
    snapshot: str | int | None = None,
    *,
    only_named: bool = False,
    min_confidence: float | None = None,
) -> pd.DataFrame:
    """Effective labels joined with the catalog (path, window, split, source ids), filtered.

    Columns: ``semantics.LABEL_COLUMNS`` plus path, start_s, end_s, split, source_id, duration_s,
    yt_start_s, yt_end_s (NaN/None where the catalog has no such value), in run order.
    """
    run = store._need_run("exporting")
    labels = store.effective_labels(head, snapshot)
    cat = run.catalog
    for col in ("path", "start_s", "end_s", "split", "source_id", "duration_s", "yt_start_s", "yt_end_s"):
        labels[col] = cat[col].to_numpy() if col in cat.columns else None
    for col in ("start_s", "end_s", "duration_s", "yt_start_s", "yt_end_s"):
        labels[col] = pd.to_numeric(labels[col], errors="coerce")
    base = Path(run.meta.catalog_dir)  # relative catalog paths are relative to the catalog folder
    paths = pd.Series(labels["path"], dtype=object)
    relative = paths.notna() & ~paths.astype(str).str.startswith(os.sep)
    paths[relative] = str(base) + os.sep + paths[relative].astype(str)
    labels["path"] = paths.where(paths.notna(), None)
    keep = np.ones(len(labels), dtype=bool)
    if only_named:
        keep &= labels["label"].notna().to_numpy()
    if min_confidence is not None:
        person = (labels["label_source"] == SOURCE_OVERRIDE).to_numpy()
        keep &= person | (labels["confidence"].to_numpy() >= float(min_confidence))
    return labels[keep].reset_index(drop=True)


def _values(col: pd.Series | np.ndarray) -> list[Any]:
    """A column as a list of Python values (str, float...), None where missing."""
    series = pd.Series(col).astype(object)
    return series.where(series.notna(), None).tolist()


def iso_times(seconds: pd.Series | np.ndarray) -> list[str | None]:
    """Epoch seconds as ISO 8601 UTC with milliseconds (``2026-11-28T16:43:48.635Z``), None where missing."""
    t = pd.to_datetime(pd.Series(np.asarray(seconds, dtype=np.float64)) * 1000, unit="ms", utc=True)
    text = t.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z"
    return _values(text.to_numpy(dtype=object))


def record_columns(table: pd.DataFrame) -> dict[str, list[Any]]:
    """The CSV/JSON columns (``CSV_COLUMNS``) of a table as lists of Python values, None where missing."""
    conf = np.round(table["confidence"].to_numpy(dtype=np.float64), 6)
    return {
        "clip_id": [str(c) for c in table["clip_id"]],
        "file": [os.path.basename(p) if isinstance(p, str) and p else None for p in table["path"]],
        "path": _values(table["path"]),
        "start_s": _values(table["start_s"].to_numpy(dtype=np.float64)),
        "end_s": _values(table["end_s"].to_numpy(dtype=np.float64)),
        "label": _values(table["label"]),
        "label_source": [str(v) for v in table["label_source"]],
        "head": [int(v) for v in table["head"]],
        "cluster": [str(v) for v in table["cluster"]],
        "confidence": _values(conf),
        "annotator": _values(table["annotator"]),
        "time": iso_times(table["time"]),
    }


def records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """One dict per row with the ``CSV_COLUMNS`` keys (what the JSON export's ``clips`` holds)."""
    cols = record_columns(table)
    return [dict(zip(CSV_COLUMNS, row, strict=True)) for row in zip(*(cols[c] for c in CSV_COLUMNS), strict=True)]


def _json_lines(items: list[Any]) -> str:
    """A JSON list with one item per line (the C encoder per item: fast, and diffs stay readable)."""
    if not items:
        return "[]"
    return "[\n" + ",\n".join(json.dumps(x, ensure_ascii=False) for x in items) + "\n]"


# --------------------------------------------------------------------------------- writers


def _write_csv(table: pd.DataFrame, out: Path, **_: Any) -> Written:
    cols = record_columns(table)
    changed = 0
    for name in CSV_COLUMNS:
        values = cols[name]
        for i, v in enumerate(values):
            if v is None:
                values[i] = ""
            elif isinstance(v, str) and v.startswith(FORMULA_START):
                values[i] = neutralise(v)
                changed += 1
    with open_text(out) as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        w.writerows(zip(*(cols[c] for c in CSV_COLUMNS), strict=True))
    return None, {}, {"neutralised_cells": changed}


def _write_json(table: pd.DataFrame, out: Path, *, context: dict[str, Any], **_: Any) -> Written:
    vocab = vocabulary(table)
    head = {
        "format": "selavi-labels",
        "format_version": 1,
        "head": context["head"],
        "snapshot": context["snapshot"],
        "columns": list(CSV_COLUMNS),
        "vocabulary": [
            {
                "label": str(v.label),
                "count": int(v.count),
                SOURCE_OVERRIDE: int(v.override),
                SOURCE_CLUSTER: int(v.cluster),
            }
            for v in vocab.itertuples(index=False)
        ],
    }
    with open_text(out) as f:
        f.write(json.dumps(head, ensure_ascii=False)[:-1])  # the object without its closing brace
        f.write(', "clips": ' + _json_lines(records(table)) + "}\n")
    return None, {}, {}


def _youtube_rows(
    table: pd.DataFrame, fmt: str
) -> tuple[list[tuple[str, str, float, float | None, str]], np.ndarray, dict[str, int]]:
    """(label, ytid, start, end, split) per exportable row, which table rows they are, skip counts."""
    skipped: dict[str, int] = {}
    rows = []
    mask = np.zeros(len(table), dtype=bool)
    for i, r in enumerate(table.itertuples(index=False)):
        if pd.isna(r.label):
            skipped["unlabeled"] = skipped.get("unlabeled", 0) + 1
            continue
        ytid = None if r.source_id is None or pd.isna(r.source_id) else str(r.source_id).strip()
        if not ytid:
            skipped["no_youtube_id"] = skipped.get("no_youtube_id", 0) + 1
            continue
        start = _num(r.yt_start_s)
        end = _num(r.yt_end_s)
        if start is None:
            start = _num(r.start_s) or 0.0
            clip_end = _num(r.end_s)
            dur = _num(r.duration_s)
            end = clip_end if clip_end is not None else (start + dur if dur is not None else None)
        if end is None and fmt == "kinetics":
            skipped["no_window"] = skipped.get("no_window", 0) + 1
            continue
        rows.append((str(r.label), ytid, start, end, "" if r.split is None or pd.isna(r.split) else str(r.split)))
        mask[i] = True
    labelled = len(table) - skipped.get("unlabeled", 0)
    if labelled and not rows and skipped.get("no_youtube_id"):
        raise ExportError(
            f"{fmt} rows need YouTube ids, and none of the {labelled} labelled clips has one: the catalog's "
            "source_id is empty (it is set by the vggsound, kinetics and ave layouts, or a csv source_id column). "
            "Export csv, json, fiftyone or labelstudio instead."
        )
    return rows, mask, skipped


def _safe_youtube_rows(
    table: pd.DataFrame, fmt: str
) -> tuple[list[tuple[str, str, float, float | None, str]], np.ndarray, dict[str, int], int]:
    """``_youtube_rows`` checked to fit on one line each, text cells neutralised, and how many were."""
    rows, mask, skipped = _youtube_rows(table, fmt)
    _one_line(fmt, rows)
    safe = []
    changed = 0
    for label, ytid, start, end, split in rows:
        cells = (neutralise(label), neutralise(ytid, youtube_id=True), neutralise(split))
        changed += sum(a != b for a, b in zip(cells, (label, ytid, split), strict=True))
        safe.append((cells[0], cells[1], start, end, cells[2]))
    return safe, mask, skipped, changed


def _write_kinetics(table: pd.DataFrame, out: Path, **_: Any) -> Written:
    rows, mask, skipped, changed = _safe_youtube_rows(table, "kinetics")
    with open_text(out) as f:
        w = csv.writer(f)
        w.writerow(KINETICS_HEADER)
        for label, ytid, start, end, split in rows:
            assert end is not None  # _youtube_rows skips kinetics rows without a window end
            w.writerow([label, ytid, _seconds_text(start), _seconds_text(end), split])
    return mask, skipped, {"neutralised_cells": changed}


def _write_vggsound(table: pd.DataFrame, out: Path, **_: Any) -> Written:
    rows, mask, skipped, changed = _safe_youtube_rows(table, "vggsound")
    with open_text(out) as f:
        w = csv.writer(f)
        for label, ytid, start, _end, split in rows:
            w.writerow([ytid, _seconds_text(start), label, split])
    return mask, skipped, {"neutralised_cells": changed}


def class_dir_name(label: str) -> str:
    """A label as a folder name: path separators and control characters replaced, never '.', '..' or ''."""
    name = "".join("_" if (c in "/\\:" or ord(c) < 32) else c for c in label).strip()
    if name in ("", ".", "..") or name == UNLABELED_DIR:
        name = f"{name}_" if name else "_"
    return name


def _is_window(r: Any) -> bool:
    start, end, dur = _num(r.start_s), _num(r.end_s), _num(r.duration_s)
    if start is not None and start > WINDOW_TOLERANCE_S:
        return True
    return end is not None and dur is not None and end < dur - WINDOW_TOLERANCE_S


def preview_files(store: LabelStore) -> dict[str, str]:
    """clip id -> absolute preview MP4 listed by ``selavi previews`` (read once; {} when none were built)."""
    from selavi_core.media.preview import preview_mp4s  # PyAV: imported only when an export needs media

    return preview_mp4s(store._need_run("preview files").meta.catalog_dir)


def _write_fiftyone(table: pd.DataFrame, out: Path, *, store: LabelStore, copy: bool = False, **_: Any) -> Written:
    previews = preview_files(store)
    skipped: dict[str, int] = {}
    classes: dict[str, str] = {}
    windows: dict[str, dict[str, Any]] = {}
    media = {"source": 0, "preview": 0}
    mask = np.zeros(len(table), dtype=bool)
    out.mkdir(exist_ok=True)
    made: set[str] = set()
    for i, r in enumerate(table.itertuples(index=False)):
        if pd.isna(r.label):
            folder = UNLABELED_DIR
        else:
            folder = class_dir_name(str(r.label))
            if classes.setdefault(folder, str(r.label)) != str(r.label):
                raise ExportError(f"labels {classes[folder]!r} and {r.label!r} map to the same folder {folder!r}")
        src = None if r.path is None else str(r.path)
        use, kind = src, "source"
        window = _is_window(r)
        if window and os.path.isfile(previews.get(str(r.clip_id), "")):
            use, kind = previews[str(r.clip_id)], "preview"  # the window cut once, as H.264/AAC
        if use is None or not os.path.isfile(use):
            skipped["missing_media"] = skipped.get("missing_media", 0) + 1
            continue
        if folder not in made:
            (out / folder).mkdir(exist_ok=True)
            made.add(folder)
        rel = f"{folder}/{r.clip_id}{os.path.splitext(use)[1].lower() or '.mp4'}"
        if copy:
            shutil.copy2(use, out / rel)
        else:
            os.symlink(os.path.abspath(use), out / rel)
        media[kind] += 1
        if kind == "source" and window:  # the file is longer than the clip: say which part is meant
            windows[rel] = {"source": src, "start_s": _num(r.start_s), "end_s": _num(r.end_s)}
        mask[i] = True
    extra = {"classes": classes, "windows": windows, "media": media, "link": "copy" if copy else "symlink"}
    return mask, skipped, extra


def labelstudio_config(labels: list[str]) -> str:
    """The labelling config that matches the exported tasks (paste it into the Label Studio project)."""
    choices = "\n".join(f"    <Choice value={quoteattr(lab)}/>" for lab in labels)
    return (
        "<View>\n"
        f'  <Video name="{LS_TO_NAME}" value="${LS_TO_NAME}"/>\n'
        f'  <Choices name="{LS_FROM_NAME}" toName="{LS_TO_NAME}" choice="single" showInline="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def _write_labelstudio(
    table: pd.DataFrame,
    out: Path,
    *,
    store: LabelStore,
    context: dict[str, Any],
    url_prefix: str | None = None,
    media_root: str | os.PathLike | None = None,
    **_: Any,
) -> Written:
    previews = preview_files(store)
    root = os.path.abspath(media_root) if media_root else None
    media = {"source": 0, "preview": 0}
    model_version = context["model_version"]
    cols = record_columns(table)
    tasks = []
    for j, cid in enumerate(cols["clip_id"]):
        mp4 = previews.get(cid)
        if mp4 is not None and os.path.isfile(mp4):
            path, kind = mp4, "preview"  # browser-playable H.264/AAC cut of exactly the clip's window
        else:
            path, kind = cols["path"][j] or "", "source"
        media[kind] += 1
        ref = os.path.abspath(path)
        if url_prefix is not None:  # e.g. "/data/local-files/?d=" with media_root = LOCAL_FILES_DOCUMENT_ROOT
            inside = root is not None and ref.startswith(root.rstrip(os.sep) + os.sep)
            ref = url_prefix + quote(os.path.relpath(ref, root) if inside else ref.lstrip(os.sep))
        data: dict[str, Any] = {
            LS_TO_NAME: ref,
            "clip_id": cid,
            "head": cols["head"][j],
            "cluster": cols["cluster"][j],
            "label_source": cols["label_source"][j],
        }
        if kind == "source":  # a window of a longer file: Label Studio shows the whole file, so say which part
            for key in ("start_s", "end_s"):
                if cols[key][j] is not None:
                    data[key] = cols[key][j]
        task: dict[str, Any] = {"data": data, "predictions": []}
        label = cols["label"][j]
        if label is not None:
            result = {
                "from_name": LS_FROM_NAME,
                "to_name": LS_TO_NAME,
                "type": "choices",
                "value": {"choices": [label]},
            }
            pred: dict[str, Any] = {"model_version": model_version, "result": [result]}
            if cols["confidence"][j] is not None:
                pred["score"] = cols["confidence"][j]
            task["predictions"].append(pred)
        tasks.append(task)
    with open_text(out) as f:
        f.write(_json_lines(tasks) + "\n")
    labels = sorted({str(x) for x in cols["label"] if x is not None})
    return None, {}, {"media": media, "model_version": model_version, "label_config": labelstudio_config(labels)}


WRITERS: dict[str, Callable[..., Written]] = {
    "csv": _write_csv,
    "json": _write_json,
    "kinetics": _write_kinetics,
    "vggsound": _write_vggsound,
    "fiftyone": _write_fiftyone,
    "labelstudio": _write_labelstudio,
}


# --------------------------------------------------------------------------------- provenance


def run_hash(run_dir: Path) -> str:
    """One hash over the files that define a run's clusters (meta, clip order, assignments, scores)."""
    h = hashlib.sha256()
    for rel in (META_FILE, CLIPS_FILE, "assignments/joint.npy", "assignments/confidence.npy"):
        p = run_dir / rel
        h.update(rel.encode())
        h.update(file_hash(p).encode() if p.is_file() else b"-")
    return h.hexdigest()[:16]


def export_labels(
    store: LabelStore,
    fmt: str,
    out: str | os.PathLike,
    *,
    head: int = 0,
    snapshot: str | int | None = None,
    only_named: bool = False,
    min_confidence: float | None = None,
    copy: bool = False,
    url_prefix: str | None = None,
    media_root: str | os.PathLike | None = None,
) -> ExportResult:
    """Write the labels of ``head`` (now, or at ``snapshot``) as ``fmt`` to ``out`` plus its sidecar."""
    if fmt not in WRITERS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    run = store._need_run("exporting")
    out = Path(out).expanduser()
    upto = store.resolve_snapshot(snapshot)
    snap_name = None
    if upto is not None:
        snaps = store.snapshots()
        snap_name = str(snaps.loc[snaps["event_id"] == upto, "name"].iloc[0])
    table = export_table(store, head, snapshot, only_named=only_named, min_confidence=min_confidence)
    meta = run.meta
    rhash = run_hash(run.dir)
    model_version = f"selavi-{meta.checkpoint_hash or rhash}-head{int(head)}" + (f"-{snap_name}" if snap_name else "")
    context = {"head": int(head), "snapshot": snap_name, "model_version": model_version, "run_hash": rhash}
    started = time.time()
    folder = fmt == "fiftyone"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ExportError(f"cannot create the folder of --out {out}: {err.strerror}") from None
    _check_target(out, folder)
    side = sidecar_path(out)
    # stage the output and its sidecar as hidden siblings, then rename both into place: an
    # interrupted export leaves only hidden temporaries, never a half file under a final name
    staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    data = staged / "tree" if folder else staged / out.name
    try:
        mask, skipped, extra = WRITERS[fmt](
            table, data, store=store, context=context, copy=copy, url_prefix=url_prefix, media_root=media_root
        )
        exported = table if mask is None else table[mask]
        prov = _provenance(store, fmt, out, table, exported, skipped, extra, context, started,
                           only_named=only_named, min_confidence=min_confidence)  # fmt: skip
        if folder:
            prov["files"] = sum(len(files) for _, _, files in os.walk(data))
        else:
            prov["sha256"] = file_hash(data, length=None)
        with open_text(staged / side.name) as f:
            json.dump(prov, f, ensure_ascii=False, indent=2)
            f.write("\n")
        replace_tree(data, out)
        os.replace(staged / side.name, side)
        fsync_dir(out.parent)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    c = prov["counts"]
    return ExportResult(fmt, out, side, c["written"], c["by_label"], c["by_source"], skipped, prov)


def _provenance(
    store: LabelStore,
    fmt: str,
    out: Path,
    table: pd.DataFrame,
    exported: pd.DataFrame,
    skipped: dict[str, int],
    extra: dict[str, Any],
    context: dict[str, Any],
    started: float,
    *,
    only_named: bool,
    min_confidence: float | None,
) -> dict[str, Any]:
    run = store._need_run("exporting")
    meta = run.meta
    by_label = {str(k): int(v) for k, v in exported["label"].dropna().value_counts().sort_index().items()}
    by_source = {s: int((exported["label_source"] == s).sum()) for s in (SOURCE_OVERRIDE, SOURCE_CLUSTER, SOURCE_NONE)}
    annotators = {str(k): int(v) for k, v in exported["annotator"].dropna().value_counts().sort_index().items()}
    try:
        from selavi_core.catalog import catalog_hash

        catalog_now = catalog_hash(meta.catalog_dir)
    except SelaviError:
        catalog_now = None
    log = store.log_info(context["snapshot"])
    return {
        "format": fmt,
        "output": out.name,
        "created": _iso(started),
        "selavi_version": __version__,
        "run": {
            "dir": str(run.dir.resolve()),
            "run_hash": context["run_hash"],
            "catalog_dir": meta.catalog_dir,
            "catalog_hash": meta.catalog_hash,
            "catalog_hash_now": catalog_now,
            "checkpoint": meta.checkpoint,
            "checkpoint_hash": meta.checkpoint_hash,
            "preset": meta.preset,
            "heads": meta.heads,
            "clusters": meta.clusters,
        },
        "labels": {
            "store": redact(store.url),
            "run_key": store.run_key,
            "assignment": store.assignment_id,
            "names_await_carry": store.needs_carry(),  # names of another assignment: in no row of this export
            "head": context["head"],
            "snapshot": context["snapshot"],
            "last_event_id": log["last_event_id"],
            "annotators_in_log": log["annotators"],
        },
        "filters": {"only_named": bool(only_named), "min_confidence": min_confidence},
        "counts": {
            "clips_in_run": int(run.n_clips),
            "rows_selected": int(len(table)),
            "written": int(len(exported)),
            "by_label": by_label,
            "by_source": by_source,
            "skipped": skipped,
        },
        "annotators": annotators,
        **extra,
    }


def summary(result: ExportResult) -> str:
    """Two or three human lines about an export (the CLI prints them)."""
    src = ", ".join(f"{k} {v}" for k, v in result.by_source.items())
    top = sorted(result.by_label.items(), key=lambda kv: (-kv[1], kv[0]))
    labels = ", ".join(f"{k} {v}" for k, v in top[:8]) + (f", ... ({len(top)} labels)" if len(top) > 8 else "")
    lines = [f"wrote {result.rows} {result.format} records to {result.path}", f"  by source: {src}"]
    if labels:
        lines.append(f"  by label: {labels}")
    if result.skipped:
        lines.append("  skipped: " + ", ".join(f"{k} {v}" for k, v in result.skipped.items()))
    if result.provenance.get("labels", {}).get("names_await_carry"):
        lines.append(
            "  note: the cluster names were given on an earlier assignment (retrained or re-assigned) and label no "
            "clip here; `selavi labels RUN_DIR carry` carries them over"
        )
    lines.append(f"  provenance: {result.sidecar}")
    return "\n".join(lines)


def export_bytes(store: LabelStore, fmt: str, **options: Any) -> tuple[bytes, dict[str, Any]]:
    """A file format's export as bytes plus its provenance (the Studio's download button).

    Written through ``export_labels`` into a temporary folder, so the bytes are exactly what
    ``selavi export`` would write.
    """
    if fmt == "fiftyone":
        raise ExportError("the fiftyone format is a folder tree; export it with `selavi export` instead")
    suffix = {"csv": ".csv", "kinetics": ".csv", "vggsound": ".csv"}.get(fmt, ".json")
    with tempfile.TemporaryDirectory(prefix="selavi-export-") as tmp:
        result = export_labels(store, fmt, Path(tmp) / f"labels{suffix}", **options)
        return result.path.read_bytes(), result.provenance
