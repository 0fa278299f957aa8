"""A crash is loud and short: exit status 1, the terminal given back, one line on stderr
naming the error and its crash log, the traceback in that log; `--debug` shows it all.

The errors are forced from outside the product, as a broken install or a bug would bring
them: a corrupt stylesheet in a copy of the package, and a test-only plugin
(`sitecustomize`, which Python imports at start) that makes one function raise.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_env, store_tape
from ptyterm import PtyTerminal

import pairs_tui

pytestmark = pytest.mark.pty

CRASH_LINE = re.compile(
    r"pairs-tui: crashed: (?P<error>.+) \(the traceback is in (?P<log>\S+\.log); "
    r"--debug shows it on screen\)"
)
LEAVE_ALT_SCREEN = "\x1b[?1049l"
VIEW_ARGS = ("--timeframe", "1s", "--window", "2", "--lookback", "60")


def package_copy(root: Path) -> Path:
    """A copy of the installed package, to break without touching the real one."""
    shutil.copytree(Path(pairs_tui.__file__).parent, root / "pairs_tui")
    return root


def plugin(root: Path, patch: str) -> Path:
    """A `sitecustomize` that applies `patch` (Python) when the interpreter starts."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "sitecustomize.py").write_text(patch)
    return root


def run_in_pty(argv: list[str], env: dict[str, str], keys: str = "") -> tuple[int, str]:
    """Run from the package's own directory's parent: not the repository, whose
    `pairs_tui` would come first on the path."""
    with PtyTerminal(argv, cols=100, rows=30, env=env, cwd=env["PYTHONPATH"]) as term:
        if keys:
            term.wait_for("BTCUSDT/ETHUSDT", timeout=15)
            term.wait_for(lambda lines: "trades/s" in lines[0], timeout=15)
            term.send(keys)
        code = term.wait_exit(15)
        return code, term.transcript()


def crash_of(output: str, *, screen: bool = True) -> tuple[str, Path]:
    """The one crash line and its log; nothing of the traceback on the terminal."""
    found = CRASH_LINE.search(output)
    assert found, output[-2000:]
    assert "Traceback" not in output
    if screen:  # the terminal was given back first, then the line was said
        assert output.rindex(LEAVE_ALT_SCREEN) < found.start()
    return found["error"], Path(found["log"])


def cockpit(db: Path, *flags: str) -> list[str]:
    argv = [sys.executable, "-m", "pairs_tui", *flags, "btcusdt", "ethusdt", "--demo"]
    return [*argv, "--db", str(db), *VIEW_ARGS]


def test_a_broken_stylesheet_exits_1_with_one_line_and_a_log(tmp_path, isolated_home):
    root = package_copy(tmp_path / "site")
    (root / "pairs_tui" / "ui" / "app.tcss").write_text("Screen { color: red;\n")
    env = cli_env(isolated_home) | {"PYTHONPATH": str(root)}

    code, transcript = run_in_pty(cockpit(tmp_path / "t.db"), env)

    assert code == 1
    error, log = crash_of(transcript)
    assert "forget a '}'" in error
    assert log.parent == isolated_home / "state" / "pairs-tui" / "log"
    text = log.read_text()
    assert "Traceback (most recent call last)" in text
    assert str(root / "pairs_tui" / "ui" / "app.tcss") in text  # Textual's own report
    assert "command: pairs-tui btcusdt ethusdt --demo" in text


def test_with_debug_textual_shows_the_crash_on_screen(tmp_path, isolated_home):
    root = package_copy(tmp_path / "site")
    (root / "pairs_tui" / "ui" / "app.tcss").unlink()  # what the broken wheel did
    env = cli_env(isolated_home) | {"PYTHONPATH": str(root)}

    code, transcript = run_in_pty(cockpit(tmp_path / "t.db", "--debug"), env)

    assert code == 1
    assert "unable to read CSS file" in transcript
    assert not CRASH_LINE.search(transcript)
    assert not (isolated_home / "state" / "pairs-tui").exists()


