"""The same-budget comparison of presets: ``musicrnn experiments`` / ``make experiments``.

Several models (presets with optional field overrides, from ``configs/experiments-*.yaml``) are
trained on the same data for the same wall-clock budget each (``train(budget_seconds=...)``),
then evaluated on the very same held-out notes (:func:`musicrnn.evaluation.evaluate_model`), and
the experiment log is written: a table of every model beside the n-gram baselines, the goals
each model meets, and the figures. It uses training and evaluation; neither uses it.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

from .errors import MusicRNNError
from .evaluation import (
    CONTEXT_LENGTHS,
    DEFAULT_TEMPERATURES,
    _jsonable,
    context_curve,
    corpus_pieces,
    evaluate_model,
    generation_speed,
    fit_ngram_baselines,
    held_out_split,
    markdown_table,
)
from .training import time_budget_callback  # noqa: F401  (its home before training took budgets)

__all__ = ["time_budget_callback", "load_experiment_config", "run_experiments"]


ROW_JIT = "jit_compile"  # a row's training option beside its ModelConfig fields


def _fields(spec: dict[str, Any]) -> dict[str, Any]:
    """A row's preset and ModelConfig fields (without its training options)."""
    return {k: v for k, v in spec.items() if k != ROW_JIT}


def _row_training(spec: dict[str, Any]) -> dict[str, Any]:
    """A row's own arguments of :func:`musicrnn.training.train`."""
    return {ROW_JIT: spec[ROW_JIT]} if ROW_JIT in spec else {}


def load_experiment_config(path: str | Path) -> dict[str, Any]:
    """Read an experiments file (``configs/experiments-*.yaml``); clear errors for bad ones.

    Keys: ``dataset``, ``max_files``, ``seed``, ``budget_seconds`` (training wall-clock per
    model), ``train`` (more arguments of :func:`musicrnn.training.train`), ``evaluation``
    (arguments of :func:`evaluate_model`), ``contexts`` (the context lengths of
    :func:`musicrnn.evaluation.context_curve`, default 50, 100, 200, 400), ``min_position``
    (notes of context before every scored note; default: the longest ``seq_length``) and
    ``models``:
    ``{name: {preset: ..., <ModelConfig field>: value, ...}}``; a row may also set
    ``jit_compile: true`` (XLA for its training steps, as a profile's notebook 04 can).
    """
    from .paths import read_yaml

    path = Path(path)
    raw = read_yaml(path, f"experiments file at {path}; see configs/experiments-*.yaml")
    known = {"description", "dataset", "max_files", "data_dir", "seed", "budget_seconds", "train",
             "evaluation", "contexts", "min_position", "models"}
    if not isinstance(raw, dict) or set(raw) - known:
        raise MusicRNNError(f"{path}: unknown keys {sorted(set(raw) - known)}; known: "
                            f"{sorted(known)}")
    models = raw.get("models") or {}
    if not isinstance(models, dict) or not models:
        raise MusicRNNError(f"{path}: 'models' must map names to presets, e.g. v2: {{preset: v2}}")
    from .training import resolve_config

    for name, spec in models.items():
        if not isinstance(spec, dict) or "preset" not in spec:
            raise MusicRNNError(f"{path}: model {name!r} needs a 'preset' (baseline, v1, ...)")
        if not isinstance(spec.get(ROW_JIT, False), bool):
            raise MusicRNNError(f"{path}: model {name!r}: {ROW_JIT} must be true or false, got "
                                f"{spec[ROW_JIT]!r}")
        resolve_config(_fields(spec))  # unknown presets/fields and bad values fail here, early
    contexts = raw.get("contexts", list(CONTEXT_LENGTHS))
    if not isinstance(contexts, list) or not contexts or any(
            isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in contexts):
        raise MusicRNNError(f"{path}: contexts must be a list of whole numbers >= 1 (notes of "
                            f"context), got {contexts!r}")
    min_position = raw.get("min_position")
    if min_position is not None and (isinstance(min_position, bool)
                                     or not isinstance(min_position, int) or min_position < 1):
        raise MusicRNNError(f"{path}: min_position must be a whole number >= 1 (notes of context "
                            f"before every scored note), got {min_position!r}")
    budget = raw.get("budget_seconds", 120)
    if not isinstance(budget, (int, float)) or budget <= 0:
        raise MusicRNNError(f"{path}: budget_seconds must be a positive number, got {budget!r}")
    return {
        "name": path.stem,
        "description": raw.get("description", ""),
        "dataset": raw.get("dataset", "bach-chorales"),
        "max_files": raw.get("max_files"),
        "data_dir": raw.get("data_dir"),
        "seed": int(raw.get("seed", 42)),
        "budget_seconds": float(budget),
        "train": dict(raw.get("train") or {}),
        "evaluation": dict(raw.get("evaluation") or {}),
        "contexts": [int(c) for c in contexts],
        "min_position": min_position,
        "models": {str(k): dict(v) for k, v in models.items()},
    }


