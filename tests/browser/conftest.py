"""One JupyterLab server and one headless Chromium for the browser tests (issue 12 §1).

The server runs on 127.0.0.1 with a random token and a free port, on a copy of ``notebooks/`` (so
JupyterLab's autosave never writes outputs into the repository), with its own settings, workspace
and runtime folders, and kernels in fast mode (``LORAKIT_FAST=1``). Chromium is the system
browser (Debian package ``chromium``) driven by Playwright; every request to a host other than
127.0.0.1/localhost is aborted and recorded in ``browser.blocked``, so a test that passes proves
the notebooks work offline. Without Chromium or Playwright the tests report themselves skipped
with the command that installs them.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
#: Where the tests write screenshots (override with LORAKIT_SCREENSHOTS).
SCREENSHOTS = Path(os.environ.get("LORAKIT_SCREENSHOTS", ROOT / "build" / "browser-screenshots"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",  # containers' /dev/shm is often 64 MB
]
INSTALL = "sudo apt-get install -y chromium"  # Debian; as root without sudo
SERVER_START_S = 180  # JupyterLab's first start on a loaded 2-core machine
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}

# JupyterLab user settings: no news or update checks (they would ask the internet), every cell
# kept in the DOM (no windowing) so each chart can be found, no autosave.
SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}


def chromium_path() -> str | None:
    """The system Chromium: ``$LORAKIT_CHROMIUM`` or ``chromium``/``chromium-browser`` on PATH."""
    explicit = os.environ.get("LORAKIT_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Lab:
    """A running JupyterLab server: ``url(path)`` gives an authenticated address."""

    def __init__(self, tmp: Path):
        self.root = tmp / "notebooks"
        shutil.copytree(NOTEBOOKS, self.root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        settings = tmp / "settings"
        for name, value in SETTINGS.items():
            (settings / name).parent.mkdir(parents=True, exist_ok=True)
            (settings / name).write_text(json.dumps(value))
        self.port, self.token = _free_port(), secrets.token_hex(16)
        env = dict(os.environ, LORAKIT_FAST="1", HF_HUB_OFFLINE="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime")):
            env[var] = str(tmp / sub)
        env["IPYTHONDIR"] = str(tmp / "ipython")
        cmd = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
            "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run JupyterLab commands
        ]
        if hasattr(os, "getuid") and os.getuid() == 0:
            cmd.append("--allow-root")
        self.log = (tmp / "server.log").open("w")
        self.process = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready(tmp / "server.log")

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}{sep}token={self.token}"

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(self.url(path), method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Stop every session's kernel (frees a notebook's memory before the next one)."""
        for session in self.api("api/sessions"):
            self.api(f"api/sessions/{session['id']}", method="DELETE")

    def _wait_ready(self, log: Path) -> None:
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"JupyterLab exited ({self.process.returncode}):\n{log.read_text()}"
                )
            try:
                self.api("api/status")
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"JupyterLab did not answer in {SERVER_START_S} s:\n{log.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()


class Browser:
    """Headless Chromium with every non-loopback request aborted and recorded in ``blocked``."""

    def __init__(self, executable: str):
        from playwright.sync_api import sync_playwright

        self.blocked: list[str] = []
        self._playwright = sync_playwright().start()
        self._browser = self._playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, timeout=60_000
        )
        self.context = self._browser.new_context(viewport={"width": 1400, "height": 1000})
        self.context.route("**/*", self._route)

    def _route(self, route) -> None:
        host = urlsplit(route.request.url).hostname or ""
        if route.request.url.startswith(("data:", "blob:")) or host in LOOPBACK:
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort("internetdisconnected")

    def close(self) -> None:
        self.context.close()
        self._browser.close()
        self._playwright.stop()


def _missing(reason: str) -> None:
    """Skip, or fail where ``LORAKIT_REQUIRE_BROWSER=1`` (CI, ``.ci/run``): CI must run them."""
    if os.environ.get("LORAKIT_REQUIRE_BROWSER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> str:
    path = chromium_path()
    if path is None:
        _missing(f"the browser tests need the system Chromium; install it with: {INSTALL}")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("the browser tests need Playwright; install it with: pip install -e '.[dev]'")
    return path


@pytest.fixture(scope="session")
def lab(chromium, tmp_path_factory):
    server = Lab(tmp_path_factory.mktemp("lab"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser(chromium):
    instance = Browser(chromium)
    yield instance
    instance.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
