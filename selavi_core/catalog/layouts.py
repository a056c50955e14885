"""Readers that turn a data set's on-disk layout into clip specifications.

Every reader is pure (it lists folders and reads text files, it never opens media) and returns a
sorted ``list[ClipSpec]``: which file, which window of it, and whatever label and split the layout
states. Probing and validating the files is the job of ``ingest.build_catalog``, so a missing or
broken file becomes an error row there instead of a crash here. Malformed metadata is different: it
is the user's to fix, so it raises ``CatalogError`` naming the file and line.

Formats (see ../shared/docs/selavi-method.md §5.1-5.4):

- ``tree``      ``{split}/{class}/{video}`` (the official SeLaVi layout), or ``{class}/{video}`` with ``bare=True``
- ``folder``    every video under a folder, unlabelled
- ``csv``       a CSV with a ``path`` column, optional ``label,start_s,end_s,split`` and any extra columns
- ``vggsound``  headerless ``vggsound.csv`` (ytid, start, label, split) + clips ``<ytid>_<start>_<end>.mp4``,
                the times in seconds or in milliseconds (``parse_segment_name`` says which)
- ``ave``       ``Annotations.txt`` + ``trainSet/valSet/testSet.txt`` (``Category&VideoID&Quality&Start&End``)
- ``kinetics``  Kinetics CSV (``label,youtube_id,time_start,time_end,split``), optionally only Kinetics-Sound

VGG-Sound and Kinetics clip files are already cut to their segment, so their window is the whole
file; the segment's place in the YouTube video is kept in ``extra`` (``yt_start_s``, ``yt_end_s``).
Only when the full YouTube video is present (``<ytid>.mp4``) does the segment become a window in it.
"""

from __future__ import annotations

import csv
import inspect
import io
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from selavi_core import config
from selavi_core.errors import CatalogError

PathLike = str | os.PathLike

#: Length of a VGG-Sound / Kinetics segment when only its start is known.
SEGMENT_SECONDS = 10

#: The 32 Kinetics-400 classes SeLaVi trains on as "Kinetics-Sound" (method doc §5.4).
KINETICS_SOUND_CLASSES: tuple[str, ...] = (
    "blowing_nose", "blowing_out_candles", "bowling", "chopping_wood", "dribbling_basketball", "laughing",
    "mowing_lawn", "playing_accordion", "playing_bagpipes", "playing_bass_guitar", "playing_clarinet",
    "playing_drums", "playing_guitar", "playing_harmonica", "playing_keyboard", "playing_organ", "playing_piano",
    "playing_saxophone", "playing_trombone", "playing_trumpet", "playing_violin", "playing_xylophone",
    "ripping_paper", "shoveling_snow", "shuffling_cards", "singing", "stomping_grapes", "strumming_guitar",
    "tap_dancing", "tapping_guitar", "tapping_pen", "tickling",
)  # fmt: skip

#: AVE split files and the split name each gives.
AVE_SPLIT_FILES = {"trainSet.txt": "train", "valSet.txt": "val", "testSet.txt": "test"}

#: Top-level folder names that mark a ``{split}/{class}/{video}`` tree when the format is detected.
SPLIT_NAMES = frozenset({"train", "training", "val", "valid", "validation", "test", "testing"})

#: Longest clip a ``<ytid>_<start>_<end>`` name may describe, in seconds: how seconds and milliseconds are told
#: apart (a segment is 10 s; twice that leaves room for clips cut a little long, and is far below the 10,000
#: a millisecond name differs by).
MAX_SEGMENT_SECONDS = 2 * SEGMENT_SECONDS

#: ``<youtube id>_<start>_<end>``: the id may itself hold ``_`` and ``-``, so the last two fields are the times.
_SEGMENT_NAME = re.compile(r"^(?P<ytid>.+)_(?P<start>[0-9]+(?:\.[0-9]+)?)_(?P<end>[0-9]+(?:\.[0-9]+)?)$")


