"""Build a catalog folder from clip specs: probe every file once, write ``clips.parquet`` atomically.

Each distinct file is probed in a thread pool (PyAV releases the GIL while demuxing). Results are
kept in ``probe_cache.parquet`` keyed by (absolute path, size, mtime_ns), so re-ingesting a large
data set only probes what changed. Every spec becomes a row: a file that is missing or does not
decode is an ``error`` row with a human reason, never a silent skip.

Probes are also appended, as they come, to ``probe_cache.journal.jsonl`` (one JSON line a file, handed
to the OS every ``config.CATALOG.probe_journal_flush_files`` files or ``..._flush_s`` seconds). A killed
ingest of 100,000 files therefore leaves what it probed in the journal, and the next run takes those
from it instead of opening the files again. At the end of a run the journal is folded into the
parquet cache (written atomically) and removed; a line cut short by the kill is ignored.

Clip ids are opaque and stable: a salted hash of (path relative to the source root, window), so
they neither leak the class (``playing_bagpipes/abc.mp4``) nor change between runs or machines.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import unicodedata
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from selavi_core import __version__, config
from selavi_core.catalog.layouts import ClipSpec
from selavi_core.catalog.schema import (
    CATALOG_COLUMNS,
    CLIPS_FILE,
    MEDIA_ROOTS_KEY,
    META_FILE,
    PROBE_CACHE_FILE,
    PROBE_COLUMNS,
    STATUS_ERROR,
    STATUS_OK,
    catalog_hash,
)
from selavi_core.errors import CatalogError, MediaError
from selavi_core.io import atomic_write, atomic_write_text, remove_orphan_temps
from selavi_core.progress import progress

#: Salt of the clip-id hash (blake2b ``person``, at most 16 bytes). Changing it changes every id.
CLIP_ID_SALT = b"selavi-clip-v1"
CLIP_ID_CHARS = 16

#: Bump when what ``probe`` reports changes, so cached probes of an older version are not reused.
PROBE_CACHE_VERSION = 2  # 2: pix_fmt

#: MediaInfo fields kept in the probe cache.
MEDIA_FIELDS = (
    "container", "duration_s", "fps", "width", "height", "video_codec", "n_frames", "has_audio",
    "audio_codec", "audio_rate", "audio_channels", "pix_fmt",
)  # fmt: skip

REASON_AFTER_END = "window starts after the end of the file"
REASON_NO_DURATION = "unknown duration"

#: Paths shown per error reason in the report.
EXAMPLES_PER_REASON = 3

_MAX_MEDIA_ROOTS = 256

_FLOAT_COLUMNS = ("start_s", "end_s", "duration_s", "fps")
_INT_COLUMNS = ("width", "height", "audio_rate")


@dataclass
class IngestReport:
    """What ``build_catalog`` wrote and what went wrong, grouped by reason (most frequent first)."""

    catalog_dir: Path
    parquet: Path
    n_ok: int
    n_error: int
    reasons: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    n_files: int = 0
    n_probed: int = 0  # files actually opened this time
    n_cached: int = 0  # files whose probe came from the probe cache (its journal included)
    n_resumed: int = 0  # of those, the ones an interrupted run had journalled
    catalog_hash: str = ""
    seconds: float = 0.0

    @property
    def n_clips(self) -> int:
        return self.n_ok + self.n_error

    def summary(self, max_reasons: int = 5) -> str:
        lines = [
            f"{self.n_clips} clips: {self.n_ok} ok, {self.n_error} error "
            f"({self.n_files} files: {self.n_probed} probed, {self.n_cached} from the probe cache"
            + (f" ({self.n_resumed} from an interrupted run)" if self.n_resumed else "")
            + f", {self.seconds:.1f} s)"
        ]
        for reason, count in list(self.reasons.items())[:max_reasons]:
            lines.append(f"  {count:>6}  {reason}  e.g. {', '.join(self.examples.get(reason, []))}")
        if len(self.reasons) > max_reasons:
            rest = sum(list(self.reasons.values())[max_reasons:])
            lines.append(f"  {rest:>6}  other reasons ({len(self.reasons) - max_reasons} kinds; see catalog.json)")
        lines.append(f"catalog: {self.parquet}  (hash {self.catalog_hash})")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------- clip ids


def source_root(source: str | os.PathLike, specs: Sequence[ClipSpec]) -> Path:
    """The folder clip ids are relative to: the source folder, a source file's folder, or else the
    deepest folder holding every clip."""
    if source:
        p = Path(os.path.abspath(os.path.expanduser(source)))
        return p.parent if p.is_file() else p
    if not specs:
        return Path.cwd()
    return Path(os.path.commonpath([os.path.dirname(s.path) for s in specs]))


def _time_key(t: float | None) -> str:
    return "" if t is None else f"{t:.3f}"


def make_clip_id(rel_path: str, start_s: float | None, end_s: float | None) -> str:
    """16 hex chars of a salted blake2b over (relative path, start, end): stable, opaque, no name inside."""
    rel = unicodedata.normalize("NFC", rel_path.replace(os.sep, "/"))
    key = "\x00".join((rel, _time_key(start_s), _time_key(end_s))).encode("utf-8")
    return hashlib.blake2b(key, digest_size=CLIP_ID_CHARS // 2, person=CLIP_ID_SALT).hexdigest()


def _clip_ids(specs: Sequence[ClipSpec], root: Path) -> list[str]:
    seen: dict[tuple[str, float | None, float | None], int] = {}
    for i, s in enumerate(specs):
        key = (os.path.abspath(s.path), s.start_s, s.end_s)
        if key in seen:
            window = "whole file" if s.start_s is None and s.end_s is None else f"{s.start_s}-{s.end_s} s"
            raise CatalogError(
                f"the same clip is listed twice: {s.path} ({window}), entries {seen[key] + 1} and {i + 1}"
            )
        seen[key] = i
    ids = [make_clip_id(os.path.relpath(s.path, root), s.start_s, s.end_s) for s in specs]
    if len(set(ids)) != len(ids):
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
        paths = [s.path for s, i in zip(specs, ids, strict=True) if i == dup]
        raise CatalogError(f"clips {paths} map to the same id {dup} (paths equal after Unicode normalisation?)")
    return ids


# --------------------------------------------------------------------------------------------- probing


def _file_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _probe_one(path: str, probe: Callable[[str], Any]) -> dict[str, Any]:
    """Probe one file into a flat record; any failure becomes a ``reason`` instead of an exception."""
    try:
        info = probe(path)
    except MediaError as err:
        return {"reason": err.reason}
    except Exception as err:  # a decoder bug on one odd file must not stop a 200,000-file ingest
        return {"reason": f"probe failed: {type(err).__name__}: {err}"}
    rec: dict[str, Any] = {f: getattr(info, f, None) for f in MEDIA_FIELDS}
    rec["reason"] = None
    return rec


def _load_probe_cache(path: Path) -> dict[tuple[str, int, int], dict[str, Any]]:
    if not path.is_file():
        return {}
    try:
        df = pd.read_parquet(path)
    except Exception:  # a damaged cache only costs a re-probe
        return {}
    if "version" not in df.columns or df.empty or int(df["version"].iloc[0]) != PROBE_CACHE_VERSION:
        return {}
    out = {}
    for rec in df.to_dict("records"):
        key = (rec.pop("path"), int(rec.pop("size")), int(rec.pop("mtime_ns")))
        rec.pop("version", None)
        out[key] = {k: (None if _isna(v) else v) for k, v in rec.items()}
    return out


def _isna(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def journal_path(cache_file: Path) -> Path:
    """The append-only journal beside a probe cache: ``probe_cache.parquet`` -> ``probe_cache.journal.jsonl``."""
    return cache_file.with_name(f"{cache_file.stem}.journal.jsonl")


def _load_journal(path: Path) -> dict[tuple[str, int, int], dict[str, Any]]:
    """The probes a journal holds; a line cut short (the write a kill interrupted) or foreign is skipped."""
    out: dict[tuple[str, int, int], dict[str, Any]] = {}
    try:
        f = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 (closed below; absent is common)
    except OSError:
        return out
    with f:
        for line in f:
            if not line.endswith("\n"):
                break  # the last line, cut short
            try:
                row = json.loads(line)
                if row.get("version") != PROBE_CACHE_VERSION:
                    continue
                key = (str(row["path"]), int(row["size"]), int(row["mtime_ns"]))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            out[key] = {f: row.get(f) for f in (*MEDIA_FIELDS, "reason")}
    return out


class _Journal:
    """Appends probes as JSON lines and hands them to the OS every ``flush_files`` files or ``flush_s`` seconds.

    Not fsynced: the OS keeps what was handed to it when the process is killed, and after a power cut a
    lost journal only costs a re-probe. Opened on the first probe, so a run with nothing to probe leaves
    no file.
    """

    def __init__(self, path: Path, flush_files: int, flush_s: float):
        self.path, self.flush_files, self.flush_s = path, max(1, flush_files), flush_s
        self._file: Any = None
        self._pending = 0
        self._last = time.monotonic()

    def add(self, key: tuple[str, int, int], rec: dict[str, Any]) -> None:
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        path, size, mtime_ns = key
        row = {"path": path, "size": size, "mtime_ns": mtime_ns, "version": PROBE_CACHE_VERSION}
        row.update({f: rec.get(f) for f in (*MEDIA_FIELDS, "reason")})
        self._file.write(json.dumps(row) + "\n")  # ASCII: a path's undecodable bytes survive as \udcXX
        self._pending += 1
        now = time.monotonic()
        if self._pending >= self.flush_files or now - self._last >= self.flush_s:
            self._file.flush()
            self._pending, self._last = 0, now

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _write_probe_cache(path: Path, entries: dict[tuple[str, int, int], dict[str, Any]]) -> None:
    rows = [
        {
            "path": p,
            "size": size,
            "mtime_ns": mtime,
            "version": PROBE_CACHE_VERSION,
            **{f: rec.get(f) for f in MEDIA_FIELDS},
            "reason": rec.get("reason"),
        }
        for (p, size, mtime), rec in sorted(entries.items())
    ]
    df = pd.DataFrame(rows, columns=["path", "size", "mtime_ns", "version", *MEDIA_FIELDS, "reason"])
    for col in ("container", "video_codec", "audio_codec", "pix_fmt", "reason"):
        df[col] = df[col].astype(object)
    with atomic_write(path, durable=False) as tmp:  # a cache: losing it costs a re-probe
        df.to_parquet(tmp, index=False)


@dataclass(frozen=True)
class ProbeCounts:
    """How ``probe_files`` got its records: opened now, from the cache, and of those from a killed run's journal."""

    probed: int
    cached: int
    resumed: int


