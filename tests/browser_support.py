"""Helpers of the JupyterLab end-to-end test: a bounded JupyterLab server, headless Chromium, waits.

Everything here is real: a ``jupyter lab`` process on a loopback port with a random token, an
ipykernel started by it, Debian's ``chromium`` driven by Playwright for Python (never a downloaded
browser). Every wait has a limit and says what it was waiting for when it runs out.

The server runs hermetically: its configuration, data, runtime, settings and workspace folders are
inside the test's temporary folder, so a person's own Jupyter set-up neither changes the test nor
is changed by it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

# Debian's package (scripts/install_system_packages.sh --browser); MUSICRNN_CHROMIUM names another.
CHROMIUM = Path(os.environ.get("MUSICRNN_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]

# JupyterLab user settings for a quiet, deterministic page: no news or update pop-ups, every cell
# kept in the page (no virtual scrolling) so that the test sees all of them.
LAB_SETTINGS: dict[str, dict[str, Any]] = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def chromium_executable() -> Path | None:
    """Debian's Chromium (or ``$MUSICRNN_CHROMIUM``) when it is installed and executable, else
    ``None``."""
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GiveUp(RuntimeError):
    """Raised by a condition of :func:`wait_for` to stop waiting at once (the wait cannot end)."""


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.25
) -> Any:
    """Call ``condition`` until it returns something truthy (returned); ``TimeoutError`` after
    ``timeout`` seconds, naming ``what`` was awaited and the last exception seen, if any.

    Other exceptions are retried until the deadline, except :class:`GiveUp`, which ends the wait.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except GiveUp:
            raise
        except Exception as exc:  # noqa: BLE001 - retried until the deadline, then reported
            last_error = exc
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"gave up after {timeout:g} s waiting for {what}{extra}")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# The notebook under test
# ---------------------------------------------------------------------------------------------


def parameterized_copy(
    source: Path, target: Path, parameters: dict[str, Any], kernel_name: str = "python3"
) -> Path:
    """Write a copy of ``source`` at ``target`` with papermill's injected-parameters cell after the
    ``parameters`` cell, exactly as ``papermill`` would run it -- but without executing anything.

    The copy names ``kernel_name`` in its metadata so that JupyterLab starts that kernel without
    asking; outputs are cleared.
    """
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = load_notebook_node(str(source))  # as papermill reads it: every cell has its tags list
    nb.metadata["kernelspec"] = {
        "name": kernel_name, "display_name": "Python 3 (ipykernel)", "language": "python",
    }
    nb.metadata.setdefault("language_info", {"name": "python"})
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb = parameterize_notebook(nb, parameters, kernel_name=kernel_name, language="python")
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    return target


def count_code_cells(path: Path) -> int:
    """How many code cells the notebook at ``path`` has (each must show ``[n]:`` once run)."""
    import nbformat

    return sum(c.cell_type == "code" for c in nbformat.read(path, as_version=4).cells)


# ---------------------------------------------------------------------------------------------
# JupyterLab
# ---------------------------------------------------------------------------------------------


@dataclass
class LabServer:
    """A running ``jupyter lab`` process (see :func:`start_lab`)."""

    process: subprocess.Popen
    port: int
    token: str
    root_dir: Path
    log_path: Path
    _log_handle: Any = field(repr=False, default=None)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def url(self, path: str) -> str:
        """The page ``path`` (for example ``lab/tree/x.ipynb``) with the token for the browser."""
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}{path}{sep}token={self.token}"

    def api(self, path: str, method: str = "GET", timeout: float = 5.0) -> Any:
        """Call the REST API with the token; returns the decoded JSON (or ``None``)."""
        request = urllib.request.Request(
            self.base_url + path.lstrip("/"), method=method,
            headers={"Authorization": f"token {self.token}"},
            data=b"" if method in ("POST", "PUT") else None,
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read()
        return json.loads(payload) if payload else None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        """Shut the kernels and the server down: the API's shutdown, then SIGTERM, then SIGKILL."""
        if self.process.poll() is None:
            try:
                for kernel in self.api("api/kernels", timeout=3.0) or []:
                    self.api(f"api/kernels/{kernel['id']}", method="DELETE", timeout=5.0)
                self.api("api/shutdown", method="POST", timeout=3.0)
            except (OSError, urllib.error.URLError, ValueError):
                pass
            try:
                self.process.wait(timeout=timeout / 2)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                try:
                    self.process.wait(timeout=timeout / 2)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=5)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None