@dataclass(frozen=True)
class ClipSpec:
    """One clip as a layout states it; ``start_s``/``end_s`` of None mean the start/end of the file."""

    path: str
    start_s: float | None = None
    end_s: float | None = None
    label: str | None = None
    split: str | None = None
    source_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


# --------------------------------------------------------------------------------------------- helpers


def is_video_name(name: str) -> bool:
    """A file we treat as media: a known video suffix and not hidden (``._x.mp4`` is macOS metadata)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in config.VIDEO_SUFFIXES


def walk_videos(root: PathLike, exclude: Iterable[PathLike] = ()) -> Iterator[Path]:
    """Absolute paths of every video under ``root``, sorted, skipping hidden folders and ``exclude``.

    ``exclude`` exists so that a catalog folder written inside the source (with its previews) is not
    ingested as data on the next run. Symlinked folders are followed once each.
    """
    root = Path(os.path.abspath(root))
    skip = {os.path.realpath(p) for p in exclude}
    seen: set[str] = set()
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen or real in skip:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in filenames if is_video_name(f))
    return iter(sorted(out))


def _require_dir(source: PathLike, what: str) -> Path:
    path = Path(os.path.abspath(os.path.expanduser(source)))
    if not path.exists():
        raise CatalogError(f"{what} {path} does not exist")
    if not path.is_dir():
        raise CatalogError(f"{what} {path} is not a folder")
    return path


def _require_file(path: PathLike, what: str) -> Path:
    path = Path(os.path.abspath(os.path.expanduser(path)))
    if not path.is_file():
        raise CatalogError(f"{what} {path} not found")
    return path


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise CatalogError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise CatalogError(f"{path}: cannot read ({err.strerror})") from None


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank CSV record; the line number is where the record starts."""
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    line = 1
    try:
        for fields in reader:
            start, line = line, reader.line_num + 1
            if any(f.strip() for f in fields):
                yield start, [f.strip() for f in fields]
    except csv.Error as err:
        raise CatalogError(f"{path}, line {line}: {err}") from None


