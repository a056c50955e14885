"""Streamlit glue shared by the Studio's pages: run and head pickers, deep links, player, poster grid.

All numbers come from ``selavi_core.studio``; this module only decides what to draw. The selection
(run, head, cluster, clip) lives in plain ``st.session_state`` keys, not in widget keys: widget values
are scoped to the page that draws them and are dropped on a page switch, while the selection must
follow the user from page to page. Widgets showing it are keyed by a version number that changes
whenever the selection is changed from elsewhere (a deep link, a table click, a ▶ button), so they
re-initialise from it. After every run the selection is written into the URL
(``?run=&head=&cluster=&clip=``), so the address bar is always a deep link to what is on screen.

Who edits (``selavi_core.studio.auth``): with ``selavi app --auth`` the signed-in user (a sign-in form
comes before any page, ``require_user``), with ``--auth-header`` the user the reverse proxy names, and
in single-user mode the name typed in the sidebar, kept for the browser session. Never a URL
parameter: ``?annotator=`` is ignored, so a shared link carries no identity. Edits run in button
callbacks through ``run_edit``, which turns the store's refusals (a stale view, a bad name) into a
message shown at the top of the next render (``show_flash``) instead of an exception.
A store failing under a page (its file deleted, damaged, unwritable: a ``LabelError`` from a read) stops
that page with the store's one message (``run_page``); Streamlit shows no exception details in the
browser (``selavi app`` passes ``--client.showErrorDetails none``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from selavi_core.config import STUDIO
from selavi_core.errors import SelaviError
from selavi_core.labels import LabelError, LabelStore, StaleEditError
from selavi_core.studio import RunRef, StudioRun, open_run, runs_from_env
from selavi_core.studio.auth import HEADER, SINGLE_USER, USERS, AuthError, StudioAuth, auth_from_env
from selavi_core.studio.browse import clip_caption, clip_files
from selavi_core.studio.labelling import (
    STUDIO_SOURCE,
    carry_notice,
    clean_annotator,
    conflict_message,
    open_label_store,
)
from selavi_core.studio.labelling import export_download as _export
from selavi_core.studio.media import BUILDING_POSTER, placeholder_svg, read_poster, video_html
from selavi_core.studio.runs import run_stamp, store_from_env
from selavi_core.studio.serve import MEDIA, media_fragment

RUN, HEAD, CLUSTER, CLIP, HEAD_B, ANNOTATOR = "run", "head", "cluster", "clip", "head_b", "annotator"
EDIT_HINT = "Enter your name under **Annotator** in the sidebar to edit labels: every edit records who made it."
USER = "_user"  # the signed-in user (``--auth`` or ``--auth-header``), in the server-side session only
SINGLE_USER_NOTE = ("Single-user mode: no sign-in (`selavi app --auth` adds it). Only this machine can connect; "
                    "every edit records the name below.")  # fmt: skip
APP_DIR = Path(__file__).resolve().parent


# ---- loading (once per process) -------------------------------------------------------------------
@st.cache_resource(show_spinner="Opening the run…", max_entries=8)
def _load(path: str, stamp: float) -> StudioRun:
    # ``stamp`` (run.json's mtime) makes a retrained run folder load afresh
    return open_run(path)


def load_run(ref: RunRef) -> StudioRun:
    return _load(str(ref.path), run_stamp(ref.path))


def run_refs() -> list[RunRef]:
    return runs_from_env()


# ---- query parameters <-> session state ---------------------------------------------------------
def _qp_int(name: str) -> int | None:
    raw = st.query_params.get(name)
    try:
        return int(raw) if raw not in (None, "") else None
    except ValueError:
        return None


def set_shared(name: str, value: object) -> None:
    """Change a piece of the selection from outside its widget (the widget re-initialises from it)."""
    st.session_state[f"_{name}"] = value
    st.session_state[f"_{name}__v"] = st.session_state.get(f"_{name}__v", 0) + 1


def shared_selectbox(where, label: str, options: list, name: str, default, **kw):
    """A selectbox showing selection ``name``; the user's choice becomes the selection."""
    cur = st.session_state.get(f"_{name}", default)
    if cur not in options:
        cur = default
    version = st.session_state.get(f"_{name}__v", 0)
    val = where.selectbox(label, options, index=options.index(cur), key=f"w_{name}_{version}", **kw)
    st.session_state[f"_{name}"] = val
    return val


