"""Smoke test of an installed pairs-tui, run by .ci/run with the interpreter of a venv
that holds the wheel (not an editable install), from a directory outside the repository.

Standard library only, so it needs nothing the wheel does not bring: it runs
`pairs-tui --version` and `python -m pairs_tui --help`, then the cockpit on the demo feed
in a pseudo-terminal until the first chart is drawn, presses `q` and wants exit 0.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

BIN = Path(sys.executable).parent
# a drawn chart's time axis (placeholders carry their titles, never times)
FIRST_CHART = re.compile(rb"\d\d:\d\d:\d\d")
WITHIN = 30.0  # seconds to the first chart, generous for a cold start on a busy machine


def check(argv: list[str], want: str, env: dict[str, str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    print(f"$ {' '.join(argv)}\n{done.stdout.strip()[:300]}")
    if done.returncode != 0 or want not in done.stdout:
        sys.exit(f"smoke: {argv} exited {done.returncode}:\n{done.stdout}{done.stderr}")


def cockpit(workdir: Path, env: dict[str, str]) -> None:
    argv = [str(BIN / "pairs-tui"), "btcusdt", "ethusdt", "--demo", "--timeframe", "1s"]
    argv += ["--window", "2", "--lookback", "60", "--db", str(workdir / "demo.db")]
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    child = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
    )
    os.close(slave)
    seen = bytearray()

    def read_until(done, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    seen.extend(os.read(master, 65536))
                except OSError:  # the child has closed the terminal: it is exiting
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        child.wait(max(0.0, deadline - time.monotonic()))
                    break
        return done()

    try:
        if not read_until(lambda: FIRST_CHART.search(seen) is not None, WITHIN):
            tail = seen[-3000:].decode(errors="replace")
            sys.exit(f"smoke: no chart within {WITHIN:.0f} s:\n{tail}")
        print(f"$ {' '.join(argv)}\nfirst chart drawn; pressing q")
        os.write(master, b"q")
        if not read_until(lambda: child.poll() is not None, 15.0):
            sys.exit("smoke: the cockpit did not exit within 15 s of q")
        if child.returncode != 0:
            tail = seen[-3000:].decode(errors="replace")
            sys.exit(f"smoke: the cockpit exited {child.returncode}:\n{tail}")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(master)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAIRS_TUI")}
        env |= {f"XDG_{d.upper()}_HOME": str(workdir / d) for d in ("config", "data", "state")}
        env["TERM"] = "xterm-256color"
        os.chdir(workdir)
        check([str(BIN / "pairs-tui"), "--version"], "pairs-tui, version", env)
        check([sys.executable, "-m", "pairs_tui", "--help"], "Usage: pairs-tui", env)
        cockpit(workdir, env)
    print("smoke: the installed pairs-tui works")


if __name__ == "__main__":
    main()