def probe_files(
    paths: Sequence[str], cache_file: Path, *, workers: int
) -> tuple[dict[str, dict[str, Any]], ProbeCounts]:
    """``{path: probe record}`` for ``paths`` and how many were probed; updates ``cache_file``.

    Each new probe is journalled as it comes (``journal_path(cache_file)``), so a run killed part-way
    leaves them for the next one; at the end the journal is folded into ``cache_file`` and removed.
    """
    from selavi_core.media import probe  # PyAV: imported only when media is actually opened

    saved = _load_probe_cache(cache_file)
    journal_file = journal_path(cache_file)
    journalled = _load_journal(journal_file)
    cache = {**saved, **journalled}
    keys = {p: _file_key(p) for p in paths}
    results: dict[str, dict[str, Any]] = {}
    todo: list[str] = []
    resumed = 0
    for p in paths:
        k = keys[p]
        key = (p, *k) if k is not None else None
        hit = cache.get(key) if key is not None else None
        if hit is not None:
            results[p] = hit
            resumed += key not in saved
        else:
            todo.append(p)
    if todo:
        journal = _Journal(journal_file, config.CATALOG.probe_journal_flush_files, config.CATALOG.probe_journal_flush_s)
        pool = ThreadPoolExecutor(max_workers=max(1, workers))
        try:
            records = pool.map(lambda p: _probe_one(p, probe), todo)
            for p, rec in zip(todo, progress(records, total=len(todo), desc="probing media", unit="file"), strict=True):
                results[p] = rec
                k = keys[p]
                if k is not None:  # a file that vanished has no key to cache it under
                    journal.add((p, *k), rec)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # on Ctrl-C: stop at once, keep what is journalled
            journal.close()
    current = {(p, *k): results[p] for p in paths if (k := keys[p]) is not None}
    listed = set(paths)
    merged = {**{k: v for k, v in cache.items() if k[0] not in listed}, **current}  # keep other sources' probes
    if merged.keys() != saved.keys():
        _write_probe_cache(cache_file, merged)
    journal_file.unlink(missing_ok=True)  # folded into the cache (or nothing new in it)
    return results, ProbeCounts(probed=len(todo), cached=len(paths) - len(todo), resumed=resumed)


