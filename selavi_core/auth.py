"""Sign-in for the Studio: the users file, password hashes, and a throttle on failed attempts.

The users file is TOML, one table a user, written by ``selavi users add NAME``::

    [users."ana"]
    password = "scrypt$16384$8$1$<salt, base64>$<key, base64>"

Passwords are hashed with scrypt (``hashlib.scrypt``, a random salt per password, the cost in the
hash so it can be raised later without invalidating old ones) and compared in constant time
(``hmac.compare_digest``). An unknown name costs the same scrypt as a known one, so timing does not
tell which names exist. The file is replaced atomically (``io.atomic_write``) and created with mode
0600: it holds no passwords, but its hashes are worth guessing at offline.

User names follow the annotator rule (``labels.semantics.annotator_name``): the signed-in name is
the annotator every edit records, so a name the label store would refuse is refused here first.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import secrets
import threading
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

from selavi_core.config import AUTH
from selavi_core.errors import SelaviError
from selavi_core.io import atomic_write
from selavi_core.labels.semantics import annotator_name, annotator_problem

SCHEME = "scrypt"
FILE_MODE = 0o600


class AuthError(SelaviError):
    """A refused sign-in or a bad users file; ``str(err)`` says which, never whether a name exists."""


# ------------------------------------------------------------------------------------------- hashes


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, salt: bytes | None = None, n: int = AUTH.scrypt_n, r: int = AUTH.scrypt_r,
                  p: int = AUTH.scrypt_p) -> str:  # fmt: skip
    """``scrypt$N$r$p$SALT$KEY`` (base64 salt and key) of ``password`` with a fresh random salt."""
    salt = secrets.token_bytes(AUTH.salt_bytes) if salt is None else salt
    key = _scrypt(password, salt, n, r, p, AUTH.key_bytes)
    return f"{SCHEME}${n}${r}${p}${_b64(salt)}${_b64(key)}"


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    maxmem = 128 * n * r * p + 4 * 1024 * 1024  # what this cost needs, plus room (OpenSSL's default is 32 MiB)
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=maxmem)


def _parse(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    """(n, r, p, salt, key) of a stored hash; ValueError when it is not one this module wrote."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        raise ValueError(f"not a {SCHEME} hash")
    n, r, p = (int(x) for x in parts[1:4])
    if n < 2 or n & (n - 1) or n > 2**20 or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise ValueError("scrypt parameters out of range")
    salt, key = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
    if not salt or len(key) < 16:
        raise ValueError("salt or key too short")
    return n, r, p, salt, key


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded`` (constant-time compare; False for a malformed hash)."""
    try:
        n, r, p, salt, key = _parse(encoded)
    except ValueError:
        return False
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(key)), key)


@functools.cache
def _dummy() -> str:
    """Checked against when the name is unknown, so an unknown name takes as long as a wrong password."""
    return hash_password("", salt=b"\x00" * AUTH.salt_bytes)


def password_problem(password: str) -> str | None:
    """Why ``password`` cannot be set (a sentence), or None."""
    if len(password) < AUTH.min_password_length:
        return f"a password needs at least {AUTH.min_password_length} characters"
    if any(c in password for c in "\r\n\x00"):
        return "a password cannot hold a line break or a NUL character"
    return None


# --------------------------------------------------------------------------------------- users file


def read_users(path: str | os.PathLike) -> dict[str, str]:
    """The users file's ``{name: hash}``; AuthError naming the file when it is missing or malformed."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AuthError(f"no users file {p}: create it with `selavi users add NAME --file {p}`") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise AuthError(f"cannot read the users file {p}: {err}") from None
    users = data.get("users", {})
    if not isinstance(users, dict):
        raise AuthError(f"users file {p}: `users` must be a table of [users.NAME] tables")
    out: dict[str, str] = {}
    for raw, entry in users.items():
        name = annotator_name(raw)
        if name is None or name != raw:
            raise AuthError(f"users file {p}: {raw!r} is not a user name ({annotator_problem(raw) or 'not trimmed'})")
        pw = entry.get("password") if isinstance(entry, dict) else None
        if not isinstance(pw, str):
            raise AuthError(f"users file {p}: user {name!r} has no password hash")
        try:
            _parse(pw)
        except ValueError as err:
            raise AuthError(f"users file {p}: user {name!r}: the password is no {SCHEME} hash ({err})") from None
        out[name] = pw
    return out


