"""``selavi users``: the users file the Studio signs in against (``selavi app --auth USERS_TOML``)."""

from __future__ import annotations

import argparse
import sys

DEFAULT_FILE = "users.toml"

HELP = """\
Manage the users file of `selavi app --auth USERS_TOML`: user names (the annotator every edit records)
and scrypt hashes of their passwords, never the passwords. The file is written atomically, mode 0600.

actions:
  add NAME [--replace]   add a user (or set a new password); asks for the password twice,
                         or reads one line from stdin with --password-stdin
  list                   the user names, one a line
  remove NAME            remove a user (signed out at their next click)
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "users",
        help="users of the Studio's sign-in (selavi app --auth): add, list, remove",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=("add", "list", "remove"), metavar="ACTION", help="add | list | remove")
    p.add_argument("name", metavar="NAME", nargs="?", help="the user name (add, remove)")
    p.add_argument(
        "--file", default=DEFAULT_FILE, metavar="USERS_TOML", help=f"the users file (default {DEFAULT_FILE})"
    )
    p.add_argument("--password-stdin", action="store_true", help="add: read the password from stdin (one line)")
    p.add_argument("--replace", action="store_true", help="add: set a new password for an existing user")
    p.set_defaults(func=run)


def read_password(from_stdin: bool) -> str:
    from getpass import getpass

    from selavi_core.auth import AuthError

    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    first = getpass("Password: ")
    if getpass("Password again: ") != first:
        raise AuthError("the two passwords differ; nothing changed")
    return first


def run(args: argparse.Namespace) -> int:
    from selavi_core.auth import AuthError, add_user, read_users, remove_user

    if args.action in ("add", "remove") and not args.name:
        raise AuthError(f"usage: selavi users {args.action} NAME [--file USERS_TOML]")
    if args.action == "list":
        for name in sorted(read_users(args.file)):
            print(name)
    elif args.action == "add":
        user = add_user(args.file, args.name, read_password(args.password_stdin), replace=args.replace)
        print(f"{'password set for' if args.replace else 'added'} {user!r} in {args.file}")
    else:
        user = remove_user(args.file, args.name)
        print(f"removed {user!r} from {args.file}")
    return 0
