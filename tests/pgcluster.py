"""A throwaway PostgreSQL server for the tests: `initdb` into a temporary directory as an
unprivileged user (root cannot run PostgreSQL), listening on 127.0.0.1 only, with
password authentication on TCP, stopped and removed at the end.

Each pytest worker starts its own (about a second) the first time a test asks for one;
each test gets a database of its own in it. With no PostgreSQL binaries the tests that
need one skip with one line saying why, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
SUPERUSER, PASSWORD = "pairs", "s3cret-pw"  # a password the tests check is never shown


def binaries() -> Path | None:
    for bin_dir in BIN_DIRS:
        if (bin_dir / "initdb").exists() and (bin_dir / "pg_ctl").exists():
            return bin_dir
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """A running server: `url(dbname)` names a database in it."""

    def __init__(self, bin_dir: Path, *, durable: bool = False) -> None:
        self.bin_dir = bin_dir
        self.durable = durable  # fsync on, as a server keeping a desk's data runs
        self.root = Path(tempfile.mkdtemp(prefix="pairs-tui-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            user = pwd.getpwnam("nobody")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}"]
            self._as.append("--clear-groups")
        self.root.chmod(0o700)
        self._databases = 0
        self._settings = ""

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, timeout=60)

    def start(self) -> Cluster:
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._as:
            user = pwd.getpwnam("nobody")
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        self._run(
            str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
            f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=trust",
            "--no-sync", "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        self._settings = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root}"
            " -c shared_buffers=32MB -c max_connections=60"
        )
        if not self.durable:  # the tests' data is thrown away: no need to wait for the disk
            self._settings += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-o", self._settings,
            "-l", str(self.root / "log"), "-w", "-t", "30", "start",
        )  # fmt: skip
        return self

    def outage(self, seconds: float) -> None:
        """Down for `seconds`, then up again, as through a crash or a failover: every
        connection is cut, and new ones are refused meanwhile."""
        pg_ctl = str(self.bin_dir / "pg_ctl")
        self._run(pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")
        time.sleep(seconds)
        self._run(
            pg_ctl, "-D", str(self.data), "-o", self._settings, "-l", str(self.root / "log"),
            "-w", "start",
        )  # fmt: skip

    def url(self, dbname: str = "postgres", *, password: bool = True) -> str:
        auth = f"{SUPERUSER}:{PASSWORD}" if password else SUPERUSER
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        """A fresh, empty database's URL."""
        self._databases += 1
        name = f"t{os.getpid()}_{self._databases}"
        subprocess.run(
            [str(self.bin_dir / "createdb"), "-h", str(self.root), "-p", str(self.port),
             "-U", SUPERUSER, name],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        return self.url(name)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