# --------------------------------------------------------------------------------------------- rows


def _clip_row(spec: ClipSpec, rec: dict[str, Any]) -> dict[str, Any]:
    """One catalog row: the probed facts and the window resolved and clipped to the file."""
    row: dict[str, Any] = {
        "path": spec.path, "start_s": spec.start_s, "end_s": spec.end_s, "label": spec.label, "split": spec.split,
        "duration_s": None, "fps": None, "width": None, "height": None, "has_audio": None, "video_codec": None,
        "audio_rate": None, "status": STATUS_ERROR, "error": rec.get("reason"), "source_id": spec.source_id,
        **dict.fromkeys(PROBE_COLUMNS),
    }  # fmt: skip
    if rec.get("reason"):
        return row
    for f in ("duration_s", "fps", "width", "height", "has_audio", "video_codec", "audio_rate", *PROBE_COLUMNS):
        row[f] = rec.get(f)
    duration = rec.get("duration_s")
    if duration is None or not duration > 0:
        row["error"] = REASON_NO_DURATION
        return row
    start = spec.start_s if spec.start_s is not None else 0.0
    end = spec.end_s if spec.end_s is not None else duration
    if start >= duration:
        row["error"] = REASON_AFTER_END
        return row
    row.update(start_s=float(start), end_s=float(min(end, duration)), status=STATUS_OK, error=None)
    return row


