"""``selavi app [RUN_DIR ...]``: start the Studio (Streamlit) on one or more run folders."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selavi_core.commands import add_store_argument

if TYPE_CHECKING:
    from selavi_core.studio.auth import StudioAuth

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8501
APP_PACKAGE = "selavi_app"  # the Studio's pages, shipped in the same distribution as selavi_core


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "app",
        help="the Studio in a browser: browse clusters, compare heads, the map, similar clips",
        description=(
            "Start the SeLaVi Studio (Streamlit) on the given run folders (written by `selavi train` or "
            "`selavi assign`). It listens on 127.0.0.1:8501 by default, headless, without usage statistics; "
            "open the printed address in a browser. Deep links: /clusters?run=NAME&head=3&cluster=12. "
            "Without --auth or --auth-header it runs in single-user mode and refuses a --host other machines "
            "can reach (unless --insecure)."
        ),
    )
    parser.add_argument(
        "run_dirs", metavar="RUN_DIR", nargs="*", help="run folders to browse (the first is shown first)"
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})")
    add_store_argument(parser, default="each RUN_DIR/labels.sqlite; one database holds the labels of many runs")
    add_auth_arguments(parser)
    parser.set_defaults(func=run)


def add_auth_arguments(parser: argparse.ArgumentParser) -> None:
    """Sign-in: a users file, or a trusted proxy's header; without either, single-user mode on 127.0.0.1."""
    who = parser.add_mutually_exclusive_group()
    who.add_argument(
        "--auth", metavar="USERS_TOML",
        help="sign in with the users of this file (`selavi users add NAME --file USERS_TOML`); "
        "every edit records the signed-in user",
    )  # fmt: skip
    who.add_argument(
        "--auth-header", metavar="HEADER",
        help="trust this header (e.g. X-Forwarded-User), set by an authenticating reverse proxy, as the user's "
        "name; only when nothing but the proxy can reach the Studio",
    )  # fmt: skip
    parser.add_argument(
        "--insecure", action="store_true",
        help="allow a non-loopback --host without --auth or --auth-header: anyone who reaches it edits as any name",
    )  # fmt: skip


def check_auth(args: argparse.Namespace) -> StudioAuth:
    """The sign-in settings of ``args``, checked before anything starts; RunError in one line otherwise."""
    from selavi_core.auth import AuthError, read_users
    from selavi_core.errors import RunError
    from selavi_core.studio.auth import StudioAuth, header_name_problem, is_loopback

    auth = StudioAuth(Path(args.auth) if args.auth else None, args.auth_header or None)
    if auth.users_file is not None:
        try:
            users = read_users(auth.users_file)
        except AuthError as err:
            raise RunError(f"--auth: {err}") from None
        if not users:
            raise RunError(f"--auth: {auth.users_file} has no users: add one with `selavi users add NAME --file "
                           f"{auth.users_file}`")  # fmt: skip
    if auth.header is not None and (problem := header_name_problem(auth.header)):
        raise RunError(f"--auth-header: {problem}")
    if auth.mode == "single-user" and not is_loopback(args.host) and not args.insecure:
        raise RunError(
            f"--host {args.host} would serve the Studio to other machines without sign-in: give --auth USERS_TOML "
            "or --auth-header HEADER (or --insecure to do it anyway)"
        )
    return auth


def auth_note(auth: StudioAuth, args: argparse.Namespace) -> str:
    """One line on stderr: who may edit, in the mode the Studio starts in."""
    if auth.mode == "users":
        return f"selavi app: sign-in with the users of {auth.users_file}"
    if auth.mode == "header":
        return (f"selavi app: the user is the {auth.header} header, trusted as set by the reverse proxy: let nothing "
                "but the proxy reach this address")  # fmt: skip
    from selavi_core.studio.auth import is_loopback

    if not is_loopback(args.host):
        return f"selavi app: WARNING: no sign-in on {args.host} (--insecure): anyone who reaches it edits as any name"
    return "selavi app: single-user mode (no sign-in; only this machine can connect)"