def adopt_query_params() -> None:
    """Copy ``?run=&head=&cluster=&clip=`` into the selection when the URL brings new values."""
    seen = st.session_state.setdefault("_qp_seen", {})
    for name in (RUN, HEAD, CLUSTER, CLIP, HEAD_B):  # never ANNOTATOR: a link must not say who edits
        raw = st.query_params.get(name)
        if raw is None or seen.get(name) == raw:
            continue
        seen[name] = raw
        if name in (RUN, CLIP):
            set_shared(name, raw)
        elif (val := _qp_int(name)) is not None:
            set_shared(name, val)


def sync_query_params(**extra: object) -> None:
    """Make the URL exactly this page's state (run, head and the page's own keys), so it can be shared."""
    want = {RUN: st.session_state.get("_run"), HEAD: st.session_state.get("_head"), **extra}
    want = {k: str(v) for k, v in want.items() if v is not None}
    # Always write: after a page change the browser's URL has lost its parameters even when the values are equal
    st.query_params.from_dict(want)
    st.session_state["_qp_seen"] = dict(want)


def sidebar() -> tuple[RunRef | None, StudioRun | None, int | None]:
    """Run and head pickers in the sidebar (shared by every page); returns (ref, run, head)."""
    adopt_query_params()
    refs = run_refs()
    if not refs:
        st.sidebar.error("No run given. Start the Studio with `selavi app RUN_DIR`.")
        return None, None, None
    names = [r.name for r in refs]
    name = shared_selectbox(st.sidebar, "Run", names, RUN, names[0], help="Run folders given to `selavi app`")
    ref = refs[names.index(name)]
    try:
        sr = load_run(ref)
    except (SelaviError, OSError, ValueError) as err:
        st.sidebar.error(f"Cannot open run {ref.path}: {err}")
        return ref, None, None
    if sr.catalog_problem:
        st.sidebar.warning(f"Catalog unavailable, so no labels or media: {sr.catalog_problem}")
    head = shared_selectbox(
        st.sidebar, "Head", list(range(sr.heads)), HEAD, sr.recommend_head().head, format_func=lambda h: f"head {h}",
        help="SeLaVi trains several clustering heads; the Overview says which to start with and why.",
    )  # fmt: skip
    st.sidebar.caption(f"{sr.n:,} clips · {sr.heads} heads · {sr.k} clusters · preset `{sr.run.meta.preset}`")
    annotator_input()
    return ref, sr, int(head)


# ---- labelling -------------------------------------------------------------------------------------
@st.cache_resource(show_spinner=False, max_entries=8)
def _open_store(path: str, stamp: float, store: str | None, _sr: StudioRun) -> LabelStore:
    # one store per run and process: it is thread-safe and keeps the log in memory (RUN_DIR/labels.sqlite, or
    # the database `selavi app --store URL` named)
    return open_label_store(_sr, store)


def label_store(sr: StudioRun) -> LabelStore | None:
    """The run's label store, or None (with the reason in ``_store_problem``) when it cannot be opened."""
    try:
        store = _open_store(str(sr.run.dir), run_stamp(sr.run.dir), store_from_env(), sr)
    except (SelaviError, OSError) as err:
        st.session_state["_store_problem"] = str(err)
        return None
    st.session_state.pop("_store_problem", None)
    return store


def store_or_warning(sr: StudioRun, *, carry_done: bool = False) -> LabelStore | None:
    """The run's store (None, with a warning, when it cannot be opened); names waiting to be carried over to a
    new assignment are shown first (``carry_banner``; ``carry_done``: the carry-over already made too)."""
    store = label_store(sr)
    if store is None:
        st.warning(f"Labels are unavailable (viewing only): {st.session_state.get('_store_problem')}")
    else:
        carry_banner(store, done_too=carry_done)
    return store


