"""Several processes: `mssr train launcher=ddp` on 2 CPU processes (gloo) trains exactly like 1 process.

On a machine without GPUs the launcher sets ACCELERATE_USE_CPU=true, so `accelerate launch`
(torchrun underneath) starts CPU processes that talk over gloo: the same code path as GPUs, on CI.
"""

from __future__ import annotations

import json
import os

import pytest

from distributed_runs import COMMON, assert_trains_like_one, metrics
from distributed_runs import mssr as _mssr

TWO = ["launcher=ddp", "launcher.num_processes=2", "launcher.main_process_port=0"]


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path, tiny_policy_path, one_process_run):
    """Same global batch, 1 process vs 2: the same tracker state and the same metrics.

    Rollouts are sampled, and sampling cannot match across layouts: TRL seeds each process
    differently and each samples only its own slice of the batch. Nucleus sampling with
    top_p -> 0 keeps only the most likely token, i.e. it makes sampling greedy, while the
    temperature stays 1, so log-probs, entropies, KL and shaping are the ordinary ones. Then
    the rollouts are equal and what is left to differ is exactly what this test is about: the
    gather order of rewards and prompt ids, GLOBAL batch normalisation of the advantages
    (ALGORITHMS.md), the loss normaliser under gradient accumulation and averaging across
    processes, the KL that moves rho, and the value tracker every rank keeps. The tracker warm
    start is off: with greedy rollouts it would predict every reward exactly (all advantages
    0, nothing to compare); its sharing across processes is tested below.
    """
    two = tmp_path / "two"
    double = _mssr("train", *COMMON, *TWO, "--run-dir", str(two))
    assert double.returncode == 0, double.stderr[-3000:]

    command = double.stdout.lstrip().splitlines()[0]  # printed first, ready to copy
    assert "accelerate launch --config_file" in command and "--num_processes 2" in command
    assert command.endswith(f"--run-dir {two}") and "-m mssr_cli train" in command
    assert double.stdout.count("Run folder:") == 1, "only rank 0 prints"

    assert_trains_like_one(one_process_run, two)

    checkpoint = two / "checkpoints" / "checkpoint-3"
    assert (checkpoint / "rng_state_0.pth").exists() and (checkpoint / "rng_state_1.pth").exists()
    assert not list((two / "checkpoints").glob(".staging/checkpoint-*"))
    assert (two / "summary.json").exists() and (two / "model" / "config.json").exists()
    assert not (two / ".lock").exists()

    # resuming under 2 processes: rank 0 verifies and chooses the checkpoint, every rank loads that one
    resumed = _mssr("train", "--resume", str(two), "train.max_steps=4")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from checkpoint-3 (RL step 3)" in resumed.stdout
    assert [m["step"] for m in metrics(two)] == [0, 1, 2, 3, 4]
    from mssr_cli.runs.checkpoints import verify

    assert verify(two / "checkpoints" / "checkpoint-4") is None
    state = json.loads((two / "checkpoints" / "checkpoint-4" / "mssr_state.json").read_text())
    assert state["estimator"]["tracker"]["num_updates"] == 4  # the tracker went on, not afresh


