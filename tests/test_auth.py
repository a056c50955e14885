"""Sign-in: password hashes, the users file, `selavi users`, `selavi app`'s host rule, and the Studio's
sign-in under AppTest (the real-browser cases are in test_browser_auth.py)."""

from __future__ import annotations

import io
import os
import stat
import tomllib
from pathlib import Path

import pytest

from selavi_core.auth import (
    AuthError,
    Throttle,
    add_user,
    check_password,
    hash_password,
    read_users,
    remove_user,
    verify_password,
    write_users,
)
from selavi_core.cli import main
from selavi_core.config import AUTH
from selavi_core.studio.auth import (
    AUTH_FILE_ENV,
    AUTH_HEADER_ENV,
    HEADER,
    SINGLE_USER,
    USERS,
    StudioAuth,
    auth_from_env,
    header_user,
    is_loopback,
)

FAST = {"n": 2**4}  # cheap scrypt for tests that do not time the real cost


# ------------------------------------------------------------------------------------------ hashes


def test_hash_is_salted_scrypt_and_verifies():
    a, b = hash_password("correct horse", **FAST), hash_password("correct horse", **FAST)
    assert a != b  # a fresh random salt each time
    scheme, n, r, p, salt, key = a.split("$")
    assert (scheme, int(n), int(r), int(p)) == ("scrypt", 16, AUTH.scrypt_r, AUTH.scrypt_p)
    assert "correct horse" not in a
    assert verify_password("correct horse", a) and verify_password("correct horse", b)
    assert not verify_password("correct horsE", a) and not verify_password("", a)
    # the default cost is the configured one
    assert hash_password("x" * 8).split("$")[1] == str(AUTH.scrypt_n)


@pytest.mark.parametrize(
    "bad", ["", "plain", "md5$1$2", "scrypt$15$8$1$AAAA$AAAA", "scrypt$16$8$1$!!$AAAA", "scrypt$16$8$1$AAAA$AAAA"]
)
def test_malformed_hashes_never_verify(bad):
    assert not verify_password("", bad) and not verify_password("x", bad)


# -------------------------------------------------------------------------------------- users file


def test_users_file_round_trip_mode_0600_and_names_by_the_annotator_rule(tmp_path):
    f = tmp_path / "users.toml"
    assert add_user(f, "  Ana   María ", "password1") == "Ana María"  # the annotator rule: spaces collapsed
    add_user(f, 'bob "the" \\ builder', "password2")
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    users = read_users(f)
    assert sorted(users) == ["Ana María", 'bob "the" \\ builder']
    assert tomllib.loads(f.read_text())["users"]["Ana María"]["password"] == users["Ana María"]
    assert check_password(users, "Ana María", "password1", throttle=None) == "Ana María"
    assert check_password(users, "Ana  María", "password1", throttle=None) == "Ana María"
    with pytest.raises(AuthError, match="exists"):
        add_user(f, "Ana María", "password3")
    add_user(f, "Ana María", "password3", replace=True)
    assert check_password(read_users(f), "Ana María", "password3", throttle=None) == "Ana María"
    assert remove_user(f, 'bob "the" \\ builder') == 'bob "the" \\ builder'
    assert sorted(read_users(f)) == ["Ana María"]
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["users.toml"]  # no temporary left behind


@pytest.mark.parametrize(
    ("name", "password", "says"),
    [
        ("", "password1", "annotator name is required"),
        ("a\x07b", "password1", "control character"),
        ("x" * 201, "password1", "longer than"),
        ("ana", "short", "at least 8 characters"),
        ("ana", "pass\nword1", "line break"),
    ],
)
def test_bad_names_and_passwords_are_refused(tmp_path, name, password, says):
    with pytest.raises(AuthError, match=says):
        add_user(tmp_path / "u.toml", name, password)
    assert not (tmp_path / "u.toml").exists()


def test_a_malformed_users_file_is_refused_naming_it(tmp_path):
    f = tmp_path / "u.toml"
    with pytest.raises(AuthError, match="no users file"):
        read_users(f)
    f.write_text("[users.ana]\npassword = 'plain'\n")
    with pytest.raises(AuthError, match="no scrypt hash"):
        read_users(f)
    f.write_text("[users\n")
    with pytest.raises(AuthError, match="cannot read the users file"):
        read_users(f)
    write_users(f, {})
    assert read_users(f) == {}


def test_wrong_name_and_wrong_password_get_one_message_and_a_lock():
    users = {"ana": hash_password("password1", **FAST)}
    now = [1000.0]
    throttle = Throttle(max_failures=3, window_s=60, clock=lambda: now[0])
    for name, pw in (("ana", "nope-nope"), ("nobody", "password1")):
        with pytest.raises(AuthError) as err:
            check_password(users, name, pw, throttle)
        assert str(err.value) == "wrong user name or password"
    with pytest.raises(AuthError):
        check_password(users, "ana", "wrong-again", throttle)
    with pytest.raises(AuthError):
        check_password(users, "ANA", "wrong-third", throttle)  # (the lock is per name, any case)
    with pytest.raises(AuthError, match="too many failed sign-ins"):
        check_password(users, "ana", "password1", throttle)  # even the right password, while locked
    now[0] += 61
    assert check_password(users, "ana", "password1", throttle) == "ana"


# ------------------------------------------------------------------------------------------ studio


