"""Training under distribution strategies and precisions, each in a fresh process where the
strategy needs one: MirroredStrategy on two logical CPUs, MultiWorkerMirroredStrategy with two
processes on loopback, the SLURM rules, mixed precision. In a file of its own so that
``make test``'s workers can run it beside the rest of the training tests."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import numpy as np
import pytest

from musicrnn.errors import MusicRNNError
from musicrnn.model import get_preset, load_run
from musicrnn.notes import NoteCorpus
from musicrnn.training import train
from training_support import TINY, job_env, script, tiny


@pytest.fixture(scope="module")
def corpus(chorale_data) -> NoteCorpus:
    return chorale_data["corpus"]


# -- distribution --------------------------------------------------------------------------------

_DISTRIBUTED_JOB = """
    import json, sys
    import tensorflow as tf
    if sys.argv[3] == "two-cpus":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    from musicrnn.model import ModelConfig
    from musicrnn.notes import NoteCorpus
    from musicrnn.training import train

    strategy = "mirrored" if sys.argv[3] == "two-cpus" else None
    for index, config_json in enumerate(sys.argv[4:]):  # one run directory per config
        run_dir = sys.argv[1] + ("" if index == 0 else f"-{index}")
        result = train(ModelConfig.from_json(config_json), "bach-chorales", run_dir,
                       corpus=NoteCorpus.from_npz(sys.argv[2]), strategy=strategy,
                       progress=False)  # one validation, at the end of the pass
        print("RESULT " + json.dumps({"strategy": result.strategy, "replicas": result.replicas,
                                      "steps": result.steps, "val_loss": result.best_val_loss}))
"""


def _result_lines(stdout: str) -> list[dict]:
    """The job's ``RESULT {...}`` lines, one per trained config."""
    return [json.loads(x[len("RESULT "):]) for x in stdout.splitlines() if x.startswith("RESULT ")]


def _result_line(stdout: str) -> dict:
    results = _result_lines(stdout)
    assert results, stdout[-3000:]
    return results[-1]


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(corpus, tmp_path):
    job = script(tmp_path, _DISTRIBUTED_JOB)
    corpus_path = corpus.to_npz(tmp_path / "corpus.npz")
    # an LSTM preset and the attention preset, one after the other in the same process (as
    # notebook 04 trains several models in one kernel): the second under the same strategy
    lstm = tiny(epochs=1)
    attention = get_preset("v6", **{**TINY, "epochs": 1, "model_dim": 8, "attention_layers": 1,
                                    "attention_heads": 2, "ff_dim": 16, "velocity": "none"})
    done = subprocess.run([sys.executable, str(job), str(tmp_path / "run"), str(corpus_path),
                           "two-cpus", lstm.to_json(), attention.to_json()], env=job_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = _result_lines(done.stdout)
    assert len(results) == 2, done.stdout[-3000:]
    for result in results:
        assert result["strategy"] == "MirroredStrategy" and result["replicas"] == 2
        assert np.isfinite(result["val_loss"])
    assert load_run(tmp_path / "run").config.seq_length == 16
    assert load_run(tmp_path / "run-1").config.architecture == "transformer"


def test_slurm_steps_with_several_tasks_choose_the_multi_worker_strategy(monkeypatch):
    from musicrnn.training import resolve_strategy, under_slurm

    for name in ("SLURM_JOB_ID", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS",
                 "SLURM_NPROCS", "TF_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    assert not under_slurm()
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert not under_slurm(), "a single-task job trains on its own"
    assert resolve_strategy() is None  # no GPUs here, one task: no strategy at all
    monkeypatch.setenv("SLURM_NTASKS", "2")
    assert under_slurm()
    with pytest.raises(MusicRNNError, match="TF_CONFIG"):
        resolve_strategy("multiworker")


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.slow
def test_multi_worker_strategy_with_two_processes_on_loopback(corpus, tmp_path):
    job = script(tmp_path, _DISTRIBUTED_JOB)
    corpus_path = corpus.to_npz(tmp_path / "corpus.npz")
    config = tiny(epochs=1)
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    processes = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers},
                                "task": {"type": "worker", "index": index}})
        processes.append(subprocess.Popen(
            [sys.executable, str(job), str(tmp_path / "run"), str(corpus_path), "workers",
             config.to_json()], env=job_env(TF_CONFIG=tf_config), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for p in processes:
            out, err = p.communicate(timeout=300)
            outputs.append((p.returncode, out, err))
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    for code, out, err in outputs:
        assert code == 0, err[-3000:]
        result = _result_line(out)
        assert result["strategy"] == "MultiWorkerMirroredStrategy" and result["replicas"] == 2
    chief, other = (_result_line(o[1]) for o in outputs)
    assert chief["val_loss"] == pytest.approx(other["val_loss"], rel=1e-5)
    assert (tmp_path / "run" / "music_rnn_model.keras").is_file()
    assert not list((tmp_path / "run").glob(".worker-*")), "workers clean up after themselves"


def test_mixed_precision_trains_and_leaves_the_global_policy_alone(corpus, tmp_path):
    import keras

    result = train(tiny(epochs=1), "bach-chorales", tmp_path / "run", corpus=corpus,
                   mixed_precision=True, validate_every=3, progress=False)
    assert result.model.get_layer("lstm_1").dtype_policy.name == "mixed_bfloat16"  # no GPU here
    assert np.isfinite(result.best_val_loss)
    assert keras.config.dtype_policy().name == "float32"
    assert load_run(tmp_path / "run").model.get_layer("lstm_1").dtype_policy.name == (
        "mixed_bfloat16")