def _toml_string(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's for the characters names may hold)."""
    import json

    return json.dumps(text, ensure_ascii=False)


def users_toml(users: dict[str, str]) -> str:
    head = "# SeLaVi Studio users (`selavi users add NAME`): scrypt password hashes, never the passwords.\n"
    body = "".join(f"\n[users.{_toml_string(n)}]\npassword = {_toml_string(h)}\n" for n, h in sorted(users.items()))
    return head + body


def write_users(path: str | os.PathLike, users: dict[str, str]) -> Path:
    """Replace the users file atomically, mode 0600 (the temporary is created so: no moment of wider access)."""
    final = Path(path)
    data = users_toml(users).encode("utf-8")
    with atomic_write(final) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, FILE_MODE)  # whatever the umask
    return final


def _name(raw: str) -> str:
    name = annotator_name(raw)
    if name is None:
        raise AuthError(f"user name: {annotator_problem(raw)}")
    return name


def add_user(path: str | os.PathLike, name: str, password: str, *, replace: bool = False) -> str:
    """Add ``name`` (or set a new password with ``replace``) to the users file, creating it; the name as stored."""
    user = _name(name)
    problem = password_problem(password)
    if problem:
        raise AuthError(problem)
    users = read_users(path) if Path(path).exists() else {}
    if user in users and not replace:
        raise AuthError(f"user {user!r} exists in {path}: give --replace to set a new password")
    users[user] = hash_password(password)
    write_users(path, users)
    return user


def remove_user(path: str | os.PathLike, name: str) -> str:
    user = _name(name)
    users = read_users(path)
    if user not in users:
        raise AuthError(f"no user {user!r} in {path}")
    del users[user]
    write_users(path, users)
    return user


# ----------------------------------------------------------------------------------------- sign-in


class Throttle:
    """Failed sign-ins per name: after ``max_failures`` within ``window_s`` the name is locked until the
    oldest of them is ``window_s`` old. One per process (the Studio's sessions share it)."""

    def __init__(self, max_failures: int = AUTH.max_failures, window_s: float = AUTH.failure_window_s,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.max_failures, self.window_s, self.clock = max_failures, window_s, clock
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> list[float]:
        kept = [t for t in self._failures.get(key, []) if now - t < self.window_s]
        if kept:
            self._failures[key] = kept
        else:
            self._failures.pop(key, None)
        return kept

    def wait_s(self, name: str) -> float:
        """Seconds until ``name`` may try again (0 when it may now)."""
        with self._lock:
            now = self.clock()
            recent = self._recent(name.casefold(), now)
            if len(recent) < self.max_failures:
                return 0.0
            return max(0.0, recent[-self.max_failures] + self.window_s - now)

    def failed(self, name: str) -> None:
        with self._lock:
            key = name.casefold()
            self._failures.setdefault(key, []).append(self.clock())
            self._recent(key, self.clock())

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(name.casefold(), None)


THROTTLE = Throttle()
REFUSED = "wrong user name or password"


def check_password(users: dict[str, str], name: object, password: str, throttle: Throttle | None = THROTTLE) -> str:
    """The signed-in user's name, or AuthError: wrong name or password (one message for both), or locked."""
    user = annotator_name(name) or ""
    if throttle is not None and (wait := throttle.wait_s(user)) > 0:
        raise AuthError(f"too many failed sign-ins for this name: try again in {int(wait) + 1} s")
    encoded = users.get(user)
    ok = verify_password(password, encoded if encoded is not None else _dummy()) and encoded is not None
    if not ok:
        if throttle is not None:
            throttle.failed(user)
        raise AuthError(REFUSED)
    if throttle is not None:
        throttle.succeeded(user)
    return user