def _history_row(history, best_validation: int | None) -> dict[str, float]:
    """The losses of the history's row of validation ``best_validation`` (else its last row)."""
    if history is None or not len(history):
        return {}
    best = (history[history["validation"] == best_validation]
            if best_validation is not None and "validation" in history.columns else history[:0])
    row = best.iloc[0] if len(best) else history.iloc[-1]
    out = {}
    for key in ("loss", "val_loss", "pitch_loss", "val_pitch_loss"):
        if key in history.columns:
            out[f"{'train_' if not key.startswith('val_') else ''}{key}"] = float(row[key])
    return out


def run_experiments(config: str | Path | dict[str, Any], out_dir: str | Path | None = None, *,
                    data_dir: str | Path | None = None, budget_seconds: float | None = None,
                    models: Sequence[str] | None = None, progress: bool = True):
    """Train every model of an experiments file on the same data with the same wall-clock budget,
    evaluate each on the same held-out notes, and write the experiment log.

    Each model gets its own run directory ``<out_dir>/<name>/`` (with ``evaluation/``); the log
    goes to ``<out_dir>/experiment_log.csv`` and ``.md`` with ``loss_curves.png``,
    ``nll_bars.png``, ``temperature_sweep.png`` and ``distributions.png``, and ``summary.json``
    (the goals, measured on the best model). Every model is scored on notes with at least the
    longest model's ``seq_length`` of context, so all rows score the very same notes. A finished
    run directory is loaded, not retrained (run again with the same ``out_dir`` to resume).
    Returns the log as a DataFrame.
    """
    import pandas as pd

    from . import plots as _plots
    from .model import count_params
    from .notes import load_corpus
    from .paths import RUNS, atomic_write_text
    from .training import resolve_config, train

    cfg = config if isinstance(config, dict) else load_experiment_config(config)
    budget = float(budget_seconds or cfg["budget_seconds"])
    names = list(models or cfg["models"])
    unknown = sorted(set(names) - set(cfg["models"]))
    if unknown:
        raise MusicRNNError(f"models {unknown} are not in the experiments file "
                            f"({', '.join(cfg['models'])})")
    data_dir = data_dir or cfg.get("data_dir")
    configs = {n: resolve_config(_fields(cfg["models"][n]), seed=cfg["seed"]) for n in names}
    configs = {n: c.replace(name=n) for n, c in configs.items()}
    # every model scored on the same notes: after a whole window of the longest (or the file's
    # min_position, which keeps a new row's notes those of an earlier log with a longer model)
    longest = max(c.seq_length for c in configs.values())
    min_position = cfg.get("min_position") or longest
    if min_position < longest:  # refused before an hour of training, not after it
        raise MusicRNNError(f"min_position {min_position} is shorter than the longest model's "
                            f"seq_length ({longest}): every scored note needs a whole window; "
                            f"raise min_position to {longest} or leave it out")
    out = Path(out_dir) if out_dir else RUNS / f"{cfg['name']}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    corpus = load_corpus(cfg["dataset"], data_dir=data_dir, max_files=cfg["max_files"])
    split = held_out_split(corpus, "test")
    baselines = fit_ngram_baselines(
        list(corpus.iter_features("train")),
        list(corpus.iter_features("validation")) if split != "validation" else None)
    evaluation = {"temperatures": DEFAULT_TEMPERATURES, "num_samples": 64, "num_notes": 100,
                  "seed": cfg["seed"], **cfg["evaluation"]}

    rows, reports, histories, curves = [], {}, {}, []
    for name in names:
        model_config = configs[name]
        run_dir = out / name
        if progress:
            print(f"== {name}: {model_config.describe_architecture()}, {model_config.targets} "
                  f"targets; budget {budget:g} s")
        started = time.perf_counter()
        result = train(model_config, cfg["dataset"], run_dir, data_dir=data_dir,
                       max_files=cfg["max_files"], corpus=corpus, budget_seconds=budget,
                       progress=2 if progress else 0,
                       **{**cfg["train"], **_row_training(cfg["models"][name])})
        wall = time.perf_counter() - started
        report = evaluate_model(
            result.model, corpus, seq_length=model_config.seq_length, config=model_config,
            name=name, split=split, min_position=min_position, baselines=baselines,
            progress=progress, **evaluation)
        report.save(run_dir / "evaluation")
        reports[name] = report
        histories[name] = result.history
        held_out = corpus_pieces(corpus, split, velocity=model_config.velocity != "none")
        curve = context_curve(result.model, held_out, cfg.get("contexts") or CONTEXT_LENGTHS,
                              name=name, config=model_config)
        curves.append(curve)
        primer = held_out[0][: model_config.seq_length]
        notes_per_s = generation_speed(result.model, primer, config=model_config)
        m = report.metrics
        rows.append({
            "model": name,
            "pitch_input": model_config.pitch_input,
            "targets": model_config.targets,
            "architecture": model_config.describe_architecture(),
            "params": count_params(model_config),
            "validations": int(result.validations),
            "steps": int(result.steps),
            "passes": round(float(result.passes), 2),
            "train_seconds": round(float(result.train_seconds), 1),
            "wall_seconds": round(wall, 1) if not result.already_complete else math.nan,
            "stopped_by_budget": result.stopped_by_budget,
            "train_target_notes_per_s": round(float(result.target_notes_per_second)),
            "generation_notes_per_s": round(notes_per_s),
            **_history_row(result.history, result.best_validation),
            "heldout_pitch_nll": m["pitch_nll"],
            "heldout_pitch_nll_marginal": m.get("pitch_nll_marginal", m["pitch_nll"]),
            "heldout_perplexity": m["perplexity"],
            "heldout_top1": m["top1_accuracy"],
            "heldout_top5": m["top5_accuracy"],
            "heldout_step_mae": m["step_mae"],
            "heldout_duration_mae": m["duration_mae"],
            "heldout_velocity_nll": m["velocity_nll"],
            "heldout_note_nll": m["note_nll"],
            "carried_pitch_nll": m.get("carried_pitch_nll", math.nan),
            "best_temperature": m["best_temperature"],
            "overlap_area": m["overlap_area"],
            "kl_divergence": m["kl_divergence"],
            # the pitch with the step summed out, comparable across models
            **{f"pitch_nll_context_{int(r.context)}": r.pitch_nll_marginal
               for r in curve.itertuples()},
            **{f"note_nll_context_{int(r.context)}": r.note_nll for r in curve.itertuples()},
        })
    first = reports[names[0]]
    window = first.scores[first.scores["context"] == first.scores["context"].iloc[0]]
    for _, b in window[~window["name"].isin(names)].iterrows():
        rows.append({"model": b["name"], "heldout_pitch_nll": b["pitch_nll"],
                     "heldout_pitch_nll_marginal": b["pitch_nll"],
                     "heldout_perplexity": b["perplexity"], "heldout_top1": b["top1_accuracy"],
                     "heldout_top5": b["top5_accuracy"], "heldout_step_mae": b["step_mae"],
                     "heldout_duration_mae": b["duration_mae"],
                     "heldout_velocity_nll": b["velocity_nll"], "heldout_note_nll": b["note_nll"]})
    log = pd.DataFrame(rows).set_index("model")

    trained = log.loc[names]
    goals = _goal_table(reports, names)
    # ranked by the pitch with the step summed out: a model whose pitch reads the true step
    # would otherwise be ranked on an easier question than the others
    best_nll = str(trained["heldout_pitch_nll_marginal"].idxmin())
    meeting = goals[goals["all_goals"]]
    # the best model: the lowest NLL among the models that meet every goal (else overall)
    best = str(meeting["pitch_nll"].idxmin()) if len(meeting) else best_nll
    bm = reports[best].metrics
    summary = {
        "experiments": cfg["name"], "dataset": cfg["dataset"], "max_files": cfg["max_files"],
        "split": split, "budget_seconds": budget, "min_position": min_position,
        "n_positions": bm["n_positions"], "best_model": best,
        "best_model_meets_every_goal": bool(len(meeting)), "best_nll_model": best_nll,
        "goals": {n: {k: _jsonable(v) for k, v in row.items()}
                  for n, row in goals.to_dict(orient="index").items()},
        "best_pitch_nll": bm.get("pitch_nll_marginal", bm["pitch_nll"]),
        "markov2_pitch_nll": bm.get("markov2_pitch_nll"),
        "best_ngram": bm["best_ngram"], "best_ngram_pitch_nll": bm["best_ngram_pitch_nll"],
        "improvement_over_markov2": bm.get("improvement_over_markov2"),
        "goal_markov2_15pct": bm.get("goal_markov2_15pct"),
        "goal_beats_best_ngram": bm["goal_beats_best_ngram"],
        "best_temperature": bm["best_temperature"], "overlap_area": bm["overlap_area"],
        "reference_overlap_area": bm["reference_overlap_area"],
        "goal_overlap_0_8": bm["goal_overlap_0_8"],
        "best_overlap_model": str(trained["overlap_area"].idxmax()),
        "best_overlap_area": float(trained["overlap_area"].max()),
    }
    atomic_write_text(out / "summary.json", json.dumps(_jsonable(summary), indent=2) + "\n")
    atomic_write_text(out / "context_curve.csv", pd.concat(curves).to_csv(index=False))
    atomic_write_text(out / "experiment_log.csv", log.to_csv())
    atomic_write_text(out / "experiment_log.md", _experiment_markdown(log, summary, cfg, goals))

    scores = pd.concat([window[~window["name"].isin(names)]] + [
        r.scores[r.scores["context"] == r.scores["context"].iloc[0]].iloc[:1]
        for r in reports.values()])
    scores = scores.assign(context="same notes for every model")
    figures = {
        "loss_curves.png": lambda: _plots.loss_curves_together(histories),
        "context_curve.png": lambda: _plots.context_curves(pd.concat(curves)),
        "nll_bars.png": lambda: _plots.nll_bars(scores),
        "temperature_sweep.png": lambda: _plots.overlap_by_temperature(
            {n: r.sweep for n, r in reports.items()},
            reference_overlap=bm["reference_overlap_area"]),
        "distributions.png": lambda: _plots.statistics_overlays(
            {"held-out": first.reference, **{
                f"{n} (T={r.metrics['best_temperature']:g})":
                    r.generated[r.metrics["best_temperature"]] for n, r in reports.items()}}),
    }
    for file_name, draw in figures.items():
        _plots.save_figure(draw(), out / file_name)
    if progress:
        print(log.to_string(float_format=lambda v: f"{v:.3f}"))
        print(f"wrote {out}/experiment_log.md (+ .csv, summary.json, plots)")
    return log


