"""Notebook 05's generator panel in a real browser, used the way a person uses it.

JupyterLab on a loopback port with a token serves a copy of ``notebooks/05_generate.ipynb`` with
the smoke parameters pointing at a small trained run (the session fixture ``chorale_run``).
Headless Chromium (Debian's, driven by Playwright) opens it, runs every cell from the Run menu and
checks the rendered panel: its labels, the temperature readout, no widget or missing-model errors.
Then it moves the temperature slider with the keyboard and presses Generate: the piano roll and
the audio must change; moved back to the first temperature, Generate must bring back the very
same roll and audio (same seed and settings, same piece).

Screenshots, the browser console and the server log go to the test's ``tmp_path`` and are copied
to ``outputs/test-artifacts/browser/``. The test skips only where Debian's ``chromium`` is not
installed (``make test`` installs it when it runs as root with apt).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

import browser_support as bs

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "05_generate.ipynb"
SMOKE_CONFIG = ROOT / "configs" / "smoke.yaml"
ARTIFACTS = ROOT / "outputs" / "test-artifacts" / "browser"

# Limits (seconds) of each wait; together they bound the test well under pytest's timeout.
SERVER_START = 60
NOTEBOOK_OPEN = 120
RUN_ALL = 180
GENERATE = 60

# The panel's controls, by the words of their descriptions (issue 4).
TEMPERATURE = re.compile(r"temperature", re.I)
OTHER_CONTROLS = {
    "number of notes": re.compile(r"notes", re.I),
    "seed": re.compile(r"seed", re.I),
    "top-p": re.compile(r"top[\s_-]?p", re.I),
}

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="session")  # session: checked before the session's trained run is made
def chromium() -> Path:
    """Debian's Chromium; the test skips (naming the reason) on a machine without it."""
    executable = bs.chromium_executable()
    if executable is None:
        pytest.skip(
            f"Debian's chromium is not installed at {bs.CHROMIUM}: as root, "
            "`bash scripts/install_system_packages.sh --browser` (run by `make test`) installs it"
        )
    return executable


@pytest.fixture
def artifacts(chromium) -> Path:
    """``outputs/test-artifacts/browser/``, emptied: this run's screenshots and logs only."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@pytest.fixture
def lab(artifacts, tmp_path):
    """JupyterLab serving ``tmp_path/lab`` (shut down after the test, also when it fails)."""
    root = tmp_path / "lab"
    root.mkdir()
    server = bs.start_lab(root, tmp_path / "jupyter-state", timeout=SERVER_START)
    try:
        yield server
    finally:
        server.stop()
        shutil.copy2(server.log_path, tmp_path / "jupyterlab.log")
        bs.copy_artifacts([tmp_path / "jupyterlab.log"], ARTIFACTS)
        assert server.process.poll() is not None, "the JupyterLab server is still running"


@pytest.fixture
def console() -> list[str]:
    """The browser console's messages (``type: text``) and uncaught errors (``pageerror: ...``)."""
    return []


@pytest.fixture
def page(chromium, artifacts, console, tmp_path):
    """A page of headless Chromium (closed after the test) recording its console."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = bs.launch_chromium(playwright, chromium)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1600})
            context.set_default_timeout(30_000)
            tab = context.new_page()
            tab.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            tab.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            yield tab
        finally:
            browser.close()
            (tmp_path / "console.log").write_text("\n".join(console) + "\n")
            bs.copy_artifacts([tmp_path / "console.log"], ARTIFACTS)


def _smoke_parameters(run: dict) -> dict:
    """What ``musicrnn run --config configs/smoke.yaml`` gives notebook 05, aimed at ``run`` (its
    folder, its data folder, and the dataset subset it was trained on)."""
    from musicrnn.runner import load_config, parameters_for

    params = parameters_for(load_config(SMOKE_CONFIG), NOTEBOOK)
    params.update(run_dir=str(run["run_dir"]), data_dir=str(run["data_dir"]),
                  dataset=run["dataset"], max_files=run["max_files"])
    return params


@pytest.mark.timeout(480)
def test_generator_panel_in_jupyterlab(chromium, chorale_run, lab, page, console, tmp_path):
    """Run notebook 05 in JupyterLab, check its panel, move the temperature slider, press
    Generate: a new piano roll and new audio; back to the first temperature: the first piece again.

    ``chorale_run`` (tests/conftest.py) is a small run trained on a few Bach chorales.
    """
    started = time.monotonic()
    timings: dict[str, float] = {}
    report: dict = {"timings_s": timings}

    def lap(name: str) -> None:
        timings[name] = round(time.monotonic() - started, 1)

    def shoot(name: str, target=None) -> Path:
        path = tmp_path / f"{name}.png"
        (target or page).screenshot(path=str(path))
        return path

    # A copy of the shared run: the notebook writes generated/ into its run directory.
    run = dict(chorale_run, run_dir=tmp_path / "run")
    shutil.copytree(chorale_run["run_dir"], run["run_dir"])
    notebook = bs.parameterized_copy(
        NOTEBOOK, lab.root_dir / "notebooks" / NOTEBOOK.name, _smoke_parameters(run)
    )
    n_code_cells = bs.count_code_cells(notebook)
    lap("notebook_written")
    try:
        report["open_s"] = bs.open_notebook(
            page, lab, f"notebooks/{NOTEBOOK.name}", timeout=NOTEBOOK_OPEN
        )
        lap("notebook_open")
        bs.run_all_cells(page)
        report["prompts"] = bs.wait_until_all_executed(page, n_code_cells, timeout=RUN_ALL)
        lap("all_cells_ran")
        problems = bs.page_problems(page)
        assert not problems, f"the notebook's outputs show {problems}"

        # -- the panel as rendered ---------------------------------------------------------------
        slider = bs.find_slider(page, TEMPERATURE)
        panel = bs.panel_of(slider)
        panel.scroll_into_view_if_needed()
        shoot("01_lab_after_run_all")
        shoot("02_panel", panel)
        first = bs.slider_state(slider)
        report["slider_first"] = first
        labels = [t.strip() for t in panel.locator(".widget-label").all_inner_texts()]
        report["labels"] = labels
        assert TEMPERATURE.search(first["label"] or "") and first["label_visible"]
        assert not first["label_truncated"], (
            f"the slider's label {first['label']!r} is cut off on screen (give the widget "
            "style={'description_width': 'initial'} or a wider description width)"
        )
        assert first["readout_visible"], "the temperature slider shows no value readout"
        assert first["value"] is not None, f"the readout {first['readout']!r} is not a number"
        for what, pattern in OTHER_CONTROLS.items():
            assert any(pattern.search(label) for label in labels), (
                f"no control labelled like {what!r} in the panel; its labels are {labels}"
            )
        generate = panel.locator("button", has_text=re.compile(r"^\s*Generate\b"))
        assert generate.count() == 1, "the panel has no (single) Generate button"
        media_first = bs.read_media(panel)
        report["media_first"] = media_first
        assert media_first["images"], "the panel shows no piano roll image"
        assert media_first["audios"], "the panel has no audio element"
        assert all(m["width"] > 0 for m in media_first["images"]), "an image did not load"
        first_digest = bs.media_digest(media_first)

        def shown(condition, what: str) -> dict:
            """Wait until the panel's media satisfy ``condition`` and the kernel is idle."""
            def check():
                media = bs.read_media(panel)
                ok = condition(bs.media_digest(media)) and bs.kernel_status(page) == "idle"
                return ok and media
            return bs.wait_for(check, GENERATE, what, interval=0.5)

        # -- move the temperature slider, press Generate: a new piece ------------------------------
        moved = bs.move_slider(slider, "PageUp" if first["value"] < first["max"] else "PageDown")
        report["slider_moved"] = moved
        assert moved["value"] is not None and moved["value"] != first["value"]
        bs.wait_kernel_settled(page)
        lap("slider_moved")
        generate.click()
        media_moved = shown(
            lambda d: d[0] and d[1] and not set(d[0]) & set(first_digest[0])
            and not set(d[1]) & set(first_digest[1]),
            f"a new piano roll and new audio after Generate at temperature {moved['readout']}",
        )
        lap("regenerated")
        report["media_moved"] = media_moved
        assert all(m["width"] > 0 for m in media_moved["images"]), "a new image did not load"
        problems = bs.page_problems(page)
        assert not problems, f"after Generate the notebook's outputs show {problems}"
        panel.scroll_into_view_if_needed()
        shoot("03_panel_after_generate", panel)
        shoot("04_lab_after_generate")

        # -- back to the first temperature: the same seed and settings give the first piece ------
        back = bs.move_slider(slider, "PageDown" if moved["value"] > first["value"] else "PageUp")
        report["slider_back"] = back
        assert back["readout"] == first["readout"], "the slider did not return to its first value"
        bs.wait_kernel_settled(page)
        generate.click()
        media_back = shown(
            lambda d: d == first_digest,
            f"the first piece again (same roll, same audio) at temperature {back['readout']}",
        )
        lap("first_piece_again")
        report["media_back"] = media_back
        written = sorted(p.name for p in (run["run_dir"] / "generated").glob("*"))
        report["generated_files"] = written
        assert {"generated.mid", "generated.wav", "piano_roll.png"} <= set(written), (
            f"notebook 05 did not write its piece into the run directory: {written}"
        )
        assert not bs.page_problems(page)
        errors = [m for m in console if m.startswith(("error:", "pageerror:"))]
        assert not errors, f"the browser console shows errors: {errors[:5]}"
    except BaseException:
        try:
            shoot("failure")
            report["output_text"] = bs.output_text(page)[-4000:]
            print("The notebook's outputs end with:\n" + report["output_text"][-2000:])
        except Exception:  # noqa: BLE001 - the page may be gone; the first error matters
            pass
        raise
    finally:
        lap("total")
        (tmp_path / "report.json").write_text(json.dumps(report, indent=2, default=str))
        bs.copy_artifacts(sorted(tmp_path.glob("*.png")) + [tmp_path / "report.json"], ARTIFACTS)