def _shared_generation_worker(rank: int, world: int, port: int, model_path: str, out_dir: str) -> None:
    import torch
    import torch.distributed as dist
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mssr_cli.data.digits import load_digits_split
    from mssr_cli.training.distributed import generate_across_processes
    from mssr_cli.training.tracker_warm_start import sample_outcomes
    from mssr_cli.models.generation import greedy_accuracy

    torch.set_num_threads(1)  # two processes share the CI machine's 2 cores
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        calls: list[int] = []

        def fake(rows):  # one "batch" per call; returns each row's id
            calls.append(len(rows))
            return list(rows["id"])

        rows = load_digits_split("train", limit=5)
        ids = generate_across_processes(fake, rows)  # 5 rows over 2 processes: shards of 3 and 2 (padded to 3)
        processor = AutoProcessor.from_pretrained(model_path)
        processor.tokenizer.padding_side = "left"
        model = AutoModelForImageTextToText.from_pretrained(model_path)
        outcomes = sample_outcomes(model, processor, load_digits_split("train", limit=11), 1, 4, 12, 1.0, 1e-6)
        val = greedy_accuracy(model, processor, load_digits_split("validation", limit=11), 4, 12,
                              spread=generate_across_processes)
        result = {"ids": ids, "calls": calls, "outcomes": outcomes, "val": val}
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_shared_generation_gives_every_process_every_row(tmp_path, tiny_policy_path):
    """Validation and the tracker warm start split generation across processes: every process must
    end with every row, in row order, equal to one process's answer (so every rank seeds the same
    tracker), after the same number of generation calls (ZeRO-3's synced generation hangs otherwise)."""
    import socket

    import torch.multiprocessing as mp
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mssr_cli.data.digits import load_digits_split
    from mssr_cli.training.tracker_warm_start import sample_outcomes
    from mssr_cli.models.generation import greedy_accuracy

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_shared_generation_worker, args=(2, port, tiny_policy_path, str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    processor = AutoProcessor.from_pretrained(tiny_policy_path)
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(tiny_policy_path)
    alone = sample_outcomes(model, processor, load_digits_split("train", limit=11), 1, 4, 12, 1.0, 1e-6)
    val = greedy_accuracy(model, processor, load_digits_split("validation", limit=11), 4, 12)
    for got in ranks:
        assert got["ids"] == list(load_digits_split("train", limit=5)["id"])
        assert got["calls"] == [3]  # the short shard was padded to the same length
        assert {int(k): v for k, v in got["outcomes"].items()} == alone
        assert got["val"] == pytest.approx(val)


def test_launcher_prints_the_accelerate_command_and_runs_nothing_on_dry_run(tmp_path):
    out = _mssr("train", "launcher=zero3", "launcher.num_processes=8", "train.max_steps=5", "--run-dir",
                str(tmp_path / "run"), "--dry-run", timeout=120)
    assert out.returncode == 0, out.stderr
    command = out.stdout.strip()
    assert "accelerate launch --config_file" in command and "conf/accelerate/zero3.yaml" in command
    assert "--num_processes 8 --mixed_precision" in command
    assert command.endswith(f"-m mssr_cli train launcher=zero3 launcher.num_processes=8 train.max_steps=5 --run-dir {tmp_path / 'run'}")
    assert "MSSR_LAUNCHED=1" in command  # the processes it starts train instead of launching again
    assert not (tmp_path / "run").exists()


def test_a_launched_process_trains_instead_of_launching_again():
    out = _mssr("train", "launcher=ddp", "launcher.num_processes=2", "--dry-run", env={"MSSR_LAUNCHED": "1"},
                timeout=120)
    assert out.returncode == 0, out.stderr
    assert "accelerate launch" not in out.stdout and "name: ddp" in out.stdout  # the config, as a child sees it


def test_accelerate_configs_are_accelerates_own_format_not_a_config_group():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    from mssr_cli.config.compose import GROUPS, compose
    from mssr_cli.config.paths import accelerate_config_path, group_options

    assert "accelerate" not in GROUPS and group_options("launcher") == ["ddp", "none", "zero2", "zero3"]
    expected = {"ddp": (DistributedType.MULTI_GPU, None), "zero2": (DistributedType.DEEPSPEED, 2),
                "zero3": (DistributedType.DEEPSPEED, 3)}
    for name, (kind, stage) in expected.items():
        cfg = compose([f"launcher={name}"]).launcher
        config = load_config_from_file(str(accelerate_config_path(cfg.accelerate_config)))
        assert config.distributed_type == kind and config.mixed_precision == "bf16", name
        assert (config.deepspeed_config or {}).get("zero_stage") == stage, name


def test_a_broadcast_before_torch_distributed_starts_is_an_error_not_each_ranks_own_value(monkeypatch):
    """Under a launcher (WORLD_SIZE > 1) a broadcast before the process group exists would hand every rank
    its own value: rank 1 would start afresh while rank 0 resumes, and they would deadlock in gloo."""
    from mssr_cli.training.distributed import broadcast_from_main

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert broadcast_from_main("checkpoint-3") == "checkpoint-3"  # alone: the value itself
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="before torch.distributed started"):
        broadcast_from_main("checkpoint-3")
