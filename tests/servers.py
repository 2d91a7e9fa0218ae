"""Real servers for tests, started on loopback and stopped by their own process ids."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(
            f"PostgreSQL's {name} is not installed; `make test` installs the Debian "
            "package postgresql (apt-get install -y postgresql)"
        )
    return found[-1]


class PostgresServer:
    """A throwaway PostgreSQL cluster in ``root``, listening on 127.0.0.1 only, trust auth."""

    def __init__(self) -> None:
        # its own folder under /tmp: pytest's tmp folders are private to root, and the server
        # runs as the postgres user (initdb refuses root)
        self.root = Path(tempfile.mkdtemp(prefix="edgetune-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.port = free_port()
        self._user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        full = ["runuser", "-u", self._user, "--", *cmd] if self._user else list(cmd)
        return subprocess.run(full, capture_output=True, text=True, timeout=120, check=False)

    def start(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        if self._user:
            pw = pwd.getpwnam(self._user)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        proc = self._run(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")
        if proc.returncode:
            raise RuntimeError(f"initdb failed: {proc.stderr[-500:]}")
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
        proc = self._run(
            _pg_bin("pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            opts,
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
        )
        if proc.returncode:
            raise RuntimeError(f"pg_ctl start failed: {proc.stderr[-500:]}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def create_database(self, name: str) -> str:
        proc = self._run(
            _pg_bin("psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-c",
            f"CREATE DATABASE {name}",
        )
        if proc.returncode:
            raise RuntimeError(f"CREATE DATABASE failed: {proc.stderr[-500:]}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.data.exists():
            self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def wait_for_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


MARKER = "EDGETUNE_TEST_RAY_CLUSTER"


class RayCluster:
    """A Ray cluster of ``ray start`` nodes on 127.0.0.1, with token authentication.

    Every process of the cluster carries a marker in its environment (the nodes' daemons
    inherit it from ``ray start``); each node's processes are those with the marker that
    appeared when it started, and they are stopped by their own ids (with their children). So a
    test never touches another Ray on the machine, even one that starts at the same moment.
    """

    def __init__(self) -> None:
        import secrets

        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.nodes: list[list[int]] = []
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "RAY_USAGE_STATS_ENABLED": "0",
            MARKER: self.token,
        }

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _ray_pids(self) -> set[int]:
        import psutil

        pids = set()
        for p in psutil.process_iter():
            try:
                if p.pid != os.getpid() and p.environ().get(MARKER) == self.token:
                    pids.add(p.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return pids

    def add_node(self, *, cpus: int = 1, head: bool = False) -> int:
        """Start a node; returns its index."""
        ray = str(Path(sys.executable).with_name("ray"))
        before = self._ray_pids()
        common = [
            f"--num-cpus={cpus}",
            "--node-ip-address=127.0.0.1",
            "--disable-usage-stats",
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
        ]
        if head:
            cmd = [
                ray,
                "start",
                "--head",
                f"--port={self.port}",
                "--include-dashboard=false",
                *common,
            ]
        else:
            cmd = [ray, "start", f"--address={self.address}", *common]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=180)
        if proc.returncode:
            raise RuntimeError(f"ray start failed: {proc.stderr[-1500:]}")
        time.sleep(1.0)
        self.nodes.append(sorted(self._ray_pids() - before))
        return len(self.nodes) - 1

    def pids(self) -> list[int]:
        """Every process the nodes started (their workers are their descendants)."""
        return [pid for node in self.nodes for pid in node]

    def kill_node(self, index: int) -> None:
        import psutil

        procs = []
        for pid in self.nodes[index]:
            try:
                p = psutil.Process(pid)
                procs += [p, *p.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=10)

    def stop(self) -> None:
        for index in reversed(range(len(self.nodes))):
            self.kill_node(index)
