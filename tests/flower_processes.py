"""Flower for the tests: real processes, a SuperLink and SuperNodes on 127.0.0.1 (insecure,
loopback only, telemetry, update check and runtime dependency installation off), each started as
its own process group and always stopped by the test (:meth:`Federation.stop`), on free ports; and
:class:`InProcessGrid`, the base of the Grids that call the real ClientApp in the test's process.
Used by ``test_flower_async.py`` and ``test_flower.py``."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from flwr.serverapp import Grid

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Federation:
    """A SuperLink and SuperNodes as process groups this test starts and always stops."""

    def __init__(self, tmp: Path):
        self.tmp, self.procs, self.killed = tmp, [], []
        self.port = free_port()
        home = tmp / "flwr-home"
        home.mkdir()
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "local"\n[superlink.local]\n'
            f'address = "127.0.0.1:{self.port}"\ninsecure = true\n'
        )
        self.env = {
            **os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(ROOT), "FLWR_HOME": str(home),
            "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
            "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            # the simulation runtime starts a Ray of its own: ray.init() would otherwise join a
            # Ray another test worker started (and will shut down under it)
            "RAY_ADDRESS": "local",
        }  # fmt: skip

    def start(self, name: str, *args) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "w")
        proc = subprocess.Popen(
            [str(BIN / args[0]), *args[1:]], stdout=log, stderr=subprocess.STDOUT,
            env=self.env, start_new_session=True, cwd=self.tmp,
        )  # fmt: skip
        proc.name = name
        self.procs.append(proc)
        return proc

    def superlink(self, simulation: bool = False):
        """The SuperLink; with ``simulation`` its runs execute on Flower's simulation runtime
        (the SuperNodes are virtual, on Ray; ``flwr run --federation-config
        "num-supernodes=N"`` sets how many)."""
        self.start("superlink", "flower-superlink", "--insecure", "--host", "127.0.0.1",
                   "--port", str(self.port), "--disable-runtime-dependency-installation",
                   *(["--simulation"] if simulation else []))  # fmt: skip

        def listening():
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        self.wait_for(listening, "SuperLink listening", 60)

    def supernode(self, name: str, node_config: str) -> subprocess.Popen:
        """A SuperNode with ``--node-config node_config`` (e.g. ``"partition-id=0"``)."""
        return self.start(
            name, "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{self.port}",
            "--port", str(free_port()), "--node-config", node_config,
        )  # fmt: skip

    def flwr_run(
        self, app: Path, run_config: str | None = None, timeout: float = 120.0, federation=None
    ) -> str:
        """Submit the app in directory ``app`` with ``flwr run`` (``--run-config`` and
        ``--federation-config`` if given); its output. Fails with the output when ``flwr run``
        does."""
        args = [str(BIN / "flwr"), "run", str(app), "local"]
        if run_config is not None:
            args += ["--run-config", run_config]
        if federation is not None:
            args += ["--federation-config", federation]
        done = subprocess.run(
            args, env=self.env, cwd=self.tmp, timeout=timeout, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def wait_for(self, condition, what: str, timeout: float = 300.0) -> None:
        """Poll ``condition`` until true; fail (with the logs) after ``timeout`` seconds or when
        a process of the federation has died unasked."""
        deadline = time.monotonic() + timeout
        while not condition():
            died = [p.name for p in self.procs if p.poll() is not None and p not in self.killed]
            if died or time.monotonic() > deadline:
                why = f"{died} exited" if died else f"not within {timeout:g} s"
                raise AssertionError(f"no {what}: {why}\n" + self.logs())
            time.sleep(0.2)

    def node_id(self, proc) -> int:
        """A SuperNode's id, from its log."""
        path = self.tmp / f"{proc.name}.log"
        found = []
        self.wait_for(lambda: found.extend(re.findall(r"SuperNode ID: (\d+)", path.read_text()))
                      or found, f"id of {proc.name}", 120)  # fmt: skip
        return int(found[0])

    def kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL a SuperNode and everything it started (its ClientApp processes)."""
        import psutil

        group = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        for pid in group:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(10)
        self.killed.append(proc)

    def stop(self) -> None:
        import psutil

        pids = set()
        for proc in self.procs:
            try:
                pids |= {proc.pid} | {c.pid for c in psutil.Process(proc.pid).children(True)}
            except psutil.NoSuchProcess:
                pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            _, alive = psutil.wait_procs(
                [p for p in map(_process, pids) if p is not None], timeout=10
            )
            pids = {p.pid for p in alive}
            if not pids:
                break

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n" + (self.tmp / f"{p.name}.log").read_text()[-3000:] for p in self.procs
        )


def _process(pid):
    import psutil

    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


class InProcessGrid(Grid):
    """A Grid with no SuperLink behind it: a subclass delivers the pushed messages itself (to the
    real ClientApp, in process) from ``get_node_ids``, ``push_messages`` and ``pull_messages``."""

    def set_run(self, run):
        pass

    @property
    def run(self):
        raise NotImplementedError

    def create_message(self, *args, **kwargs):
        raise NotImplementedError
