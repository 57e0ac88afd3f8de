"""A private PostgreSQL cluster for tests: initdb in a temp dir, own port and socket directory.

Like :mod:`tests.metadata.mariadb`, a real server because backends differ where it matters
(MLMD's INT properties are 32-bit on PostgreSQL too) and the outage test stops and restarts it.
Password authentication (SCRAM) is on, so the connection's password really is checked; it
reaches MLMD from ``$TFX_SERVING_METADATA_PASSWORD``, not from the URL.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.server_process import REPO_ROOT, free_port

USER, PASSWORD, DATABASE = "mlmd", "mlmd-pg-pw", "mlmd"
_OS_USER = "postgres"  # initdb and postgres refuse to run as root


def find_bin_dir() -> str | None:
    """The newest ``/usr/lib/postgresql/<major>/bin`` (Debian's layout), else PATH's."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0,
    )
    if found:
        return os.path.dirname(found[-1])
    pg_ctl = shutil.which("pg_ctl")
    return os.path.dirname(pg_ctl) if pg_ctl else None


def ensure_installed() -> str | None:
    """The server binaries' directory, installing the Debian package first when we are root."""
    if find_bin_dir() is None and os.geteuid() == 0:
        subprocess.run([str(REPO_ROOT / "scripts" / "ensure_postgres.sh")], check=True)
    return find_bin_dir()


class PostgreSQL:
    def __init__(self, bin_dir: str) -> None:
        self.bin_dir = bin_dir
        # Short path: the UNIX socket path is limited to ~107 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="pg-"))
        self.datadir = self.root / "data"
        self.port = free_port()
        self._log = self.root / "postgres.log"
        self._as_root = os.geteuid() == 0
        password_file = self.root / "pw"
        password_file.write_text(PASSWORD + "\n")
        if self._as_root:
            shutil.chown(self.root, _OS_USER, _OS_USER)
            shutil.chown(password_file, _OS_USER, _OS_USER)
        self._run(
            "initdb",
            f"--pgdata={self.datadir}",
            f"--username={USER}",
            f"--pwfile={password_file}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        password_file.unlink()

    @property
    def connection(self) -> str:
        return self.connection_for(DATABASE)

    def connection_for(self, database: str) -> str:
        """A database of its own per test (MLMD creates it on first connect). No password in
        the URL: it comes from ``environment``."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    @property
    def environment(self) -> dict[str, str]:
        from serving.metadata.config import PASSWORD_ENV

        return {PASSWORD_ENV: PASSWORD}

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess:
        command = [os.path.join(self.bin_dir, program), *args]
        if self._as_root:
            command = ["runuser", "-u", _OS_USER, "--", *command]
        return subprocess.run(command, check=True, capture_output=True, text=True)

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            # A throwaway test cluster: durability is not under test, speed is welcome.
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        try:
            self._run(
                "pg_ctl",
                f"--pgdata={self.datadir}",
                f"--log={self._log}",
                "-o",
                options,
                "--wait",
                "--timeout=60",
                "start",
            )
        except subprocess.CalledProcessError as exc:
            log = self._log.read_text()[-3000:] if self._log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {exc.stderr}\n{log}") from exc

    def stop(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            self._run("pg_ctl", f"--pgdata={self.datadir}", "--mode=fast", "--wait", "stop")

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