def _number(text: str, path: Path, line: int, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CatalogError(f"{path}, line {line}: {what} {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise CatalogError(f"{path}, line {line}: {what} {text!r} must be a finite number >= 0")
    return value


def _whole_seconds(text: str, path: Path, line: int, what: str) -> int:
    value = _number(text, path, line, what)
    if value != int(value):
        raise CatalogError(f"{path}, line {line}: {what} {text!r} is not a whole number of seconds")
    return int(value)


def _window(start: float | None, end: float | None, path: Path, line: int) -> None:
    if start is not None and end is not None and end <= start:
        raise CatalogError(f"{path}, line {line}: end {end:g} s is not after start {start:g} s")


def class_key(label: str) -> str:
    """Compare class names written with spaces or underscores alike (``playing bagpipes`` = ``playing_bagpipes``)."""
    return "_".join(label.strip().lower().replace("_", " ").split())


class Segment(NamedTuple):
    """A YouTube segment named by a clip file: the id, and its window in the YouTube video in seconds."""

    ytid: str
    start_s: float  # an int when whole, so ``30`` and not ``30.0`` reaches the catalog
    end_s: float
    unit: str  # how the name wrote the times: "s" or "ms"


def _whole(value: float) -> float:
    return int(value) if value == int(value) else value


def parse_segment_name(stem: str) -> Segment | None:
    """The segment a clip stem such as ``-a_b-C_d1234_000030_000040`` names, or None if it names none.

    The id may hold ``_`` and ``-`` (the last two fields are the times). The times are seconds (whole or
    decimal: ``abc_30_40``, ``abc_30.5_40.5``) or milliseconds (``abc_30000_40000``), told apart by the
    clip's length, which is unambiguous because a clip is at most ``MAX_SEGMENT_SECONDS`` (20 s) long:
    ``end - start`` of at most 20 is seconds, of 20 to 20,000 is milliseconds, anything else (or an end
    not after the start) is not a segment name.
    """
    m = _SEGMENT_NAME.match(stem)
    if not m:
        return None
    start, end = float(m["start"]), float(m["end"])
    length = end - start
    if 0 < length <= MAX_SEGMENT_SECONDS:
        return Segment(m["ytid"], _whole(start), _whole(end), "s")
    if MAX_SEGMENT_SECONDS < length <= 1000 * MAX_SEGMENT_SECONDS:
        return Segment(m["ytid"], _whole(round(start / 1000, 3)), _whole(round(end / 1000, 3)), "ms")
    return None


def _index_videos(root: Path, exclude: Iterable[PathLike]) -> dict[str, list[Path]]:
    """Videos under ``root`` by file stem (several when the same name sits in different folders)."""
    index: dict[str, list[Path]] = {}
    for p in walk_videos(root, exclude):
        index.setdefault(p.stem, []).append(p)
    return index


def _is_under(path: Path, folder: Path) -> bool:
    return path.parent == folder


# --------------------------------------------------------------------------------------------- readers


def read_tree(source: PathLike, *, bare: bool = False, exclude: Iterable[PathLike] = ()) -> list[ClipSpec]:
    """``{split}/{class}/{video}`` (SeLaVi's own layout; any split names), or ``{class}/{video}`` with ``bare``.

    The class is the folder name exactly as written. A video at another depth is an error rather than
    a guess: that tree is some other layout and ``folder`` or ``csv`` describes it better.
    """
    root = _require_dir(source, "tree")
    depth = 2 if bare else 3
    specs: list[ClipSpec] = []
    misplaced: list[Path] = []
    for p in walk_videos(root, exclude):
        parts = p.relative_to(root).parts
        if len(parts) != depth:
            misplaced.append(p)
            continue
        split = None if bare else parts[0]
        specs.append(ClipSpec(path=str(p), label=parts[-2], split=split))
    if misplaced:
        shape = "{class}/{video}" if bare else "{split}/{class}/{video}"
        hint = "" if bare else " (for a {class}/{video} tree use --bare)"
        example = misplaced[0].relative_to(root)
        raise CatalogError(
            f"{root}: {len(misplaced)} videos are not at {shape}, e.g. {example}{hint}; "
            "use --format folder to ingest any folder without labels"
        )
    return specs


def read_folder(source: PathLike, *, exclude: Iterable[PathLike] = ()) -> list[ClipSpec]:
    """Every file with a video suffix under ``source``, recursively, unlabelled.

    No file is judged here: a text file named ``.mp4`` is listed and becomes an error row at ingest,
    so the user sees it instead of losing it silently.
    """
    root = _require_dir(source, "folder")
    return [ClipSpec(path=str(p)) for p in walk_videos(root, exclude)]


#: Columns of the generic CSV that map onto ``ClipSpec`` fields; every other column goes to ``extra``.
CSV_FIELDS = ("path", "label", "start_s", "end_s", "split", "source_id")


def read_csv(source: PathLike, *, csv_path: PathLike | None = None) -> list[ClipSpec]:
    """A CSV with a header naming at least ``path`` (and usually ``label``).

    ``source`` is the CSV itself or a folder holding ``labels.csv`` (``csv_path`` overrides). Relative
    paths resolve against the CSV's folder; an empty label, split or time means "none"/"whole file".
    Extra columns (a speaker, a source file) are kept in ``extra``.
    """
    if csv_path is not None:
        path = _require_file(csv_path, "CSV file")
    else:
        src = Path(os.path.abspath(os.path.expanduser(source)))
        if not src.exists():
            raise CatalogError(f"CSV source {src} does not exist")
        path = _require_file(src / "labels.csv" if src.is_dir() else src, "CSV file")
    base = path.parent
    rows = _csv_rows(path)
    first = next(rows, None)
    if first is None:
        raise CatalogError(f"{path} is empty (expected a header line such as path,label)")
    header = [h.strip().lower() for h in first[1]]
    if "path" not in header:
        raise CatalogError(f"{path}, line {first[0]}: the header has no 'path' column (found: {', '.join(first[1])})")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise CatalogError(f"{path}, line {first[0]}: duplicate columns {', '.join(dupes)}")
    specs: list[ClipSpec] = []
    seen: dict[tuple[str, float | None, float | None], int] = {}
    for line, fields in rows:
        if len(fields) != len(header):
            raise CatalogError(f"{path}, line {line}: {len(fields)} fields, but the header has {len(header)}")
        row = {h: (v if v != "" else None) for h, v in zip(header, fields, strict=True)}
        if row["path"] is None:
            raise CatalogError(f"{path}, line {line}: empty path")
        start_text, end_text = row.get("start_s"), row.get("end_s")
        start = _number(start_text, path, line, "start_s") if start_text is not None else None
        end = _number(end_text, path, line, "end_s") if end_text is not None else None
        _window(start, end, path, line)
        clip_path = os.path.abspath(os.path.join(base, os.path.expanduser(row["path"])))
        key = (clip_path, start, end)
        if key in seen:
            raise CatalogError(f"{path}, line {line}: the same clip as line {seen[key]} ({row['path']})")
        seen[key] = line
        specs.append(
            ClipSpec(
                path=clip_path,
                start_s=start,
                end_s=end,
                label=row.get("label"),
                split=row.get("split"),
                source_id=row.get("source_id"),
                extra={h: v for h, v in row.items() if h not in CSV_FIELDS},
            )
        )
    return specs


def read_vggsound(
    source: PathLike, *, csv_path: PathLike | None = None, exclude: Iterable[PathLike] = ()
) -> list[ClipSpec]:
    """VGG-Sound: the headerless ``vggsound.csv`` (ytid, start, label, split) and a folder of clips.

    Clips are found anywhere under ``source`` (flat or in class folders) by their name
    ``<ytid>_<start>_<end>.<ext>``, the times in seconds or milliseconds (``parse_segment_name``), and
    matched to CSV rows on ``(ytid, start)``. A row without a file becomes a spec for the expected
    ``<ytid>_<start:06d>_<start+10:06d>.mp4`` (in milliseconds, ``<ytid>_<start*1000>_<end*1000>.mp4``,
    when most clip names are) so ingest reports it as missing; a file without a row is kept, unlabelled.
    """
    root = _require_dir(source, "VGG-Sound clip folder")
    meta = _require_file(csv_path if csv_path is not None else root / "vggsound.csv", "VGG-Sound CSV")
    rows: dict[tuple[str, int], tuple[int, str, str | None]] = {}
    others: dict[tuple[str, int], list[str]] = {}
    for line, fields in _csv_rows(meta):
        if line == 1 and len(fields) >= 2 and re.fullmatch(r"[A-Za-z_ ]*start[A-Za-z_ ]*", fields[1]):
            continue  # a header someone added; the official file has none
        if len(fields) < 4:
            raise CatalogError(f"{meta}, line {line}: expected 4 fields (ytid, start, label, split), got {len(fields)}")
        ytid, start_text, split_text = fields[0], fields[1], fields[-1]
        label = ",".join(fields[2:-1]).strip()  # an unquoted label with commas spills over several fields
        if not ytid:
            raise CatalogError(f"{meta}, line {line}: empty YouTube id")
        key = (ytid, _whole_seconds(start_text, meta, line, "start"))
        if key in rows:
            if label and label != rows[key][1] and label not in others.setdefault(key, []):
                others[key].append(label)  # keep the first label, record the rest
            continue
        rows[key] = (line, label, split_text or None)

    specs: list[ClipSpec] = []
    matched: set[tuple[str, int]] = set()
    unnamed: dict[str, list[Path]] = {}  # videos whose name is not a segment name, by stem
    units = {"s": 0, "ms": 0}
    for p in walk_videos(root, exclude):
        seg = parse_segment_name(p.stem)
        if seg is None:
            unnamed.setdefault(p.stem, []).append(p)
            continue
        ytid, start, end, unit = seg
        units[unit] += 1
        extra: dict[str, Any] = {"yt_start_s": start, "yt_end_s": end}
        key = (ytid, int(start))
        row = rows.get(key) if start == int(start) else None  # the CSV's starts are whole seconds
        if row is None:
            specs.append(ClipSpec(path=str(p), source_id=ytid, extra=extra))
            continue
        matched.add(key)
        if key in others:
            extra["other_labels"] = "; ".join(others[key])
        specs.append(ClipSpec(path=str(p), label=row[1] or None, split=row[2], source_id=ytid, extra=extra))
    full_used: set[Path] = set()
    for row_key, (_line, label, split) in rows.items():
        if row_key in matched:
            continue
        row_id, row_start = row_key
        row_end = row_start + SEGMENT_SECONDS
        extra = {"yt_start_s": row_start, "yt_end_s": row_end}
        if row_key in others:
            extra["other_labels"] = "; ".join(others[row_key])
        if row_id in unnamed:  # the untrimmed YouTube video <ytid>.mp4: the segment is a window in it
            full = unnamed[row_id][0]
            full_used.add(full)
            specs.append(ClipSpec(str(full), float(row_start), float(row_end), label or None, split, row_id, extra))
        else:
            in_ms = units["ms"] > units["s"]
            times = f"{row_start * 1000}_{row_end * 1000}" if in_ms else f"{row_start:06d}_{row_end:06d}"
            expected = root / f"{row_id}_{times}.mp4"
            specs.append(ClipSpec(str(expected), None, None, label or None, split, row_id, extra))
    # any other video is kept, unlabelled: a stray file should show up in the catalog, not vanish
    specs.extend(ClipSpec(path=str(p)) for ps in unnamed.values() for p in ps if p not in full_used)
    return sorted(specs, key=_order)


def _parse_ave_file(path: Path, header_expected: bool) -> list[tuple[int, str, str, str, float, float]]:
    """Records ``(line, category, video_id, quality, start, end)`` of an AVE ``&``-separated file."""
    out = []
    for line_no, raw in enumerate(_read_text(path).splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split("&")]
        if len(fields) != 5:
            raise CatalogError(
                f"{path}, line {line_no}: expected Category&VideoID&Quality&StartTime&EndTime, got {len(fields)} fields"
            )
        category, vid, quality, start_text, end_text = fields
        if line_no == 1 and not re.fullmatch(r"[0-9.]+", start_text):
            continue  # the header line (present in Annotations.txt, optional in the split files)
        if not vid or not category:
            raise CatalogError(f"{path}, line {line_no}: empty {'VideoID' if not vid else 'Category'}")
        start = _number(start_text, path, line_no, "StartTime")
        end = _number(end_text, path, line_no, "EndTime")
        _window(start, end, path, line_no)
        out.append((line_no, category, vid, quality, start, end))
    if header_expected and not out:
        raise CatalogError(f"{path} has no annotations")
    return out


def read_ave(source: PathLike, *, annotations: PathLike | None = None) -> list[ClipSpec]:
    """AVE: ``Annotations.txt`` gives each event (a video with two events gives two clips), the split
    files give its split, and the event window ``StartTime..EndTime`` is the clip.

    Videos are looked up at ``<source>/AVE/<VideoID>.mp4`` then ``<source>/<VideoID>.mp4``; split files
    next to the annotations, then in ``source``. Identical annotation lines count once; videos that no
    annotation names are left out (every AVE video is annotated).
    """
    root = _require_dir(source, "AVE folder")
    ann = _require_file(annotations if annotations is not None else root / "Annotations.txt", "AVE annotations")
    events: dict[tuple[str, float, float], tuple[str, str]] = {}
    for _line, category, vid, quality, start, end in _parse_ave_file(ann, header_expected=True):
        events.setdefault((vid, start, end), (category, quality))
    splits: dict[tuple[str, float, float], str] = {}
    for name, split in AVE_SPLIT_FILES.items():
        for folder in dict.fromkeys((ann.parent, root)):
            if (folder / name).is_file():
                for _line, category, vid, quality, start, end in _parse_ave_file(folder / name, header_expected=False):
                    splits.setdefault((vid, start, end), split)
                    events.setdefault((vid, start, end), (category, quality))
                break
    video_dirs = [d for d in (root / "AVE", root) if d.is_dir()]
    specs = []
    for (vid, start, end), (category, quality) in events.items():
        path = next(
            (d / f"{vid}.mp4" for d in video_dirs if (d / f"{vid}.mp4").is_file()), video_dirs[0] / f"{vid}.mp4"
        )
        specs.append(
            ClipSpec(str(path), start, end, category, splits.get((vid, start, end)), vid, {"quality": quality})
        )
    return sorted(specs, key=_order)


def read_kinetics(
    source: PathLike,
    *,
    csv_path: PathLike | None = None,
    kinetics_sound: bool = False,
    exclude: Iterable[PathLike] = (),
) -> list[ClipSpec]:
    """Kinetics: the CSV ``label,youtube_id,time_start,time_end,split`` and clips named
    ``<ytid>_<start:06d>_<end:06d>.mp4`` (or unpadded) under ``{split}/{label}/``, ``{label}/`` or flat
    in ``source`` (looked up in that order; class folders may use spaces or underscores).

    ``kinetics_sound`` keeps only the 32 Kinetics-Sound classes. A row without a file becomes a spec
    for the expected path so ingest reports it as missing. Files that no row names are left out: a
    Kinetics folder is read through its CSV (with the filter, most of Kinetics-400 is not wanted).
    """
    root = _require_dir(source, "Kinetics clip folder")
    if csv_path is None:
        found = sorted(root.glob("*.csv"))
        if len(found) != 1:
            raise CatalogError(
                f"{root}: pass the Kinetics CSV with --csv ({len(found)} .csv files found in the folder)"
            )
        csv_path = found[0]
    meta = _require_file(csv_path, "Kinetics CSV")
    rows = _csv_rows(meta)
    first = next(rows, None)
    if first is None:
        raise CatalogError(f"{meta} is empty")
    header = [h.lower() for h in first[1]]
    missing = [c for c in ("youtube_id", "time_start", "time_end") if c not in header]
    if missing:
        raise CatalogError(
            f"{meta}, line {first[0]}: the header lacks {', '.join(missing)} "
            "(expected label,youtube_id,time_start,time_end,split)"
        )
    keep = {class_key(c) for c in KINETICS_SOUND_CLASSES}
    index = _index_videos(root, exclude)
    flat_layout = not any(p.is_dir() for p in root.iterdir() if not p.name.startswith("."))
    specs: list[ClipSpec] = []
    seen: set[tuple[str, int, int]] = set()
    for line, fields in rows:
        if len(fields) != len(header):
            raise CatalogError(f"{meta}, line {line}: {len(fields)} fields, but the header has {len(header)}")
        row = dict(zip(header, fields, strict=True))
        label = row.get("label") or None
        if kinetics_sound and (label is None or class_key(label) not in keep):
            continue
        ytid = row["youtube_id"]
        if not ytid:
            raise CatalogError(f"{meta}, line {line}: empty youtube_id")
        start = _whole_seconds(row["time_start"], meta, line, "time_start")
        end = _whole_seconds(row["time_end"], meta, line, "time_end")
        _window(start, end, meta, line)
        if (ytid, start, end) in seen:
            continue
        seen.add((ytid, start, end))
        split = row.get("split") or None
        extra: dict[str, Any] = {"yt_start_s": start, "yt_end_s": end}
        extra.update(
            {k: v for k, v in row.items() if k not in ("label", "youtube_id", "time_start", "time_end", "split")}
        )
        folders = _kinetics_folders(root, split, label)
        path = _pick(index, [f"{ytid}_{start:06d}_{end:06d}", f"{ytid}_{start}_{end}"], folders)
        if path is not None:
            specs.append(ClipSpec(str(path), None, None, label, split, ytid, extra))
            continue
        full = _pick(index, [ytid], folders)
        if full is not None:  # the untrimmed YouTube video: the segment is a window in it
            specs.append(ClipSpec(str(full), float(start), float(end), label, split, ytid, extra))
            continue
        folder = root if flat_layout else next((f for f in folders if f.is_dir()), folders[0])
        specs.append(ClipSpec(str(folder / f"{ytid}_{start:06d}_{end:06d}.mp4"), None, None, label, split, ytid, extra))
    return sorted(specs, key=_order)


def _kinetics_folders(root: Path, split: str | None, label: str | None) -> list[Path]:
    """Where a Kinetics clip may sit, best first: ``{split}/{label}``, ``{label}``, flat."""
    names = [] if label is None else list(dict.fromkeys((label, label.replace(" ", "_"), label.replace("_", " "))))
    folders = [root / split / n for n in names] if split else []
    folders += [root / n for n in names]
    return folders + [root]


def _pick(index: dict[str, list[Path]], stems: list[str], folders: list[Path]) -> Path | None:
    """The file with one of ``stems`` in the first of ``folders`` that has one, else anywhere."""
    candidates = [p for s in stems for p in index.get(s, [])]
    if not candidates:
        return None
    for folder in folders:
        for p in candidates:
            if _is_under(p, folder):
                return p
    return candidates[0]


def _order(spec: ClipSpec) -> tuple:
    return (spec.path, spec.start_s if spec.start_s is not None else -1.0, spec.end_s or -1.0)


# --------------------------------------------------------------------------------------------- registry

LAYOUTS: dict[str, Callable[..., list[ClipSpec]]] = {
    "tree": read_tree,
    "folder": read_folder,
    "csv": read_csv,
    "vggsound": read_vggsound,
    "ave": read_ave,
    "kinetics": read_kinetics,
}


def detect_format(source: PathLike) -> str:
    """A best guess at the layout of ``source``, for ``--format auto``.

    A CSV file or a folder with ``labels.csv`` is ``csv``; ``vggsound.csv`` means ``vggsound``;
    ``Annotations.txt`` means ``ave``; top-level folders that are all split names (train, val, test...)
    mean ``tree``; anything else is an unlabelled ``folder``. Kinetics CSV names vary, so Kinetics is
    never guessed.
    """
    src = Path(os.path.abspath(os.path.expanduser(source)))
    if src.is_file():
        return "csv"
    if not src.is_dir():
        raise CatalogError(f"source {src} does not exist")
    if (src / "labels.csv").is_file():
        return "csv"
    if (src / "vggsound.csv").is_file():
        return "vggsound"
    if (src / "Annotations.txt").is_file():
        return "ave"
    subdirs = [p.name for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if subdirs and all(d.lower() in SPLIT_NAMES for d in subdirs):
        return "tree"
    return "folder"


#: Options that only some readers use and that others may ignore (a folder to leave out of a walk).
_HINTS = frozenset({"exclude"})


def read_layout(source: PathLike, fmt: str, **opts: Any) -> list[ClipSpec]:
    """Read ``source`` with the reader of ``fmt`` (``auto`` guesses it, see ``detect_format``).

    Options a reader does not take are an error when set (``kinetics_sound=True`` for a tree), and
    silently dropped when unset (None/False/empty), so a CLI can pass all of its flags.
    """
    if fmt == "auto":
        fmt = detect_format(source)
    if fmt not in LAYOUTS:
        raise CatalogError(f"unknown format {fmt!r}; choose one of {', '.join(LAYOUTS)}")
    reader = LAYOUTS[fmt]
    accepted = inspect.signature(reader).parameters
    kwargs = {}
    for name, value in opts.items():
        if name in accepted:
            kwargs[name] = value
        elif name not in _HINTS and value not in (None, False, (), []):
            raise CatalogError(f"option {name} does not apply to format {fmt}")
    return reader(source, **kwargs)
