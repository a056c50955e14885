"""Cluster montages: one video in which several member clips play at once in a grid.

A grid of real players in the browser costs one media file in server memory per player and per
session (field notes §4.4); a montage is one small MP4 rendered once with moviepy, cached on disk
by content (which clips, which preview files, which layout) and then served like any other clip.
The audio track mixes the members' sound at 1/n volume, so the cluster's common sound still comes
through. Encoded for the browser: H.264 + AAC, yuv420p, +faststart.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from selavi_core.config import STUDIO, StudioSpec
from selavi_core.io import atomic_write

if TYPE_CHECKING:
    from selavi_core.studio.runview import StudioRun

MONTAGE_DIR = "montages"


def render_montage(
    videos: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    grid: tuple[int, int] = STUDIO.montage_grid,
    seconds: float = STUDIO.montage_seconds,
    cell: tuple[int, int] = STUDIO.montage_cell,
    fps: int = STUDIO.montage_fps,
    audio: bool = True,
    spec: StudioSpec = STUDIO,
) -> Path:
    """Render ``videos`` (first ``cols * rows``) as a ``grid`` montage of ``seconds`` at ``out`` (atomic)."""
    from moviepy import ColorClip, CompositeAudioClip, VideoFileClip, clips_array, vfx

    cols, rows = grid
    cw, ch = cell
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sources = [VideoFileClip(str(p)) for p in list(videos)[: cols * rows]]
    if not sources:
        raise ValueError("a montage needs at least one video")
    try:
        cells, sounds = [], []
        for clip in sources:
            c = (
                clip.with_effects([vfx.Loop(duration=seconds)])
                if clip.duration < seconds
                else clip.subclipped(0, seconds)
            )
            scale = max(cw / c.w, ch / c.h)
            c = c.resized(scale).cropped(x_center=c.w * scale / 2, y_center=c.h * scale / 2, width=cw, height=ch)
            if c.audio is not None:
                sounds.append(c.audio)
            cells.append(c.without_audio().with_duration(seconds))
        while len(cells) < cols * rows:
            grey = spec.montage_fill_grey
            cells.append(ColorClip((cw, ch), color=(grey, grey, grey), duration=seconds))
        video = clips_array([cells[r * cols : (r + 1) * cols] for r in range(rows)]).with_duration(seconds)
        if audio and sounds:
            mixed = CompositeAudioClip([s.with_volume_scaled(1.0 / len(sounds)) for s in sounds])
            video = video.with_audio(mixed.with_duration(seconds))
        with atomic_write(out, durable=False) as tmp:  # a cache: a lost montage is rendered again
            video.write_videofile(
                str(tmp), fps=fps, codec="libx264", audio_codec="aac", preset=spec.montage_x264_preset, audio=bool(audio and sounds),
                temp_audiofile_path=str(out.parent), pixel_format="yuv420p", ffmpeg_params=["-movflags", "+faststart"],
                logger=None, threads=spec.montage_threads,
            )  # fmt: skip
    finally:
        for s in sources:
            s.close()
    return out


def montage_key(videos: Sequence[str | os.PathLike], spec: StudioSpec = STUDIO) -> str:
    """Content key: the preview files (path, size, mtime) and the layout; a rebuilt preview changes it."""
    h = hashlib.sha256()
    for p in videos:
        st = os.stat(p)
        h.update(f"{os.fspath(p)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    h.update(f"{spec.montage_grid}|{spec.montage_seconds}|{spec.montage_cell}|{spec.montage_fps}".encode())
    return h.hexdigest()[:16]


def cluster_montage_inputs(sr: StudioRun, head: int, cluster: int, spec: StudioSpec = STUDIO) -> list[Path]:
    """Preview MP4s of the cluster's most confident members that have one (up to one per grid cell)."""
    want = spec.montage_grid[0] * spec.montage_grid[1]
    found: list[Path] = []
    for row in sr.members(head, cluster, order="most", page=0, page_size=want * spec.montage_candidates_per_cell):
        media = sr.media(int(row))
        if media.mp4 is not None:
            found.append(media.mp4)
            if len(found) == want:
                break
    return found


def cluster_montage(
    sr: StudioRun, head: int, cluster: int, spec: StudioSpec = STUDIO, *, render: bool = True
) -> Path | None:
    """The cluster's montage MP4 under ``RUN_DIR/montages/``, rendered on first request.

    Returns None when no member has a playable preview, or (with ``render=False``) when it is not
    rendered yet.
    """
    videos = cluster_montage_inputs(sr, head, cluster, spec)
    if not videos:
        return None
    out = sr.run.dir / MONTAGE_DIR / f"h{head}-c{cluster}-{montage_key(videos, spec)}.mp4"
    if out.is_file():
        return out
    if not render:
        return None
    return render_montage(
        videos, out, grid=spec.montage_grid, seconds=spec.montage_seconds, cell=spec.montage_cell,
        fps=spec.montage_fps, spec=spec,
    )  # fmt: skip