def _extra_columns(specs: Sequence[ClipSpec]) -> dict[str, str]:
    """Layout extras (speaker, quality...) -> column names, renamed where they clash with ours."""
    keys = sorted({k for s in specs for k in s.extra})
    return {k: (f"extra_{k}" if k in CATALOG_COLUMNS or k in PROBE_COLUMNS else k) for k in keys}


def _frame(specs: Sequence[ClipSpec], ids: list[str], records: dict[str, dict[str, Any]]) -> pd.DataFrame:
    rows = []
    extras = _extra_columns(specs)
    for spec, cid in zip(specs, ids, strict=True):
        row = _clip_row(spec, records[spec.path])
        row["clip_id"] = cid
        for key, col in extras.items():
            v = spec.extra.get(key)
            row[col] = None if v is None else str(v)
        rows.append(row)
    df = pd.DataFrame(rows, columns=[*CATALOG_COLUMNS, *PROBE_COLUMNS, *extras.values()])
    for col in _FLOAT_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for col in _INT_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce").round().astype("Int64")
    df["has_audio"] = df["has_audio"].astype("boolean")
    for col in df.columns:
        if col not in _FLOAT_COLUMNS + _INT_COLUMNS + ("has_audio",):
            df[col] = df[col].astype(object).where(df[col].notna(), None)
    return df


# --------------------------------------------------------------------------------------------- writing


def _arrow_table(df: pd.DataFrame) -> pa.Table:
    """The catalog with fixed column types, so an all-empty column (no labels) is still ``string``."""
    types = {c: pa.string() for c in df.columns}
    types.update({c: pa.float64() for c in _FLOAT_COLUMNS})
    types.update({c: pa.int64() for c in _INT_COLUMNS})
    types["has_audio"] = pa.bool_()
    schema = pa.schema([(c, types[c]) for c in df.columns])
    return pa.Table.from_pandas(df, schema=schema, preserve_index=False)


def _reason_groups(df: pd.DataFrame) -> tuple[dict[str, int], dict[str, list[str]]]:
    errors = df[df["status"] == STATUS_ERROR]
    counts = errors["error"].value_counts(sort=True)
    reasons = {str(r): int(c) for r, c in sorted(counts.items(), key=lambda rc: (-rc[1], rc[0]))}
    examples = {r: errors.loc[errors["error"] == r, "path"].head(EXAMPLES_PER_REASON).tolist() for r in reasons}
    return reasons, examples


