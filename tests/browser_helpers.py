"""What the real-browser tests share: `selavi app` as a server process, Debian's Chromium, page settling.

See ../shared/docs/browser-testing.md: Playwright's pip wheel drives /usr/bin/chromium (never a
downloaded browser) with the launch arguments below; the server is the real `selavi app` command
on a free port, polled on ``/_stcore/health``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--mute-audio",
]  # fmt: skip
SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
TIMEOUT_MS = 60_000
START_TIMEOUT_S = 60


def settle(page) -> None:
    """Wait until Streamlit has finished the script run (its "running" status widget is gone)."""
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=TIMEOUT_MS)
    page.evaluate("() => document.querySelectorAll('section, [data-testid=\"stMain\"]').forEach(e => e.scrollTo(0, 0))")
    page.wait_for_timeout(500)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """`selavi app RUN_DIR --port P` as a user starts it, in its own process group (so it can be killed whole)."""

    def __init__(
        self, run_dir: Path, log_path: Path, port: int | None = None, *, selavi: list[str] | None = None,
        env: dict[str, str] | None = None, cwd: Path | None = None, args: list[str] | None = None,
    ):  # fmt: skip
        """``selavi``: the command that is `selavi` (default: this interpreter's ``-m selavi_core.cli``);
        ``env`` and ``cwd``: the server's environment and working folder (default: this process's);
        ``args``: more `selavi app` options (``--auth USERS_TOML``...)."""
        self.run_dir = Path(run_dir)
        self.log_path = Path(log_path)
        self.selavi = selavi or [sys.executable, "-m", "selavi_core.cli"]
        self.env, self.cwd, self.args = env, cwd, list(args or [])
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> str:
        """Start the server and wait for its health check; returns the base URL."""
        log = open(self.log_path, "a")  # noqa: SIM115 - the child keeps writing to it; closed after start
        cmd = [*self.selavi, "app", str(self.run_dir), "--port", str(self.port), *self.args]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=self.env,
                                     cwd=self.cwd)  # fmt: skip
        log.close()
        deadline = time.time() + START_TIMEOUT_S
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if urllib.request.urlopen(self.base + "/_stcore/health", timeout=2).read() == b"ok":
                    return self.base
            except OSError:
                time.sleep(0.3)
        self.kill()
        raise RuntimeError(f"selavi app did not answer on {self.base}: {self.log_path.read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL the whole process group (`selavi app` and its Streamlit child): no shutdown code runs."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=15)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not stopped within ~15 s."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        self.proc = None


def launch_chromium(playwright):
    """Debian's Chromium through Playwright, with the arguments that work as root on a closed network."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