def test_a_bug_behind_a_key_exits_1_and_keeps_what_was_recorded(tmp_path, isolated_home):
    root = plugin(
        tmp_path / "plugin",
        "import pairs_tui.ui.help as help\n"
        "def boom(*args, **kwargs):\n"
        "    raise RuntimeError('forced by the test plugin')\n"
        "help.HelpScreen.__init__ = boom\n",
    )
    db = tmp_path / "t.db"
    env = cli_env(isolated_home) | {"PYTHONPATH": str(root)}

    code, transcript = run_in_pty(cockpit(db), env, keys="?")

    assert code == 1
    error, log = crash_of(transcript)
    assert error == "RuntimeError: forced by the test plugin"
    assert "in action_help" in log.read_text()
    with sqlite3.connect(db) as conn:  # the session was stopped: trades committed
        assert conn.execute("SELECT count(*) FROM trades").fetchone()[0] > 0


def test_a_bug_in_a_headless_command_exits_1_with_one_line(tmp_path, isolated_home):
    import asyncio

    db = tmp_path / "t.db"
    asyncio.run(store_tape(db, 30))
    root = plugin(
        tmp_path / "plugin",
        "import pairs_tui.export as export\n"
        "async def boom(*args, **kwargs):\n"
        "    raise KeyError('forced by the test plugin')\n"
        "export.run_export = boom\n",
    )
    env = cli_env(isolated_home) | {"PYTHONPATH": str(root)}
    argv = [sys.executable, "-m", "pairs_tui", "export", "btcusdt", "ethusdt"]
    argv += ["--what", "bars", "-o", str(tmp_path / "x.csv"), "--db", str(db)]

    done = subprocess.run(argv, env=env, cwd=root, capture_output=True, text=True, timeout=60)

    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    error, log = crash_of(lines[0], screen=False)
    assert error == "KeyError: 'forced by the test plugin'"
    assert "in boom" in log.read_text()

    debug = subprocess.run(
        [sys.executable, "-m", "pairs_tui", "--debug", *argv[3:]],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr


def test_an_unwritable_log_directory_still_gives_one_line(tmp_path, isolated_home):
    """No crash log can be written where it belongs: it goes to the temporary directory."""
    state = tmp_path / "state-is-a-file"
    state.write_text("")
    root = plugin(
        tmp_path / "plugin",
        "import pairs_tui.export as export\n"
        "async def boom(*args, **kwargs):\n"
        "    raise ValueError('forced')\n"
        "export.run_export = boom\n",
    )
    db = tmp_path / "t.db"
    db.write_bytes(b"")
    env = cli_env(isolated_home) | {"PYTHONPATH": str(root), "XDG_STATE_HOME": str(state)}
    env["TMPDIR"] = str(tmp_path)
    argv = [sys.executable, "-m", "pairs_tui", "export", "btcusdt", "ethusdt"]
    argv += ["--what", "bars", "-o", str(tmp_path / "x.csv"), "--db", str(db)]
    done = subprocess.run(argv, env=env, cwd=root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    found = CRASH_LINE.search(done.stderr)
    assert found and Path(found["log"]).parent == tmp_path, done.stderr


def test_a_crash_log_never_holds_a_database_password(isolated_home):
    """`--db postgresql://user:password@...` on the command line, or a URL in the error:
    the log and the line on the screen name the database without the password."""
    from pairs_tui.crash import report_crash

    url = "postgresql://desk:hunter2@db.internal:5432/ticks"
    line = report_crash(RuntimeError(f"lost {url}"), ["record", "btcusdt", "--db", url])
    log = Path(re.search(r"the traceback is in (\S+);", line)[1]).read_text()
    assert "hunter2" not in line + log
    assert "postgresql://desk@db.internal:5432/ticks" in line
    assert "--db postgresql://desk@db.internal:5432/ticks" in log