def build_catalog(
    specs: Sequence[ClipSpec],
    out_dir: str | os.PathLike,
    *,
    workers: int | None = None,
    source: str | os.PathLike = "",
    fmt: str = "",
) -> IngestReport:
    """Probe the files of ``specs`` and write ``out_dir/clips.parquet`` and ``out_dir/catalog.json``.

    ``source`` is the folder (or file) the layout was read from: clip ids are relative to it, so the
    same source gives the same ids wherever it lives. Raises ``CatalogError`` when there is nothing
    to catalog or the same clip is listed twice.
    """
    started = time.perf_counter()
    if not specs:
        raise CatalogError("no clips to catalog: the source lists no video files")
    specs = [s if os.path.isabs(s.path) else _absolute(s) for s in specs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # a killed ingest's half-written clips.parquet or probe cache (the journal is kept: it is the resume)
    remove_orphan_temps(
        out, max_age_s=config.CATALOG.orphan_temp_age_s, dead_pid_age_s=config.CATALOG.orphan_temp_dead_pid_age_s
    )
    root = source_root(source, specs)
    ids = _clip_ids(specs, root)

    paths = list(dict.fromkeys(s.path for s in specs))
    workers = config.default_workers() if workers is None else workers
    records, counts = probe_files(paths, out / PROBE_CACHE_FILE, workers=workers)
    df = _frame(specs, ids, records)

    parquet = out / CLIPS_FILE
    with atomic_write(parquet) as tmp:
        pq.write_table(_arrow_table(df), tmp)
    digest = catalog_hash(out)
    reasons, examples = _reason_groups(df)
    ok = df["status"] == STATUS_OK
    labelled = df["label"].notna()
    now = datetime.now(UTC)
    meta = {
        "source": str(Path(os.path.abspath(source))) if source else str(root),
        "format": fmt,
        "created": now.isoformat(timespec="seconds"),
        "created_unix": now.timestamp(),
        "selavi_version": __version__,
        "catalog_hash": digest,
        "counts": {
            "clips": len(df),
            "ok": int(ok.sum()),
            "error": int((~ok).sum()),
            "files": len(paths),
            "labelled": int(labelled.sum()),
            "classes": int(df.loc[labelled, "label"].nunique()),
            "ok_by_split": {
                str(k): int(v) for k, v in df.loc[ok, "split"].fillna("(none)").value_counts().sort_index().items()
            },
        },
        "reasons": reasons,
        "examples": examples,
        "probe": {"probed": counts.probed, "cached": counts.cached, "resumed": counts.resumed, "workers": workers},
        "columns": list(df.columns),
        MEDIA_ROOTS_KEY: _media_roots(root, df),
    }
    atomic_write_text(out / META_FILE, json.dumps(meta, indent=2, ensure_ascii=False))
    return IngestReport(
        catalog_dir=out,
        parquet=parquet,
        n_ok=int(ok.sum()),
        n_error=int((~ok).sum()),
        reasons=reasons,
        examples=examples,
        n_files=len(paths),
        n_probed=counts.probed,
        n_cached=counts.cached,
        n_resumed=counts.resumed,
        catalog_hash=digest,
        seconds=time.perf_counter() - started,
    )


def _media_roots(root: Path, df: pd.DataFrame) -> list[str]:
    """The folders the Studio may serve this catalog's files from (``schema.media_roots``): the source
    root, plus the folders of clips that live elsewhere (a list file naming other folders), nested ones
    left out; more than ``_MAX_MEDIA_ROOTS`` such folders collapse into their common folder."""
    outside = sorted({os.path.dirname(p) for p in df["path"] if isinstance(p, str) and os.path.isabs(p)}
                     - {str(root)})  # fmt: skip
    kept: list[str] = []
    for d in outside:  # sorted: a folder comes before the folders inside it
        if Path(d).is_relative_to(root) or any(Path(d).is_relative_to(k) for k in kept[-1:]):
            continue
        kept.append(d)
    if len(kept) > _MAX_MEDIA_ROOTS:
        kept = [os.path.commonpath(kept)]
    return [str(root), *kept]


def _absolute(spec: ClipSpec) -> ClipSpec:
    return replace(spec, path=os.path.abspath(spec.path))