def test_the_studio_mode_comes_from_the_environment_and_headers_name_the_user(tmp_path):
    assert auth_from_env({}).mode == SINGLE_USER
    a = auth_from_env({AUTH_FILE_ENV: str(tmp_path / "u.toml")})
    assert a.mode == USERS and a.to_env() == {AUTH_FILE_ENV: str(tmp_path / "u.toml"), AUTH_HEADER_ENV: ""}
    h = auth_from_env(StudioAuth(header="X-Forwarded-User").to_env())
    assert h.mode == HEADER and h.header == "X-Forwarded-User"
    assert header_user({"x-forwarded-user": " ana "}, "X-Forwarded-User") == "ana"
    assert header_user({"X-Other": "ana"}, "X-Forwarded-User") is None
    assert header_user({"X-Forwarded-User": "   "}, "X-Forwarded-User") is None
    assert header_user(None, "X-Forwarded-User") is None


@pytest.mark.parametrize(
    ("host", "local"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("127.0.0.2", True), ("0.0.0.0", False),
     ("::", False), ("192.168.1.5", False), ("example.org", False)],
)  # fmt: skip
def test_loopback_hosts(host, local):
    assert is_loopback(host) is local


# --------------------------------------------------------------------------------------------- CLI


def users_cli(monkeypatch, capsys, *argv: str, stdin: str = ""):
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    rc = main(["users", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_selavi_users_add_list_remove(tmp_path, monkeypatch, capsys):
    f = str(tmp_path / "users.toml")
    assert users_cli(monkeypatch, capsys, "add", "ana", "--file", f, "--password-stdin", stdin="s3cret-pw\n")[0] == 0
    assert users_cli(monkeypatch, capsys, "add", "bob", "--file", f, "--password-stdin", stdin="other-pw\n")[0] == 0
    rc, out, _ = users_cli(monkeypatch, capsys, "list", "--file", f)
    assert (rc, out) == (0, "ana\nbob\n")
    assert check_password(read_users(f), "ana", "s3cret-pw", throttle=None) == "ana"
    assert "s3cret-pw" not in Path(f).read_text()
    rc, _, err = users_cli(monkeypatch, capsys, "add", "ana", "--file", f, "--password-stdin", stdin="x\n")
    assert rc == 2 and err.count("\n") == 1 and "at least 8 characters" in err
    rc, _, err = users_cli(monkeypatch, capsys, "add", "ana", "--file", f, "--password-stdin", stdin="again-pw\n")
    assert rc == 2 and "exists" in err
    assert users_cli(monkeypatch, capsys, "remove", "bob", "--file", f)[0] == 0
    assert users_cli(monkeypatch, capsys, "list", "--file", f)[1] == "ana\n"
    rc, _, err = users_cli(monkeypatch, capsys, "remove", "bob", "--file", f)
    assert rc == 2 and "no user 'bob'" in err


def test_selavi_users_add_asks_twice(tmp_path, monkeypatch, capsys):
    f = str(tmp_path / "users.toml")
    answers = iter(["first-pw1", "other-pw2"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    rc, _, err = users_cli(monkeypatch, capsys, "add", "ana", "--file", f)
    assert rc == 2 and "differ" in err and not os.path.exists(f)
    answers = iter(["same-pw12", "same-pw12"])
    assert users_cli(monkeypatch, capsys, "add", "ana", "--file", f)[0] == 0
    assert check_password(read_users(f), "ana", "same-pw12", throttle=None) == "ana"


@pytest.fixture()
def no_streamlit(monkeypatch):
    """`selavi app` up to the point where it would start Streamlit: the command it would run, and its env."""
    import selavi_core.commands.app as app_cmd

    started = {}

    class FakePopen:
        def __init__(self, cmd, env, cwd):
            started.update(cmd=cmd, env=env)

        def wait(self):
            return 0

    monkeypatch.setattr(app_cmd.subprocess, "Popen", FakePopen)
    return started


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.org"])
def test_selavi_app_refuses_a_reachable_host_without_sign_in(host, no_streamlit, capsys):
    assert main(["app", "--host", host]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"selavi app: error: --host {host} would serve") and "--auth" in err
    assert not no_streamlit


def test_selavi_app_passes_the_sign_in_settings_in_the_environment(tmp_path, no_streamlit, capsys, monkeypatch):
    monkeypatch.setenv(AUTH_HEADER_ENV, "X-Leftover")  # a variable from the caller's shell does not leak through
    assert main(["app", "--host", "0.0.0.0", "--insecure"]) == 0
    assert "WARNING: no sign-in on 0.0.0.0" in capsys.readouterr().err
    assert (no_streamlit["env"][AUTH_FILE_ENV], no_streamlit["env"][AUTH_HEADER_ENV]) == ("", "")
    assert main(["app"]) == 0
    assert "single-user mode" in capsys.readouterr().err

    f = tmp_path / "users.toml"
    assert main(["app", "--host", "0.0.0.0", "--auth", str(f)]) == 2
    assert "no users file" in capsys.readouterr().err
    add_user(f, "ana", "password1")
    assert main(["app", "--host", "0.0.0.0", "--auth", str(f)]) == 0
    env = no_streamlit["env"]
    assert (env[AUTH_FILE_ENV], env[AUTH_HEADER_ENV]) == (str(f.resolve()), "")
    assert not any("scrypt" in v for v in env.values()) and not any("scrypt" in a for a in no_streamlit["cmd"])

    assert main(["app", "--host", "0.0.0.0", "--auth-header", "X-Forwarded-User"]) == 0
    assert (no_streamlit["env"][AUTH_FILE_ENV], no_streamlit["env"][AUTH_HEADER_ENV]) == ("", "X-Forwarded-User")
    assert main(["app", "--auth-header", "X Bad"]) == 2
    assert "not an HTTP header name" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: one or the other
        main(["app", "--auth", str(f), "--auth-header", "X-Forwarded-User"])
