"""A real terminal for end-to-end tests and benchmarks: a pty, a child process, a pyte screen.

`PtyTerminal` spawns a command as the session leader of a new pseudo-terminal of a given
size (TERM=xterm-256color), so the child sees a real tty: `isatty()` is true, the window
size comes from TIOCSWINSZ, and closing the master side hangs it up (SIGHUP) as a vanished
SSH session would. A reader thread feeds every byte the child writes into a `pyte.Screen`
and counts them; the screen answers the queries pyte understands (primary device
attributes `CSI c`, cursor position `CSI 6 n`) back through the pty, as a terminal would.
Textual does not block on any query (it asks about synchronized output and in-band resize
with DECRQM and carries on without an answer), but a program that waits for one is served.

    with PtyTerminal([sys.executable, "-m", "pairs_tui", ...], cols=100, rows=30) as term:
        term.wait_for("z-score", timeout=5)
        term.send("q")
        assert term.wait_exit(5) == 0

Leaving the `with` block kills whatever is still running in the child's process group and
reaps it, so no test or benchmark leaves a process behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal as signals
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType

import pyte

Predicate = Callable[[list[str]], bool]


class _AnsweringScreen(pyte.Screen):
    """A pyte screen whose replies to terminal queries go back to the child."""

    def __init__(self, columns: int, lines: int, reply: Callable[[str], None]) -> None:
        super().__init__(columns, lines)
        self._reply = reply

    def write_process_input(self, data: str) -> None:
        self._reply(data)


class PtyTerminal:
    """A command running in a pseudo-terminal of `cols` x `rows`, read through pyte."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cols: int = 80,
        rows: int = 24,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        keep_transcript: bool = True,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.argv = list(argv)
        self._preexec = preexec_fn  # run in the child too (resource limits, signals)
        self.cols, self.rows = cols, rows
        self._env = dict(os.environ if env is None else env)
        self._env["TERM"] = "xterm-256color"
        for var in ("COLUMNS", "LINES"):  # the size must come from the pty alone
            self._env.pop(var, None)
        self._cwd = cwd
        self._cond = threading.Condition()
        self._screen = _AnsweringScreen(cols, rows, self._answer)
        self._stream = pyte.ByteStream(self._screen)
        self._bytes = 0
        self._transcript: bytearray | None = bytearray() if keep_transcript else None
        self._fed_at = 0.0  # perf_counter of the last chunk fed to the screen
        self._eof = False
        self._reader_error: BaseException | None = None
        self._master: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1  # a pipe that stops the reader
        self.started_at = 0.0  # perf_counter just before the child was spawned

    # -- life cycle ------------------------------------------------------------------
    def start(self) -> PtyTerminal:
        master, slave = os.openpty()
        try:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", self.rows, self.cols, 0, 0))
            self.started_at = time.perf_counter()
            self._proc = subprocess.Popen(
                self.argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=self._env,
                cwd=self._cwd,
                start_new_session=True,  # its own session and process group ...
                preexec_fn=self._child_setup,  # ... whose controlling tty is the pty
                close_fds=True,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)  # only the child holds it now: its exit gives EOF on the master
        self._master = master
        self._wake_r, self._wake_w = os.pipe()
        self._reader = threading.Thread(target=self._read_loop, name="pty-reader", daemon=True)
        self._reader.start()
        return self

    def _child_setup(self) -> None:
        _take_controlling_tty()
        if self._preexec is not None:
            self._preexec()

    def __enter__(self) -> PtyTerminal:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Kill the child's whole process group if anything of it still runs, reap it,
        stop the reader and close the pty. Safe to call more than once."""
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signals.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
            # stragglers the child left in its group (it was the leader, pgid == pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signals.SIGKILL)
        self.hang_up()

    def hang_up(self) -> None:
        """Close the master side, as a terminal emulator or sshd does when it goes away:
        the kernel sends SIGHUP to the child, and its writes to the tty fail from now on.
        The reader thread closes it (it may be inside select on it); this waits for that."""
        if self._reader is not None and self._reader.is_alive():
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
            self._reader.join(timeout=5)
        self._close_master()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def _close_master(self) -> None:
        with self._cond:
            master, self._master = self._master, None
        if master is not None:
            os.close(master)

    # -- the child -------------------------------------------------------------------
    @property
    def pid(self) -> int:
        assert self._proc is not None, "start() first"
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """None while running; negative -N when killed by signal N (as subprocess)."""
        assert self._proc is not None, "start() first"
        return self._proc.poll()

    def send(self, keys: str | bytes) -> float:
        """Type `keys` (text or raw bytes); the perf_counter time of the write."""
        data = keys.encode() if isinstance(keys, str) else keys
        with self._cond:  # the reader may close the master meanwhile
            if self._master is None:
                raise RuntimeError("the terminal is closed")
            at = time.perf_counter()
            view = memoryview(data)
            while view:
                view = view[os.write(self._master, view) :]
        return at

    def signal(self, sig: int) -> None:
        """Send `sig` to the child process (not its group)."""
        assert self._proc is not None, "start() first"
        self._proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        """The child's exit code once it ends; TimeoutError (with the screen) if it does
        not end within `timeout` s. Its last output is on the screen when this returns."""
        assert self._proc is not None, "start() first"
        try:
            code = self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(
                f"{self.argv[:4]} still running after {timeout} s\n{self.dump()}"
            ) from None
        if self._reader is not None:  # the child is gone: EOF follows its last bytes
            self._reader.join(timeout=2)
        return code

    # -- the screen ------------------------------------------------------------------
    @property
    def bytes_read(self) -> int:
        """Bytes the child has written to the terminal so far."""
        with self._cond:
            return self._bytes

    def transcript(self) -> str:
        """Everything the child wrote, escape sequences included (decoded leniently):
        catches what flashed by between two looks at the screen, or came after it.
        Empty when made with keep_transcript=False."""
        with self._cond:
            raw = bytes(self._transcript or b"")
        return raw.decode("utf-8", errors="replace")

    @property
    def title(self) -> str:
        """The window title the child set (OSC 0/2), as pyte understood it."""
        with self._cond:
            return str(self._screen.title)

    def text(self) -> list[str]:
        """The screen now, one string per row (`rows` strings of `cols` cells)."""
        with self._cond:
            return list(self._screen.display)

    def dump(self) -> str:
        """The screen as one framed string, for assertion messages."""
        lines = self.text()
        rule = "+" + "-" * self.cols + "+"
        return "\n".join([rule, *(f"|{line}|" for line in lines), rule])

    def wait_for(
        self, what: str | Predicate, timeout: float, *, since: float | None = None
    ) -> float:
        """Wait until the screen contains `what` (a substring of one row) or the predicate
        on its rows is true. Returns the seconds from `since` (a `time.perf_counter()`
        value, such as `started_at` or what `send` returned; default: this call) until
        the output that made it true arrived. TimeoutError with the screen after
        `timeout` s, RuntimeError if the child ends first without it."""
        predicate: Predicate = _contains(what) if isinstance(what, str) else what
        start = time.perf_counter()
        since = start if since is None else since
        deadline = start + timeout
        with self._cond:
            while True:
                if predicate(list(self._screen.display)):
                    return max(start, self._fed_at) - since
                if self._reader_error is not None:
                    raise RuntimeError("the pty reader failed") from self._reader_error
                if self._eof:
                    raise RuntimeError(
                        f"the child ended (exit {self._proc and self._proc.poll()}) before "
                        f"{what!r} appeared\n{self._dump_locked()}"
                    )
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise TimeoutError(
                        f"{what!r} not on the screen after {timeout} s\n{self._dump_locked()}"
                    )
                self._cond.wait(left)

    def _dump_locked(self) -> str:
        rule = "+" + "-" * self.cols + "+"
        return "\n".join([rule, *(f"|{line}|" for line in self._screen.display), rule])

    # -- plumbing --------------------------------------------------------------------
    def _answer(self, data: str) -> None:
        """pyte's reply to a query (called by the reader thread, under the lock)."""
        if self._master is not None:
            with contextlib.suppress(OSError):
                os.write(self._master, data.encode())

    def _read_loop(self) -> None:
        master, wake = self._master, self._wake_r
        assert master is not None
        poller = select.poll()  # not select(): any fd number works
        for fd in (master, wake):
            poller.register(fd, select.POLLIN)
        try:
            while True:
                ready = {fd for fd, _ in poller.poll()}
                if wake in ready:
                    break
                try:
                    chunk = os.read(master, 65536)
                except OSError as exc:  # EIO: the child and all it started closed the tty
                    if exc.errno == errno.EIO:
                        break
                    raise
                if not chunk:
                    break
                with self._cond:
                    self._bytes += len(chunk)
                    if self._transcript is not None:
                        self._transcript += chunk
                    self._stream.feed(chunk)
                    self._fed_at = time.perf_counter()
                    self._cond.notify_all()
        except BaseException as exc:  # shown by wait_for, never lost in the thread
            self._reader_error = exc
        finally:
            self._close_master()
            with self._cond:
                self._eof = True
                self._cond.notify_all()


def _take_controlling_tty() -> None:
    """In the child, after setsid(): make stdin (the pty slave) its controlling tty."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _contains(needle: str) -> Predicate:
    def predicate(lines: list[str]) -> bool:
        return any(needle in line for line in lines)

    return predicate
