"""`pairs-tui watch`: the session with alert rules and no screen; each firing is one
JSON line on stdout, for piping into a notifier. What happens to the feed goes to stderr,
so stdout stays machine-readable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from datetime import UTC, datetime
from typing import TextIO

from pairs_tui.alerts import event_record
from pairs_tui.model import printable
from pairs_tui.session import Session, SessionPlan


def _log(err: TextIO, text: str) -> None:
    err.write(f"{datetime.now(UTC):%H:%M:%S} {printable(text)}\n")
    err.flush()


def _silence(out: TextIO) -> None:
    """Point a closed pipe at /dev/null, so the exit's own flush stays quiet."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())


async def run_watch(
    plan: SessionPlan,
    *,
    every: float,
    duration: float | None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Evaluate the rules every `every` seconds until SIGINT/SIGTERM or the duration
    ends; returns how many times they fired."""
    out = out or sys.stdout  # looked up now: whoever runs us may have replaced them
    err = err or sys.stderr
    session = Session(plan, on_event=lambda text: _log(err, text))
    stop = asyncio.Event()
    session.on_failure = lambda failure: stop.set()  # said once stopped, below
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if duration is not None:
        loop.call_later(duration, stop.set)
    fired = 0
    try:
        await session.start()
        view, n = session.view, len(session.watchlist)
        rules = "; ".join(f"{r.rule} ({r.timeframe})" for r in session.rules())
        what = f"the watchlist ({n} symbols, {n * (n - 1) // 2} pairs)" if n else None
        _log(err, f"watching {what or f'{view.symbol_a}/{view.symbol_b}'}: {rules}")
        while not stop.is_set():
            try:
                snapshot = await session.refresh()
                ranking = await session.rank()
            except Exception as exc:  # a busy store: say so and try again next time
                _log(err, f"refresh failed: {exc}")
            else:
                events = snapshot.fired + (ranking.fired if ranking is not None else ())
                for event in events:
                    out.write(json.dumps(event_record(event)) + "\n")
                    fired += 1
                if events:
                    try:
                        out.flush()
                    except BrokenPipeError:  # the reader went away (`| head -1`): done
                        _silence(out)
                        break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await session.stop()
    _log(err, f"stopped: {fired} alert(s) fired")
    if session.failure is not None:  # nothing was recorded or evaluated any more
        raise session.failure
    return fired
