"""A crash costs the user one line on the terminal; the whole story goes to a log file.

A trader who meets a bug needs to know that it crashed, that nothing was hidden (exit
status 1, so a script or supervisor knows too) and where the report is; a traceback
across the screen helps nobody but us. `--debug` shows it all instead.
"""

from __future__ import annotations

import os
import platform
import tempfile
import traceback
from datetime import UTC, datetime
from pathlib import Path

import platformdirs

from pairs_tui import __version__
from pairs_tui.model import describe, printable
from pairs_tui.store import hide_passwords


class Crashed(Exception):
    """An unhandled error that a front (the Textual app) has already caught and shut
    down after; `report` is what that front would have printed about it."""

    def __init__(self, error: BaseException, report: str = "") -> None:
        super().__init__(describe(error))
        self.error = error
        self.report = report


def log_dir() -> Path:
    """Where crash logs go: the user log directory (Linux: ~/.local/state/pairs-tui/log)."""
    return platformdirs.user_log_path("pairs-tui")


def write_crash_log(error: BaseException, argv: list[str], report: str = "") -> Path:
    """The traceback, the command and the versions, in a new file; the path is returned.
    If the log directory cannot be written the system's temporary directory is used."""
    now = datetime.now(UTC)
    lines = [
        f"pairs-tui {__version__} crashed at {now.isoformat(timespec='seconds')}",
        f"command: pairs-tui {' '.join(argv)}",
        f"python {platform.python_version()} on {platform.platform()}",
        "",
        *traceback.format_exception(error),
    ]
    if report:
        lines += ["", "as the screen reported it:", report]
    # a database URL on the command line or in an error keeps its password to itself
    text = hide_passwords("\n".join(line.rstrip("\n") for line in lines) + "\n")
    name = f"crash-{now:%Y%m%dT%H%M%SZ}-{os.getpid()}.log"
    for folder in (log_dir(), Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    raise OSError(f"no directory to write {name} into")


def crash_line(error: BaseException, log: Path | None) -> str:
    """The one line the user sees: what broke and where the details are."""
    what = hide_passwords(describe(error))
    where = f"the traceback is in {log}" if log else "no crash log could be written"
    return f"crashed: {printable(what)} ({where}; --debug shows it on screen)"


def report_crash(error: BaseException, argv: list[str], report: str = "") -> str:
    """Log the crash and return its line for stderr."""
    try:
        log: Path | None = write_crash_log(error, argv, report)
    except OSError:
        log = None
    return crash_line(error, log)