def start_lab(root_dir: Path, state_dir: Path, timeout: float = 60.0) -> LabServer:
    """Start JupyterLab serving ``root_dir`` on a free loopback port with a random token.

    Jupyter's configuration, data, runtime, settings and workspace folders go under ``state_dir``.
    Returns once ``/api/status`` answers; raises ``RuntimeError`` (with the server's log) when the
    process exits early or does not answer within ``timeout`` seconds (the process is stopped).
    """
    port, token = free_port(), secrets.token_hex(24)
    env = dict(os.environ)
    # ipykernel picks the inline matplotlib backend only when MPLBACKEND is unset -- as for a
    # person starting `make lab`; the test suite's Agg default must not leak into the kernel.
    env.pop("MPLBACKEND", None)
    for var, sub in (
        ("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
        ("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTERLAB_SETTINGS_DIR", "lab-settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "lab-workspaces"), ("IPYTHONDIR", "ipython"),
    ):
        env[var] = str(state_dir / sub)
        (state_dir / sub).mkdir(parents=True, exist_ok=True)
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    env["JUPYTER_PREFER_ENV_PATH"] = "1"  # the venv's kernel, never a user's `python3` kernelspec
    for rel, settings in LAB_SETTINGS.items():
        path = state_dir / "lab-settings" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root_dir}",
        "--ServerApp.terminals_enabled=False", "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and CI run as root
        command.append("--allow-root")
    log_path = state_dir / "jupyterlab.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed by LabServer.stop
    process = subprocess.Popen(
        command, cwd=root_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    server = LabServer(process, port, token, root_dir, log_path, log)

    def answering() -> bool:
        if process.poll() is not None:
            raise GiveUp(f"jupyter lab exited with code {process.returncode}")
        return "started" in (server.api("api/status", timeout=2.0) or {})

    try:
        wait_for(answering, timeout, "JupyterLab to answer /api/status", interval=0.5)
    except (TimeoutError, RuntimeError) as exc:
        server.stop()
        raise RuntimeError(f"{exc}; its log ends with:\n{server.log_tail()}") from exc
    return server


# ---------------------------------------------------------------------------------------------
# Chromium through Playwright
# ---------------------------------------------------------------------------------------------


def launch_chromium(playwright: Any, executable: Path | None = None) -> Any:
    """Debian's Chromium, headless, with no network beyond the page and no first-run chores."""
    return playwright.chromium.launch(
        executable_path=str(executable or CHROMIUM), headless=True, args=CHROMIUM_ARGS,
        timeout=60_000,
    )


# JavaScript run in the page ------------------------------------------------------------------

# The media shown inside one element: each <img> and <audio> with its source and a SHA-256 of
# the bytes behind it (data:, blob: and http: sources alike), so "changed" means changed content.
MEDIA_JS = """
async (root) => {
  const digest = async (src) => {
    if (!src) return null;
    try {
      const bytes = await (await fetch(src)).arrayBuffer();
      const hash = await crypto.subtle.digest('SHA-256', bytes);
      return Array.from(new Uint8Array(hash)).map(b => b.toString(16).padStart(2, '0')).join('');
    } catch (e) { return 'unreadable:' + e; }
  };
  const sources = (el) => {
    const src = el.currentSrc || el.getAttribute('src') || '';
    if (src) return src;
    const s = el.querySelector('source');
    return s ? (s.src || s.getAttribute('src') || '') : '';
  };
  const out = {images: [], audios: []};
  for (const img of root.querySelectorAll('img')) {
    const src = sources(img);
    out.images.push({src: src.slice(0, 80), length: src.length, sha256: await digest(src),
                     width: img.naturalWidth, height: img.naturalHeight});
  }
  for (const audio of root.querySelectorAll('audio')) {
    const src = sources(audio);
    out.audios.push({src: src.slice(0, 80), length: src.length, sha256: await digest(src),
                     controls: audio.controls});
  }
  return out;
}
"""


def media_digest(media: dict[str, list[dict[str, Any]]]) -> tuple[tuple, tuple]:
    """``(image digests, audio digests)`` of :data:`MEDIA_JS`'s answer, for comparisons."""
    return (
        tuple(m["sha256"] for m in media["images"]),
        tuple(m["sha256"] for m in media["audios"]),
    )


def copy_artifacts(files: list[Path], target: Path) -> None:
    """Copy ``files`` (those that exist) into ``target`` for people to look at after a run."""
    target.mkdir(parents=True, exist_ok=True)
    for f in files:
        if f.is_file():
            shutil.copy2(f, target / f.name)


PROMPT_NUMBER = re.compile(r"\[\s*(\d+)\s*\]")
ERROR_LINE = re.compile(r"(?m)^\w*(?:Error|Exception)\b.*$")  # "MusicRNNError: the run ..."


# ---------------------------------------------------------------------------------------------
# JupyterLab pages, as a person uses them
# ---------------------------------------------------------------------------------------------

# Text that must never be in the page: the widget manager's failures, a Python traceback, and
# the project's own "no model here" errors.
PAGE_PROBLEMS = (
    "Error displaying widget", "model not found", "could not be displayed",
    "Traceback (most recent call last)", "MusicRNNError", "No such file or directory",
    "no run directory at", "train a model into it first",  # musicrnn.model.load_run's messages
    "Cannot generate",  # musicrnn.widgets.GeneratorPanel's status line when generation fails
)


def open_notebook(
    page: Any, server: LabServer, relative_path: str, timeout: float = 60.0
) -> dict[str, float]:
    """Open ``relative_path`` in JupyterLab and wait (``timeout`` seconds in all) until its
    kernel has started and is idle. Returns the seconds until the page loaded, the notebook's
    cells showed and the kernel was ready."""
    started = time.monotonic()
    deadline = started + timeout
    timings: dict[str, float] = {}

    def left_ms() -> float:
        return max(1.0, deadline - time.monotonic()) * 1000

    def lap(name: str) -> None:
        timings[name] = round(time.monotonic() - started, 1)

    page.goto(server.url(f"lab/tree/{relative_path}"), timeout=left_ms())
    lap("page_loaded")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=left_ms())
    lap("cells_shown")
    # Before its session connects the toolbar says "No Kernel" next to an "idle" indicator, and
    # it passes through initializing/connecting/unknown: wait for a named kernel idle for 1 s.
    since: dict[str, float] = {}

    def ready() -> bool:
        name = page.evaluate(
            "() => { const e = document.querySelector('.jp-Toolbar-kernelName');"
            " return e ? e.textContent.trim() : ''; }"
        )
        if name and name != "No Kernel" and kernel_status(page) == "idle":
            return time.monotonic() - since.setdefault("idle", time.monotonic()) >= 1.0
        since.clear()
        return False

    wait_for(ready, left_ms() / 1000, "the notebook's kernel to start")
    lap("kernel_ready")
    return timings


def kernel_status(page: Any) -> str | None:
    """The notebook toolbar's kernel indicator: ``idle``, ``busy``, ... (None before one)."""
    return page.evaluate(
        "() => { const e = document.querySelector('.jp-Notebook-ExecutionIndicator');"
        " return e ? e.dataset.status : null; }"
    )


def wait_kernel_settled(page: Any, quiet: float = 1.0, timeout: float = 30.0) -> None:
    """Wait until the kernel has been idle for ``quiet`` seconds in a row (widget messages sent
    and handled), as a person's pause between moving a control and pressing a button."""
    since: dict[str, float] = {}

    def settled() -> bool:
        if kernel_status(page) != "idle":
            since.clear()
            return False
        return time.monotonic() - since.setdefault("idle", time.monotonic()) >= quiet

    wait_for(settled, timeout, f"the kernel to be idle for {quiet:g} s", interval=0.1)


def run_all_cells(page: Any) -> None:
    """Run ▸ Run All Cells, through the menu bar."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).first.click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).first.click()


def input_prompts(page: Any) -> list[str]:
    """The ``[n]:`` prompts of the code cells, top to bottom."""
    return page.evaluate(
        "() => Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt'))"
        ".map(e => e.textContent.trim())"
    )


def wait_until_all_executed(page: Any, n_code_cells: int, timeout: float) -> list[str]:
    """Wait until every code cell shows an execution number and the kernel is idle.

    Gives up at once when the kernel is idle while some cells never ran (Run All stops at the
    first error), naming the prompts; returns the prompts.
    """
    settled: dict[str, float] = {}

    def done() -> list[str] | None:
        prompts = input_prompts(page)
        executed = [p for p in prompts if PROMPT_NUMBER.fullmatch(p.rstrip(":"))]
        status = kernel_status(page)
        if len(prompts) == n_code_cells and len(executed) == n_code_cells and status == "idle":
            return prompts
        if status == "idle" and "[*]:" not in prompts and any(p == "[ ]:" for p in prompts):
            # idle with cells left unrun: wait a moment (Run All may not have started yet)
            first = settled.setdefault("idle_since", time.monotonic())
            if time.monotonic() - first > 5.0 and executed:
                errors = ERROR_LINE.findall(output_text(page))
                raise GiveUp(
                    f"the kernel went idle with cells left unrun ({prompts.count('[ ]:')} of "
                    f"{len(prompts)}); the last error shown: {errors[-1] if errors else 'none'}"
                )
        else:
            settled.pop("idle_since", None)
        return None

    return wait_for(done, timeout, f"all {n_code_cells} code cells to run", interval=0.5)


def output_text(page: Any) -> str:
    """The visible text of every cell output of the notebook (narrative and code excluded)."""
    return "\n".join(page.locator(".jp-Notebook .jp-OutputArea").all_inner_texts())


def page_problems(page: Any) -> list[str]:
    """The entries of :data:`PAGE_PROBLEMS` found in the notebook's outputs."""
    text = output_text(page).lower()
    return [p for p in PAGE_PROBLEMS if p.lower() in text]


def find_slider(page: Any, label: re.Pattern[str]) -> Any:
    """The ipywidgets slider whose description matches ``label`` (exactly one must exist)."""
    sliders = page.locator(".widget-slider").filter(
        has=page.locator(".widget-label", has_text=label)
    )
    count = sliders.count()
    if count != 1:
        raise AssertionError(f"expected one slider labelled {label.pattern!r}, found {count}")
    return sliders.first


# The outermost widget around an element: the whole panel the notebook displayed.
PANEL_ROOT_JS = """
(el) => {
  let root = el;
  while (root.parentElement && root.parentElement.closest('.jupyter-widgets')) {
    root = root.parentElement.closest('.jupyter-widgets');
  }
  root.setAttribute('data-browser-test', 'panel');
  return root.className;
}
"""

SLIDER_STATE_JS = """
(slider) => {
  const handle = slider.querySelector('.noUi-handle');
  const label = slider.querySelector('.widget-label');
  const readout = slider.querySelector('.widget-readout');
  return {
    label: label ? label.textContent.trim() : null,
    label_truncated: label ? label.scrollWidth > label.clientWidth + 1 : null,
    label_visible: label ? label.offsetWidth > 0 && label.offsetHeight > 0 : false,
    readout: readout ? readout.textContent.trim() : null,
    readout_visible: readout
      ? readout.offsetWidth > 0 && getComputedStyle(readout).display !== 'none' : false,
    // noUiSlider rounds aria-valuenow to one decimal: the readout is the precise value.
    aria_value: handle ? parseFloat(handle.getAttribute('aria-valuenow')) : null,
    min: handle ? parseFloat(handle.getAttribute('aria-valuemin')) : null,
    max: handle ? parseFloat(handle.getAttribute('aria-valuemax')) : null,
  };
}
"""


def panel_of(slider: Any) -> Any:
    """The locator of the panel (outermost widget) holding ``slider``."""
    slider.evaluate(PANEL_ROOT_JS)
    return slider.page.locator("[data-browser-test=panel]").first


def slider_state(slider: Any) -> dict[str, Any]:
    """Label (text, visible, cut off), readout (text, visible), ``value`` (the readout as a
    number, None when it is not one), ``min`` and ``max`` of an ipywidgets slider."""
    state = slider.evaluate(SLIDER_STATE_JS)
    try:
        state["value"] = float(state["readout"])
    except (TypeError, ValueError):
        state["value"] = None
    return state


def move_slider(slider: Any, key: str | None = None, presses: int = 1) -> dict[str, Any]:
    """Move the slider with the keyboard, as a person does: focus the handle and press ``key``
    ``presses`` times (PageUp/PageDown: 5 steps each; default PageUp, or PageDown from the upper
    half). Returns the slider's new state once the handle has moved.

    Each press sends the new value to the kernel; ipywidgets sends one message per widget at a
    time and holds later values back until the kernel is idle again, so after several presses
    wait with :func:`wait_kernel_settled` before pressing a button that reads the value.
    """
    before = slider_state(slider)
    if key is None:
        key = "PageUp" if before["value"] <= (before["min"] + before["max"]) / 2 else "PageDown"
    handle = slider.locator(".noUi-handle").first
    handle.focus()
    for _ in range(presses):
        handle.press(key)
    return wait_for(
        lambda: (s := slider_state(slider))["readout"] != before["readout"] and s,
        10, f"the slider to move with {key}",
    )


def read_media(panel: Any) -> dict[str, list[dict[str, Any]]]:
    """The images and audio elements inside ``panel`` with a digest of their content."""
    return panel.evaluate(MEDIA_JS)