def _goal_table(reports: dict[str, Any], names: Sequence[str]):
    """Per trained model: its NLL, the improvement over Markov-2, and each goal met or not."""
    import pandas as pd

    rows = {}
    for name in names:
        m = reports[name].metrics
        flags = [bool(m.get("goal_markov2_15pct")), bool(m["goal_beats_best_ngram"]),
                 bool(m["goal_overlap_0_8"])]
        rows[name] = {
            "pitch_nll": m.get("pitch_nll_marginal", m["pitch_nll"]),  # comparable across models
            "improvement_over_markov2": m.get("improvement_over_markov2", math.nan),
            "goal_markov2_15pct": flags[0], "goal_beats_best_ngram": flags[1],
            "best_temperature": m["best_temperature"], "overlap_area": m["overlap_area"],
            "goal_overlap_0_8": flags[2], "all_goals": all(flags),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def _experiment_markdown(log, summary: dict[str, Any], cfg: dict[str, Any], goals=None) -> str:
    def yes(flag):
        return "yes" if flag else "no"

    if summary.get("best_model_meets_every_goal"):
        heading = f"best model: `{summary['best_model']}`, the lowest NLL among the models " \
                  "that meet every goal"
    else:
        heading = f"no model meets every goal; best model by held-out NLL: " \
                  f"`{summary['best_model']}`"
    if summary.get("best_nll_model") not in (None, summary["best_model"]):
        heading += f"; the lowest NLL overall is `{summary['best_nll_model']}`'s"
    per_model = []
    if goals is not None:
        per_model = ["| model | held-out NLL | vs Markov-2 | beats best n-gram | best T | overlap "
                     "| every goal |", "|---|---|---|---|---|---|---|"]
        for name, g in goals.iterrows():
            per_model.append(
                f"| {name} | {g['pitch_nll']:.3f} | {g['improvement_over_markov2']:.1%} "
                f"{'(yes)' if g['goal_markov2_15pct'] else '(no)'} | "
                f"{yes(g['goal_beats_best_ngram'])} | {g['best_temperature']:g} | "
                f"{g['overlap_area']:.3f} {'(yes)' if g['goal_overlap_0_8'] else '(no)'} | "
                f"{yes(g['all_goals'])} |")
        per_model.append("")

    lines = [
        f"# Experiment log: {cfg['name']}",
        "",
        f"Dataset `{cfg['dataset']}` (max_files {cfg['max_files']}), held-out "
        f"`{summary['split']}` pieces, {summary['n_positions']:,} notes scored, each with at least "
        f"{summary['min_position']} notes of context (the same notes for every row). Every model "
        f"trained for a wall-clock budget of {summary['budget_seconds']:g} s. NLL in nats per "
        "note; "
        "losses at the restored (best validation) period; `val_pitch_loss` of an `all`-targets "
        "model averages every position of a window, so compare models on `heldout_pitch_nll`.",
        "",
        markdown_table(log),
        f"## Goals ({heading})",
        "",
        *per_model,
        f"- NLL {summary['best_pitch_nll']:.3f} vs Markov-2 {summary['markov2_pitch_nll']:.3f}: "
        f"{summary['improvement_over_markov2']:.1%} better (goal >= 15%): "
        f"{yes(summary['goal_markov2_15pct'])}",
        f"- beats the best n-gram ({summary['best_ngram']}, "
        f"{summary['best_ngram_pitch_nll']:.3f}): {yes(summary['goal_beats_best_ngram'])}",
        f"- overlapping area at its best temperature ({summary['best_temperature']:g}): "
        f"{summary['overlap_area']:.3f} (goal >= 0.8: {yes(summary['goal_overlap_0_8'])}; real "
        f"music against held-out music at this sample size: "
        f"{summary['reference_overlap_area']:.3f})",
        "",
    ]
    return "\n".join(lines)
