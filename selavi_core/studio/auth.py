"""Who the Studio's user is: a users file, a trusted proxy header, or nobody (single-user mode).

``selavi app`` passes its sign-in settings to the Streamlit process in the environment (like the run
list, ``runs.RUNS_ENV``): the *path* of the users file (``--auth``) or the *name* of the header a
reverse proxy sets (``--auth-header``); never a hash, never in a URL. The pages ask
``auth_from_env()`` which mode they are in and draw accordingly:

- ``users``: a sign-in form before any page; the name checked against the file
  (``selavi_core.auth.check_password``) is kept in the server-side session; it is re-checked against
  the file on every run, so ``selavi users remove`` signs a user out at their next click.
- ``header``: the user is the header's value on the browser's websocket request (what the proxy
  authenticated); without it the Studio refuses to show anything.
- ``single-user``: no sign-in, bound to the loopback address by ``selavi app``; the annotator is the
  name typed in the sidebar.

In no mode does a URL parameter say who edits: ``?annotator=`` is ignored.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from selavi_core.auth import AuthError, check_password, read_users
from selavi_core.labels.semantics import annotator_name

AUTH_FILE_ENV = "SELAVI_AUTH_FILE"
AUTH_HEADER_ENV = "SELAVI_AUTH_HEADER"

USERS, HEADER, SINGLE_USER = "users", "header", "single-user"


@dataclass(frozen=True)
class StudioAuth:
    users_file: Path | None = None
    header: str | None = None

    @property
    def mode(self) -> str:
        if self.users_file is not None:
            return USERS
        return HEADER if self.header else SINGLE_USER

    def to_env(self) -> dict[str, str]:
        """The variables ``selavi app`` sets for the Streamlit process (empty ones switch a mode off)."""
        return {
            AUTH_FILE_ENV: str(self.users_file.expanduser().resolve()) if self.users_file is not None else "",
            AUTH_HEADER_ENV: self.header or "",
        }

    def sign_in(self, name: object, password: str) -> str:
        """The user's name when ``password`` is theirs in the users file; AuthError otherwise."""
        if self.users_file is None:
            raise AuthError("this Studio has no users file")
        return check_password(read_users(self.users_file), name, password)

    def still_valid(self, user: str) -> bool:
        """Whether a signed-in ``user`` is still in the users file (removed users are signed out)."""
        if self.users_file is None:
            return False
        try:
            return user in read_users(self.users_file)
        except AuthError:
            return False

    def header_user(self, headers: Mapping[str, str] | None) -> str | None:
        """The user named by the proxy's header in ``headers`` (any case), or None when absent or no name."""
        return header_user(headers, self.header) if self.header else None


def auth_from_env(environ: Mapping[str, str] | None = None) -> StudioAuth:
    env = os.environ if environ is None else environ
    users, header = env.get(AUTH_FILE_ENV, "").strip(), env.get(AUTH_HEADER_ENV, "").strip()
    return StudioAuth(Path(users) if users else None, header or None)


def header_user(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    want = name.strip().lower()
    values = [v for k, v in headers.items() if k.lower() == want]
    if len(values) != 1:  # absent, or sent twice (which one would the proxy have meant?)
        return None
    return annotator_name(values[0])


HEADER_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def header_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an HTTP header name (RFC 9110 token), or None."""
    if not name or any(c not in HEADER_TOKEN for c in name):
        return f"{name!r} is not an HTTP header name (letters, digits and -, e.g. X-Forwarded-User)"
    return None


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` reaches this machine only (127.0.0.0/8, ::1, localhost)."""
    h = host.strip().strip("[]")
    if h.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface
