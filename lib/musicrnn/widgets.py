"""The notebooks' ipywidgets UI: a panel of generation controls with its piano roll and audio.

:class:`GeneratorPanel` is an ``ipywidgets.VBox``: display it (put it last in a cell) and move
the temperature slider, the number of notes, the seed and top-p -- and the dynamics: the velocity
temperature of a model with velocity, and a scale on every note's velocity -- then press
*Generate*; the piano roll (an ``ipywidgets.Image``, each note coloured by its velocity) and the
audio player (an ``ipywidgets.Audio``) are replaced in place. Everything it does is a call into :mod:`musicrnn.generation`, :mod:`musicrnn.plots` and
:mod:`musicrnn.audio`; the panel holds no logic of its own beyond wiring.
"""

from __future__ import annotations

import io
from typing import Any

import ipywidgets as widgets
import numpy as np

from .errors import MusicRNNError

PANEL_SAMPLE_RATE = 22050  # audio inside the notebook: half CD rate keeps the page light


class GeneratorPanel(widgets.VBox):
    """Controls for generating from a model, with the result's piano roll and audio.

    Args:
        generator: a :class:`musicrnn.generation.Generator` (model, config, primer), e.g. from
            :func:`musicrnn.generation.load_generator`.
        temperature: the slider's starting value (the notebook passes its parameters).
        num_notes: notes per press.
        seed: random seed (the same settings and seed give the same piece).
        top_p: nucleus sampling threshold (1.0: off).
        top_k: keep only the k most likely pitches (None: off); not shown as a control.
        velocity_temperature: velocity randomness of a model with velocity (its slider is shown
            for such models only).
        dynamics: every note's velocity is scaled by this (0.25-2.0) and clipped to 1-127 --
            the model's own velocities, or the fixed velocity of a model without them.
        style: a conditioned model's starting style (a name; None: "none"); the style
            dropdown and the guidance slider are shown for such models only.
        guidance: the guidance slider's starting value (1: plain conditioning).
        max_notes: the largest number of notes the control allows.
        sample_rate: audio sample rate of the player.
        generate: generate once right away, so the panel opens with a piece.

    Attributes:
        temperature, num_notes, seed, top_p, velocity_temperature, dynamics, style,
            guidance: the control widgets (``velocity_temperature`` is displayed for a model
            with velocity only, ``style`` and ``guidance`` for a model with styles only).
        styles: the model's styles, ``("none", ...)``, or () for a model without.
        has_velocity: whether the model predicts each note's velocity.
        button: the *Generate* button.
        roll: the ``ipywidgets.Image`` with the piano roll (PNG).
        player: the ``ipywidgets.Audio`` with the piece (WAV).
        status: a line saying what was generated (or what went wrong).
        notes: the last generated raw notes, ``(num_notes, 3)``, or ``(num_notes, 4)`` with
            velocity (None before the first).
        table: the note table that was drawn and played (velocities after ``dynamics``).
    """

    def __init__(self, generator, *, temperature: float = 1.0, num_notes: int = 120,
                 seed: int = 0, top_p: float = 1.0, top_k: int | None = None,
                 velocity_temperature: float = 1.0, dynamics: float = 1.0,
                 style: str | None = None, guidance: float = 1.0,
                 max_notes: int = 2000, sample_rate: int = PANEL_SAMPLE_RATE,
                 generate: bool = True):
        self.generator = generator
        self.top_k = top_k
        self.sample_rate = int(sample_rate)
        self.has_velocity = bool(generator.velocity)
        self.notes: np.ndarray | None = None
        self.table = None
        from .generation import style_index

        style_css = {"description_width": "110px"}
        layout = widgets.Layout(width="420px")
        self.temperature = widgets.FloatSlider(
            value=float(temperature), min=0.05, max=3.0, step=0.05, description="temperature",
            continuous_update=False, readout_format=".2f", style=style_css, layout=layout)
        self.num_notes = widgets.BoundedIntText(
            value=int(num_notes), min=1, max=int(max_notes), step=10,
            description="notes", style=style_css, layout=layout)
        self.seed = widgets.IntText(value=int(seed), description="seed", style=style_css,
                                    layout=layout)
        self.top_p = widgets.FloatSlider(
            value=float(top_p), min=0.05, max=1.0, step=0.05, description="top-p",
            continuous_update=False, readout_format=".2f", style=style_css, layout=layout)
        # "velocity temp.", not "... temperature": one slider is *the* temperature (of pitch).
        self.velocity_temperature = widgets.FloatSlider(
            value=float(velocity_temperature), min=0.05, max=3.0, step=0.05,
            description="velocity temp.", tooltip="velocity randomness: below 1 steadier",
            continuous_update=False, readout_format=".2f", style=style_css, layout=layout)
        self.dynamics = widgets.FloatSlider(
            value=float(dynamics), min=0.25, max=2.0, step=0.05, description="dynamics",
            tooltip="scale every note's velocity (softer below 1, louder above)",
            continuous_update=False, readout_format=".2f", style=style_css, layout=layout)
        self.styles = tuple(getattr(generator, "styles", ()) or ())
        options = list(self.styles) or ["none"]
        self.style = widgets.Dropdown(
            options=options, value=options[style_index(options, style)] if self.styles
            else "none", description="style", style=style_css, layout=layout)
        self.guidance = widgets.FloatSlider(
            value=float(guidance), min=0.0, max=5.0, step=0.25, description="guidance",
            tooltip="1: the style as learnt; above 1 stronger; 0 no style",
            continuous_update=False, readout_format=".2f", style=style_css, layout=layout)
        self.button = widgets.Button(description="Generate", button_style="primary",
                                     icon="music", tooltip="generate a new piece")
        self.status = widgets.HTML(value="")
        self.roll = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.player = widgets.Audio(format="wav", autoplay=False, loop=False)
        self.button.on_click(lambda _button: self.generate())
        dynamics = [self.velocity_temperature] if self.has_velocity else []
        styles = [self.style, self.guidance] if self.styles else []
        controls = widgets.VBox([self.temperature, self.num_notes, self.seed, self.top_p,
                                 *dynamics, self.dynamics, *styles, self.button])
        super().__init__([controls, self.status, self.roll, self.player])
        if generate:
            self.generate()

    @classmethod
    def from_run(cls, run_dir, **options: Any) -> "GeneratorPanel":
        """A panel for the trained model in ``run_dir`` (primed with its seed sequence)."""
        from .generation import load_generator

        return cls(load_generator(run_dir), **options)

    def settings(self) -> dict[str, Any]:
        """The current control values, as :meth:`Generator.generate` takes them."""
        top_p = float(self.top_p.value)
        settings = {
            "num_notes": int(self.num_notes.value),
            "temperature": float(self.temperature.value),
            "top_k": self.top_k,
            "top_p": None if top_p >= 1.0 else top_p,
            "seed": int(self.seed.value),
        }
        if self.has_velocity:
            settings["velocity_temperature"] = float(self.velocity_temperature.value)
        if self.styles:
            settings["style"] = str(self.style.value)
            settings["guidance"] = float(self.guidance.value)
        return settings

    def generate(self) -> np.ndarray | None:
        """Generate with the current settings and show the result (what the button does).

        Returns the notes, or None when the settings were refused (the status line says why).
        """
        from .audio import synthesize, wav_bytes
        from .generation import notes_table
        from .live import apply_dynamics

        settings = self.settings()
        dynamics = float(self.dynamics.value)
        self.button.disabled = True
        self.status.value = "<i>generating...</i>"
        try:
            notes = self.generator.generate(**settings)
            table = notes_table(notes)  # each note's own velocity, or the fixed one
            table["velocity"] = apply_dynamics(table["velocity"].to_numpy(), dynamics)
            self.roll.value = _roll_png(table, self.generator.primer, settings)
            samples = synthesize(table, self.sample_rate)
            self.player.value = wav_bytes(samples, self.sample_rate)
        except MusicRNNError as exc:
            self.status.value = f"<b>Cannot generate:</b> {_escape(str(exc))}"
            return None
        finally:
            self.button.disabled = False
        self.notes, self.table = notes, table
        seconds = float(np.sum(notes[:, 1]) + notes[-1, 2])
        velocity = table["velocity"]
        self.status.value = (
            f"{len(notes)} notes, {seconds:.1f} s at temperature {settings['temperature']:.2f}, "
            f"seed {settings['seed']}" + (f", top-p {settings['top_p']:.2f}"
                                           if settings["top_p"] else "")
            + (f", velocity temperature {settings['velocity_temperature']:.2f}"
               if "velocity_temperature" in settings else "")
            + (f", style {settings['style']} (guidance {settings['guidance']:.2f})"
               if "style" in settings else "")
            + f"; velocity {velocity.min()}-{velocity.max()} (dynamics x{dynamics:.2f})"
        )
        return notes


def _roll_png(notes: Any, primer: np.ndarray, settings: dict[str, Any]) -> bytes:
    from .plots import piano_roll

    fig = piano_roll(notes, primer=primer, figsize=(10.0, 3.2),
                     title=f"temperature {settings['temperature']:.2f}, seed {settings['seed']}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


def _escape(text: str) -> str:
    import html

    return html.escape(text)