def carry_banner(store: LabelStore, *, done_too: bool = False) -> None:
    """After a retrain or re-assign: which cluster names follow their clips where (and the button that carries
    them), and which need a look; with ``done_too``, the carry-over already made too (the Labels page)."""
    notice = carry_notice(store)
    if notice is None or (notice.kind == "done" and not done_too):
        return
    (st.warning if notice.kind == "pending" else st.info)(notice.text)
    with st.expander("Carried names and the ones that need a look", expanded=notice.kind == "pending"):
        if len(notice.carried):
            st.caption("Follow their clips (overlap: share of the name's clips in the new cluster)")
            st.dataframe(notice.carried, hide_index=True, width="stretch", key=f"carried_{notice.kind}")
        if len(notice.needs_look):
            st.caption("Need a look: not carried, name the new cluster yourself")
            st.dataframe(notice.needs_look, hide_index=True, width="stretch", key=f"looks_{notice.kind}")
    if notice.kind == "pending":
        st.button(
            "Carry the names over", key="carry_names", type="primary",
            on_click=run_edit,
            args=(lambda who: store.carry_over(apply=True, annotator=who, source=STUDIO_SOURCE),
                  lambda report: report.summary()),
        )  # fmt: skip


# ---- who edits -------------------------------------------------------------------------------------
def studio_auth() -> StudioAuth:
    return auth_from_env()


def signed_in() -> bool:
    """Whether the pages may be shown now (single-user mode, or a signed-in user); draws nothing."""
    auth = studio_auth()
    if auth.mode == SINGLE_USER:
        return True
    if auth.mode == HEADER:
        return auth.header_user(st.context.headers) is not None
    user = st.session_state.get(USER)
    return user is not None and auth.still_valid(user)


def require_user() -> str | None:
    """Before any page: the signed-in user, or (in single-user mode) None; else draw the sign-in form (or
    the refusal) and stop the script, so no page and no sidebar is drawn."""
    auth = studio_auth()
    if auth.mode == SINGLE_USER:
        return None
    if auth.mode == HEADER:
        user = auth.header_user(st.context.headers)
        if user is None:
            st.session_state.pop(USER, None)
            st.title("SeLaVi Studio")
            st.error(f"Not signed in: this Studio takes the user from the `{auth.header}` header that its "
                     "sign-in proxy sets, and this request has none (or not a valid name). Open the Studio "
                     "through the proxy.")  # fmt: skip
            st.stop()
        st.session_state[USER] = user
        return user
    user = st.session_state.get(USER)
    if user is not None and auth.still_valid(user):
        return user
    st.session_state.pop(USER, None)
    _sign_in_form(auth)
    st.stop()
    return None  # (st.stop raises)