#: What ``streamlit run`` starts: Streamlit's ASGI app (Home.py) plus the media route (``selavi_app.SERVER``).
SERVER_SCRIPT = "studio_server.py"


def app_entry() -> Path:
    """The Studio's server script, ``studio_server.py`` of the installed ``selavi_app`` package (wheel or checkout).

    It serves ``Home.py`` (the pages) and the clip media route (``selavi_core.studio.serve``)."""
    from importlib import resources

    from selavi_core.errors import SelaviError

    try:
        entry = Path(str(resources.files(APP_PACKAGE) / SERVER_SCRIPT))
    except ModuleNotFoundError:
        raise SelaviError(
            f"the Studio's package {APP_PACKAGE} is not installed: install the project (`pip install .`)"
        ) from None
    if not entry.is_file():
        raise SelaviError(f"the Studio's entry {entry} is missing: reinstall the project (`pip install .`)")
    return entry


def streamlit_command(entry: Path, host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(entry),
        "--server.headless", "true", "--server.address", host, "--server.port", str(port),
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        # an uncaught error shows a generic message in the browser, never a traceback (the console has it)
        "--client.showErrorDetails", "none",
    ]  # fmt: skip


def check_store(store: str, runs: list[Any]) -> str:
    """The store's URL (a relative SQLite path made absolute: the Studio runs elsewhere), after opening it for
    every run, so that a wrong URL, a server that is down or a bad password fails here, in one line (the
    password redacted), instead of in every annotator's browser."""
    from selavi_core.labels.store import LabelStore, redact, store_url

    url = store_url(store)
    for run in runs:
        LabelStore.open(run, store=url).close()
    if not runs:  # no run yet: at least reach the database
        import sqlalchemy as sa

        from selavi_core.labels.errors import LabelError
        from selavi_core.labels.schema import make_engine

        try:
            engine = make_engine(url)
            try:
                with engine.connect():
                    pass
            finally:
                engine.dispose()
        except (sa.exc.SQLAlchemyError, OSError, ModuleNotFoundError) as err:
            raise LabelError(f"cannot open the label store {redact(url)}: {getattr(err, 'orig', err)}") from err
    return url


def run(args: argparse.Namespace) -> int:
    from selavi_core.errors import RunError
    from selavi_core.runs.run import Run
    from selavi_core.studio.runs import RUNS_ENV, STORE_ENV, runs_to_env

    runs = [Run(d) for d in args.run_dirs]  # fail fast, with the reason, on a folder that is not a run
    if not 0 < args.port < 65536:
        raise RunError(f"--port must be between 1 and 65535, not {args.port}")
    store = None if args.store is None else check_store(args.store, runs)
    auth = check_auth(args)
    entry = app_entry()
    env = dict(os.environ)
    env[RUNS_ENV] = runs_to_env(args.run_dirs)
    env.pop(STORE_ENV, None)  # --store alone decides (the URL travels in the environment, never on a command line)
    if store is not None:
        env[STORE_ENV] = store
    env.update(auth.to_env())
    env.setdefault("NUMBA_THREADING_LAYER", "workqueue")
    env.setdefault("SELAVI_NO_PROGRESS", "1")  # the pages show their own progress
    if not args.run_dirs:
        print("selavi app: no RUN_DIR given; the Studio will ask for one", file=sys.stderr)
    print(auth_note(auth, args), file=sys.stderr)
    shown = "localhost" if args.host in ("127.0.0.1", "0.0.0.0") else args.host
    print(f"SeLaVi Studio: http://{shown}:{args.port}  (Ctrl-C stops it)", flush=True)
    # cwd: the folder holding selavi_app (site-packages, or a checkout), which `python -m` puts first on sys.path
    proc = subprocess.Popen(streamlit_command(entry, args.host, args.port), env=env, cwd=entry.parent.parent)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
