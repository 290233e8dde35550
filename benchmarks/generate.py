"""Generation speed, side by side in one run: the tutorial's loop against the stateful sampler.

The tutorial (and the original code) generated every note with ``model.predict`` on the whole
window; :class:`musicrnn.generation.Sampler` carries the LSTM state and takes one step per note,
in NumPy. Measured on the same model (the ``v2`` preset: LSTM(256) -> LSTM(128), 50-note
windows) and the same primer, on the CPU:

* ``tutorial``: :func:`musicrnn.generation.tutorial_generate`, ``model.predict`` per note;
* ``single``: one stream, the state carried (``reprime_every=None``);
* ``single, re-primed``: one stream as the sampler runs a ``targets="last"`` model by default
  (the state rebuilt from the last 50 notes every 25 notes; v2 trains on every position, so its
  own default carries the state and this line shows what re-priming costs);
* ``batch64``: 64 streams at once, carried and re-primed.

The goals (issue 4): single stream >= 3,000 notes/s and >= 200x the tutorial loop, 64 streams
>= 50,000 notes/s in total. Then the attention preset (``--attention-preset``, default ``v6``):
its sampler keeps a cache of keys and values and takes one step per note too; goals (issue 14):
one stream >= 2,000 notes/s, 64 streams >= 20,000 notes/s. Then style control (issue 13): both
models conditioned on two styles, one stream played in a style with guidance 2 (each note also
steps the stream's "none" twin, whose logits the guidance mixes in); goal: >= 3,000 notes/s for
the LSTM (``guided_notes_per_s``), the transformer's shown beside it
(``attention_guided_notes_per_s``). The last line reads
``RESULT single_notes_per_s=<n> single_vs_tutorial=<ratio> batch64_notes_per_s=<n>`` (the
carried state), followed by the re-primed figures and ``attention_notes_per_s=<n>
attention_batch64_notes_per_s=<n> guided_notes_per_s=<n> attention_guided_notes_per_s=<n>
attention_after_step_notes_per_s=<n>`` (the attention preset with ``pitch_given_step=8``: the
step drawn first, then the pitch from one of 8 readouts).

Usage: ``python benchmarks/generate.py [--preset v2] [--attention-preset v6] [--quick]``
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # the figures are for the CPU


CPU_TIMES: dict[str, float] = {}  # label -> notes per second of this process's CPU time


def _rate(fn, notes: int, repeats: int = 3, label: str = "") -> float:
    """Best of ``repeats`` wall-clock timings of ``fn()`` (which makes ``notes`` notes), in
    notes/s; the best rate per CPU second of this process goes to ``CPU_TIMES[label]`` (on a
    machine shared with other work the two differ: the CPU figure is what a free core gives)."""
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        started, cpu = time.perf_counter(), time.process_time()
        fn()
        best = min(best, time.perf_counter() - started)
        best_cpu = min(best_cpu, max(time.process_time() - cpu, 1e-9))
    CPU_TIMES[label] = notes / best_cpu
    return notes / best


def _load() -> str:
    try:
        return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "load average unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="v2", help="model preset (default v2)")
    parser.add_argument("--attention-preset", default="v6",
                        help="transformer preset whose cached sampler is measured (default v6)")
    parser.add_argument("--quick", action="store_true", help="fewer notes (a smoke run)")
    args = parser.parse_args()

    import keras
    import numpy as np

    from musicrnn.generation import Sampler, tutorial_generate
    from musicrnn.model import build_model, get_preset

    config = get_preset(args.preset)
    keras.utils.set_random_seed(0)
    model = build_model(config)
    rng = np.random.default_rng(0)
    primer = np.stack([rng.integers(48, 84, config.seq_length),
                       rng.exponential(0.2, config.seq_length),
                       rng.exponential(0.4, config.seq_length)], axis=1).astype(np.float32)
    tutorial_notes = 8 if args.quick else 40
    single_notes = 2_000 if args.quick else 20_000
    batch, batch_notes = 64, (100 if args.quick else 800)

    print(f"{args.preset}: {config.describe_architecture()}, seq_length {config.seq_length}, "
          f"targets={config.targets}; {platform.processor() or platform.machine()}, "
          f"{len(os.sched_getaffinity(0))} CPU cores; keras {keras.__version__} "
          f"({keras.backend.backend()}), numpy {np.__version__}; {_load()}", flush=True)

    tutorial_generate(model, primer, 2, seed=0)  # warm up predict
    tutorial = _rate(lambda: tutorial_generate(model, primer, tutorial_notes, seed=0),
                     tutorial_notes, repeats=2, label="tutorial")
    print(f"tutorial loop (model.predict per note): {tutorial:10.1f} notes/s", flush=True)

    def sampler_rate(batch_size: int, notes: int, reprime_every) -> tuple[float, Sampler]:
        sampler = Sampler(model, batch_size=batch_size, seed=0, config=config,
                          reprime_every=reprime_every)
        sampler.prime(primer)
        sampler.sample(min(200, notes))  # warm up
        label = f"{batch_size}-{reprime_every}"
        return _rate(lambda: sampler.sample(notes), batch_size * notes, label=label), sampler

    single, _ = sampler_rate(1, single_notes, None)
    print(f"sampler, 1 stream, state carried:        {single:10.0f} notes/s "
          f"({single / tutorial:.0f}x the tutorial loop)", flush=True)
    every = max(1, config.seq_length // 2)  # what "auto" picks for a targets="last" model
    single_reprimed, sampler = sampler_rate(1, single_notes, every)
    print(f"sampler, 1 stream, re-primed every {sampler.reprime_every}:     {single_reprimed:10.0f} "
          f"notes/s ({single_reprimed / tutorial:.0f}x)", flush=True)
    batch64, _ = sampler_rate(batch, batch_notes, None)
    print(f"sampler, {batch} streams, state carried:      {batch64:10.0f} notes/s in total",
          flush=True)
    batch64_reprimed, _ = sampler_rate(batch, batch_notes, every)
    print(f"sampler, {batch} streams, re-primed:          {batch64_reprimed:10.0f} notes/s in total",
          flush=True)
    print(f"per CPU second of this process (what a free core gives): tutorial "
          f"{CPU_TIMES['tutorial']:.1f}, 1 stream {CPU_TIMES['1-None']:.0f} (re-primed "
          f"{CPU_TIMES[f'1-{every}']:.0f}), {batch} streams {CPU_TIMES[f'{batch}-None']:.0f} "
          f"(re-primed {CPU_TIMES[f'{batch}-{every}']:.0f}) notes/s; {_load()}")
    goals = (single >= 3000 and single / tutorial >= 200 and batch64 >= 50_000)
    print(f"goals (>= 3,000 notes/s, >= 200x, >= 50,000 notes/s for 64 streams): "
          f"{'met' if goals else 'NOT met'}")

    attention_config = get_preset(args.attention_preset)
    if attention_config.architecture != "transformer":
        parser.error(f"--attention-preset {args.attention_preset} is not a transformer")
    keras.utils.set_random_seed(0)
    attention_model = build_model(attention_config)

    def attention_rate(batch_size: int, notes: int) -> float:
        sampler = Sampler(attention_model, batch_size=batch_size, seed=0,
                          config=attention_config)
        sampler.prime(primer)
        sampler.sample(min(200, notes))  # warm up; the cache is full from here on
        return _rate(lambda: sampler.sample(notes), batch_size * notes,
                     label=f"attention-{batch_size}")

    print(f"{args.attention_preset}: {attention_config.describe_architecture()}, a cache of "
          f"{attention_config.seq_length} notes", flush=True)
    attention = attention_rate(1, single_notes // 2)
    print(f"attention sampler, 1 stream:             {attention:10.0f} notes/s "
          f"({attention / tutorial:.0f}x the tutorial loop)", flush=True)
    attention64 = attention_rate(batch, batch_notes)
    print(f"attention sampler, {batch} streams:           {attention64:10.0f} notes/s in total",
          flush=True)
    print(f"per CPU second: 1 stream {CPU_TIMES['attention-1']:.0f}, {batch} streams "
          f"{CPU_TIMES[f'attention-{batch}']:.0f} notes/s; {_load()}")
    print(f"goals (>= 2,000 notes/s, >= 20,000 notes/s for 64 streams): "
          f"{'met' if attention >= 2000 and attention64 >= 20_000 else 'NOT met'}")
    def guided_rate(config, notes: int) -> float:
        styled = config.replace(condition="dataset", styles=["first", "second"])
        keras.utils.set_random_seed(0)
        sampler = Sampler(build_model(styled), seed=0, config=styled, style="second",
                          guidance=2.0)
        sampler.prime(primer)
        sampler.sample(200)
        return _rate(lambda: sampler.sample(notes), notes, label=f"guided-{config.name}")

    guided = guided_rate(config, single_notes // 2)
    attention_guided = guided_rate(attention_config, single_notes // 2)
    print(f"guided (style, guidance 2), 1 stream:    {guided:10.0f} notes/s ({args.preset}); "
          f"{attention_guided:.0f} ({args.attention_preset})")
    print(f"goal (>= 3,000 notes/s guided, {args.preset}): "
          f"{'met' if guided >= 3000 else 'NOT met'}")

    def after_step_rate(config, notes: int) -> float:
        grouped = config.replace(pitch_given_step=8)
        keras.utils.set_random_seed(0)
        sampler = Sampler(build_model(grouped), seed=0, config=grouped)
        sampler.prime(primer)
        sampler.sample(200)
        return _rate(lambda: sampler.sample(notes), notes, label=f"after-step-{config.name}")

    attention_after_step = after_step_rate(attention_config, single_notes // 2)
    print(f"pitch after the step (8 groups), 1 stream: {attention_after_step:8.0f} notes/s "
          f"({args.attention_preset}; {attention:.0f} with the pitch drawn first)")
    print(f"RESULT single_notes_per_s={single:.0f} single_vs_tutorial={single / tutorial:.0f} "
          f"batch64_notes_per_s={batch64:.0f} single_reprimed_notes_per_s={single_reprimed:.0f} "
          f"batch64_reprimed_notes_per_s={batch64_reprimed:.0f} "
          f"tutorial_notes_per_s={tutorial:.1f} attention_notes_per_s={attention:.0f} "
          f"attention_batch64_notes_per_s={attention64:.0f} guided_notes_per_s={guided:.0f} "
          f"attention_guided_notes_per_s={attention_guided:.0f} "
          f"attention_after_step_notes_per_s={attention_after_step:.0f}")


if __name__ == "__main__":
    main()
