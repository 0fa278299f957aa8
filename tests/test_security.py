"""Text from outside (the feed, the command line, paths) is data, never code or markup."""

from __future__ import annotations

import ast
import asyncio
import re
import subprocess

import pytest
from conftest import REPO, cli_env, pairs_tui_cmd, store_tape, wait_until
from test_ui import make_app

from pairs_tui.feed.demo import DemoServer, Faults
from pairs_tui.ui.commands import interpret

pytestmark = pytest.mark.server

EVIL = "\x1b[2J\x1b]0;owned\x07[bold]loud[/bold]\nfake log line"

SQL_CALLS = {"execute", "executemany", "executescript", "_scalar"}
SQL_SAFE_NAMES = {"_SERIES", "SCHEMA_VERSION", "_SERIES_ID"}  # module constants


def test_sql_is_constant_text_with_parameters():
    """Every statement store.py runs is a literal; an f-string may splice in only the
    module's own constants (or an int), never a value that came from outside."""
    tree = ast.parse((REPO / "pairs_tui" / "store.py").read_text())
    constants = {
        t.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for t in node.targets
        if isinstance(t, ast.Name)
    }
    statements = 0
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in SQL_CALLS or not node.args:
            continue
        sql = node.args[0]
        statements += 1
        if isinstance(sql, ast.Constant) or (isinstance(sql, ast.Name) and sql.id in constants):
            continue
        # _scalar passing its callers' statement on; the migrations' constant statements
        if isinstance(sql, ast.Name) and sql.id in {"sql", "statement"}:
            continue
        assert isinstance(sql, ast.JoinedStr), ast.unparse(sql)
        for part in sql.values:
            if isinstance(part, ast.FormattedValue):
                value = part.value
                is_int = (
                    isinstance(value, ast.Call)
                    and isinstance(value.func, ast.Name)
                    and value.func.id == "int"
                )
                named = isinstance(value, ast.Name) and value.id in SQL_SAFE_NAMES
                assert is_int or named, f"line {node.lineno}: {ast.unparse(sql)}"
    assert statements > 20


async def test_a_servers_text_reaches_the_terminal_as_text(tmp_path, isolated_home):
    """A close reason full of escape sequences, markup and a newline: `record` logs it
    escaped on one line."""
    db = tmp_path / "ticks.db"
    faults = Faults(close_every=40, close_reason=EVIL[:100])
    async with DemoServer(seed=1, rate=200, faults=faults) as server:
        proc = await asyncio.create_subprocess_exec(
            *pairs_tui_cmd(
                "record", "btcusdt", "--ws-url", server.url, "--no-backfill", "--db", str(db)
            ),
            env=cli_env(isolated_home),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        await wait_until(lambda: server.counters.closes >= 2, 20)
        proc.terminate()
        out, err = await asyncio.wait_for(proc.communicate(), 10)
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    assert "\x1b" not in text and "\x07" not in text
    disconnects = [line for line in text.splitlines() if "disconnected" in line]
    assert disconnects and all("\\x1b[2J\\x1b]0;owned\\x07[bold]" in d for d in disconnects)
    assert not any(line.startswith("fake log line") for line in text.splitlines())


def test_typed_text_is_echoed_escaped(isolated_home):
    done = subprocess.run(
        pairs_tui_cmd("record", "btc\x1b[31musdt"),
        env=cli_env(isolated_home),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "\x1b" not in done.stderr
    assert "invalid symbol btc\\x1b[31musdt" in done.stderr


def test_symbols_that_could_be_paths_are_refused():
    """Export file names are built from the symbols in view, so those must be plain."""
    for bad in ("../etc", "btc/usdt", "[bold]x", "btc\x1busdt"):
        [hit] = interpret(f"pair {bad} ethusdt", [])
        assert hit.action is None and "invalid symbol" in hit.help


async def test_markup_in_a_path_shows_literally_in_the_cockpit(db_path, tmp_path):
    await store_tape(db_path, 30)
    app = make_app(db_path, feed=False, window=5, lookback=20)
    target = tmp_path / "[bold]no such dir[/bold]" / "z.csv"
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await wait_until(lambda: app.snapshot is not None, 10)
        await app.run_action(f"export_to('analytics', {str(target)!r})")
        await wait_until(lambda: any("create it first" in n.message for n in app._notifications))
        await pilot.pause(0.3)
        toasts = "\n".join(str(t.render()) for t in app.screen.query("Toast"))
        assert re.search(r"\[bold\]no such dir\[/bold\]", toasts), toasts
        await pilot.press("q")


def test_watch_logs_a_servers_text_escaped():
    import io

    from pairs_tui.watch import _log

    err = io.StringIO()
    _log(err, f"disconnected (closed by server (1001 {EVIL}))")
    text = err.getvalue()
    assert "\x1b" not in text and "\x07" not in text and text.count("\n") == 1
    assert "[bold]loud[/bold]\\x0afake log line" in text