def _sign_in_form(auth: StudioAuth) -> None:
    st.title("SeLaVi Studio")
    with st.form("sign_in", width=420):
        st.subheader("Sign in")
        name = st.text_input("User name", autocomplete="username")
        password = st.text_input("Password", type="password", autocomplete="current-password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if not submitted:
        return
    try:
        user = auth.sign_in(name, password)
    except AuthError as err:
        st.error(f"Not signed in: {err}.")
        return
    st.session_state[USER] = user
    st.rerun()


def _sign_out() -> None:
    for key in (USER, "_annotator"):
        st.session_state.pop(key, None)


def _annotator_key() -> str:
    return f"w_{ANNOTATOR}_{st.session_state.get(f'_{ANNOTATOR}__v', 0)}"


def annotator_input() -> str | None:
    """Who edits, in the sidebar: the signed-in user (and a sign-out button), or in single-user mode a
    field for the annotator's name, kept for the browser session."""
    auth = studio_auth()
    if auth.mode != SINGLE_USER:
        user = st.session_state.get(USER)
        st.sidebar.markdown(f"Signed in as **{user}**" if user else "Not signed in")
        if auth.mode == USERS:
            st.sidebar.button("Sign out", key="_sign_out", on_click=_sign_out)
        else:
            st.sidebar.caption(f"(from the `{auth.header}` header of the sign-in proxy)")
        return user
    st.sidebar.caption(SINGLE_USER_NOTE)
    name = clean_annotator(
        st.sidebar.text_input(
            "Annotator", value=st.session_state.get("_annotator") or "", key=_annotator_key(),
            placeholder="your name", help="Needed before your first label edit; every edit records it.",
        )
    )  # fmt: skip
    st.session_state["_annotator"] = name
    if name is None:
        st.sidebar.caption("Enter your name to edit labels.")
    return name


def annotator() -> str | None:
    """The annotator now: the signed-in user, or in single-user mode the field's latest value (a callback
    may run before the script re-reads it)."""
    if studio_auth().mode != SINGLE_USER:
        return st.session_state.get(USER)
    raw = st.session_state.get(_annotator_key())
    return clean_annotator(raw) if raw is not None else st.session_state.get("_annotator")


def flash(kind: str, text: str) -> None:
    st.session_state.setdefault("_flash", []).append((kind, text))


def show_flash() -> None:
    """Messages from the edits of the last click (success, conflict, refusal), shown once."""
    for kind, text in st.session_state.pop("_flash", []):
        {"success": st.success, "error": st.error, "warning": st.warning}.get(kind, st.info)(text)


def run_edit(edit: Callable[[str], object], done: str | Callable[[object], str], attempted: str | None = None) -> bool:
    """Run ``edit(annotator)`` (a button callback); report success or the store's refusal via ``flash``.

    ``attempted`` (e.g. the name typed) is repeated in a conflict message, since the field then shows
    the other annotator's value."""
    who = annotator()
    if who is None:
        flash("warning", EDIT_HINT)
        return False
    try:
        result = edit(who)
    except StaleEditError as err:
        flash("error", conflict_message(err, attempted))
        return False
    except LabelError as err:
        flash("error", f"Not saved: {err}")
        return False
    flash("success", done(result) if callable(done) else done)
    return True


def field(key: str) -> str:
    """A text widget's current value (stripped) from a callback."""
    return str(st.session_state.get(key) or "").strip()


def run_page(page) -> None:
    """Run the chosen page; a label store failing under it (file deleted or replaced, damaged, unwritable, busy)
    ends the page with the store's message instead of an exception."""
    try:
        page.run()
    except LabelError as err:
        st.error(f"Labels are unavailable: {err}")


def current_clip(sr: StudioRun) -> int | None:
    """The row of the clip in the player (``?clip=`` or the last clip clicked), if it is in this run."""
    cid = st.session_state.get("_clip")
    if cid is None:
        return None
    return sr.row_of.get(str(cid))


def set_clip(clip_id: str) -> None:
    set_shared(CLIP, str(clip_id))


# ---- media -------------------------------------------------------------------------------------------
def placeholder(text: str, title: str = "no preview") -> None:
    st.markdown(placeholder_svg(text, title=title), unsafe_allow_html=True)


@st.fragment(run_every=STUDIO.build_poll_s)
def _wait_for_builds(sr: StudioRun) -> None:
    """While previews or posters are built in the background: look again every few seconds, then redraw."""
    n = sr.on_demand.pending()
    if n == 0:
        st.rerun()
    st.caption(f"Preparing {n} preview{'s' * (n != 1)} or poster{'s' * (n != 1)} in the background…")


def player(sr: StudioRun, row: int | None, *, head: int | None = None, autoplay: bool = False) -> None:
    """The page's one video player (with sound) for clip ``row``, or a placeholder that says why not.

    A preview plays if there is one; else the source itself, from its clip window, when a browser plays
    it as it is; else a preview is built in the background and a placeholder says so meanwhile."""
    if row is None:
        st.info("Click ▶ under a poster to play that clip here.")
        return
    media = sr.media(row)
    caption = clip_caption(sr, row, head)
    target = media.mp4 if media.mp4 is not None else media.source
    if target is not None:
        window = media_fragment(media.start_s, media.end_s) if media.mp4 is None else ""
        if MEDIA.mounted:
            url = MEDIA.url(target, sr.media_roots, window)
            poster = MEDIA.url(media.poster, sr.media_roots) if media.poster is not None else None
            if url is not None:
                st.html(video_html(url, poster_url=poster, autoplay=autoplay, label=f"{media.clip_id} · {target.name}"))
            else:
                placeholder(f"refused: {target.name} is outside the catalog's media folders")
        else:  # Home.py run on its own (no media route): Streamlit reads the file and serves it
            try:
                if media.mp4 is None:
                    end = math.ceil(media.end_s) if media.end_s else None
                    st.video(str(target), start_time=int(media.start_s), end_time=end, autoplay=autoplay,
                             muted=autoplay)  # fmt: skip
                else:
                    st.video(str(target), autoplay=autoplay, muted=autoplay)
            except Exception as err:  # unreadable file: show why, never crash the page
                placeholder(f"cannot read the clip: {err}")
    else:
        poster = read_poster(media)
        if poster is not None:
            st.image(poster, width=320)
        else:
            placeholder(media.problem or "no preview", title="preparing" if media.pending else "no preview")
        if media.pending:
            st.info(f"Building a browser preview of this clip ({media.problem or 'in the background'}); "
                    "it plays here as soon as it is ready.")  # fmt: skip
        else:
            st.warning(media.problem or "This clip has no playable preview.")
    st.caption(caption)
    if media.pending:
        _wait_for_builds(sr)


def poster_grid(
    sr: StudioRun, rows, *, key: str, captions: list[str] | None = None, columns: int = STUDIO.grid_columns,
    notes: list[str] | None = None,
) -> None:  # fmt: skip
    """Poster frames of ``rows`` in a grid; ▶ under each puts that clip in the page's player.

    Under each: the clip's file name, and ``notes`` (e.g. a clip's human label) in full, where a long
    button caption would be cut. Missing previews and posters of these clips are built in the background."""
    rows = [int(r) for r in rows]
    if not rows:
        st.caption("No clips to show.")
        return
    ids = sr.clip_ids
    files = clip_files(sr, rows)
    pending = False
    for start in range(0, len(rows), columns):
        cols = st.columns(columns)
        for j, row in enumerate(rows[start : start + columns]):
            with cols[j]:
                media = sr.media(row)
                pending = pending or media.pending
                poster = read_poster(media)
                if poster is not None:
                    st.image(poster, width="stretch")
                elif media.pending:
                    placeholder(media.problem or BUILDING_POSTER, title="preparing")
                else:
                    placeholder(media.problem or "poster unreadable")
                label = captions[start + j] if captions else str(ids[row])
                file = files[start + j]
                st.button(f"▶ {label}", key=f"{key}-{row}", on_click=set_clip, args=(str(ids[row]),),
                          width="stretch", help=f"play {ids[row]}" + (f" ({file})" if file else ""))  # fmt: skip
                if file:
                    st.caption(file)
                if notes and notes[start + j]:
                    st.caption(notes[start + j])
    if pending:
        _wait_for_builds(sr)


def pager(n_pages: int, key: str) -> int:
    """A page number picker (0-based) that stays in range when the content changes."""
    if n_pages <= 1:
        return 0
    cur = st.session_state.get(key, 1)
    if not isinstance(cur, int) or not 1 <= cur <= n_pages:
        st.session_state[key] = 1
    return int(st.number_input(f"Page (of {n_pages})", min_value=1, max_value=n_pages, step=1, key=key)) - 1


def context() -> tuple[RunRef | None, StudioRun | None, int | None]:
    """(run ref, run, head) chosen in the sidebar by the entry script for this script run."""
    ctx = st.session_state.get("_studio")
    return ctx if ctx is not None else sidebar()


@st.cache_data(show_spinner="Writing the export…", max_entries=16)
def _export_cached(run_dir: str, version: int, fmt: str, head: int, snapshot: str | None, only_named: bool,
                   _store: LabelStore) -> tuple[bytes, dict]:  # fmt: skip
    return _export(_store, fmt, head=head, snapshot=snapshot, only_named=only_named)


def export_download(
    store: LabelStore, version: int, fmt: str, head: int, snapshot: str | None, only_named: bool
) -> tuple[bytes, dict]:
    """An export's bytes and provenance, made once per store version and options (not on every rerun)."""
    return _export_cached(str(store.run.dir), version, fmt, head, snapshot, only_named, store)


def json_bytes(obj: object) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, indent=2) + "\n").encode()
