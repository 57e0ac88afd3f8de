"""A private MariaDB server for tests: own datadir, socket and port under a temp dir.

Real server-side behaviour matters here: MLMD's INT properties are 32-bit on MariaDB (SQLite
hides that), and the outage test stops and restarts the server under a running model server.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.server_process import REPO_ROOT, free_port

USER, PASSWORD, DATABASE = "mlmd", "mlmdpw", "mlmd"
_CANDIDATES = ("/usr/sbin/mariadbd", "/usr/sbin/mysqld")


def find_mariadbd() -> str | None:
    found = shutil.which("mariadbd") or shutil.which("mysqld")
    return found or next((p for p in _CANDIDATES if os.access(p, os.X_OK)), None)


def ensure_installed() -> str | None:
    """mariadbd's path, installing the Debian package first when we are root."""
    if find_mariadbd() is None and os.geteuid() == 0:
        subprocess.run([str(REPO_ROOT / "scripts" / "ensure_mariadb.sh")], check=True)
    return find_mariadbd()


class MariaDB:
    def __init__(self, binary: str) -> None:
        self.binary = binary
        # Short path: UNIX socket paths are limited to ~107 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="mdb-"))
        self.datadir = self.root / "data"
        self.socket = str(self.root / "sock")
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self._log = self.root / "mariadbd.log"
        self._as_root = os.geteuid() == 0
        install = [
            "mariadb-install-db",
            f"--datadir={self.datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]
        if self._as_root:
            shutil.chown(self.root, "mysql", "mysql")
            install.append("--user=mysql")
        subprocess.run(install, check=True, capture_output=True)

    @property
    def connection(self) -> str:
        return self.connection_for(DATABASE)

    def connection_for(self, database: str) -> str:
        """A database of its own per test (MLMD creates it on first connect)."""
        return f"mysql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        command = [
            self.binary,
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--pid-file={self.root / 'pid'}",
            "--skip-log-bin",
        ]
        if self._as_root:
            command.append("--user=mysql")
        with open(self._log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited:\n{self._log.read_text()[-3000:]}")
            if self.sql("SELECT 1", check=False).returncode == 0:
                return
            time.sleep(0.3)
        raise TimeoutError(f"mariadbd did not start:\n{self._log.read_text()[-3000:]}")

    def sql(self, statement: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["mariadb", "-uroot", f"--socket={self.socket}", "-e", statement],
            capture_output=True,
            text=True,
            check=check,
        )

    def create_user(self) -> None:
        # 'mlmd'@'%' alone loses to the anonymous ''@'localhost' user: add the local hosts too.
        statements = [f"CREATE DATABASE IF NOT EXISTS {DATABASE}"]
        for host in ("%", "localhost", "127.0.0.1"):
            statements += [
                f"CREATE USER IF NOT EXISTS '{USER}'@'{host}' IDENTIFIED BY '{PASSWORD}'",
                f"GRANT ALL ON *.* TO '{USER}'@'{host}'",
            ]
        self.sql("; ".join(statements))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)
        self.process = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
