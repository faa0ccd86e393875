"""The shipped lm-eval tasks: every YAML loads in lm-eval's TaskManager and agrees with the registry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mssr_cli.evaluation import TASKS_DIR
from mssr_cli.evaluation.benchmarks import BENCHMARKS, BENCHMARK_NAMES
from test_eval_data import write_local_copy


class _IgnoreTags(yaml.SafeLoader):
    pass


_IgnoreTags.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def _yaml(name: str) -> dict:
    return yaml.load((TASKS_DIR / f"mssr_{name}.yaml").read_text(), Loader=_IgnoreTags)


def test_one_yaml_per_benchmark_and_nothing_else():
    assert sorted(p.stem for p in TASKS_DIR.glob("*.yaml")) == sorted(f"mssr_{n}" for n in BENCHMARK_NAMES)


@pytest.mark.parametrize("name", BENCHMARK_NAMES)
def test_yaml_agrees_with_the_registry(name):
    config, benchmark = _yaml(name), BENCHMARKS[name]
    assert config["task"] == f"mssr_{name}"
    assert config["test_split"] == benchmark.split
    assert config["metadata"]["benchmark"] == name
    assert config["output_type"] == "generate_until"
    assert config["doc_to_image"] == "utils.doc_to_image"
    assert config.get("dataset_path") == benchmark.hub_id
    assert name in config["tag"]
    if benchmark.hub_id:  # the schema source is written where the task is defined
        assert "# Schema:" in (TASKS_DIR / f"mssr_{name}.yaml").read_text()


@pytest.fixture(scope="module")
def task_manager(tmp_path_factory):
    from lm_eval.tasks import TaskManager

    data_dir = tmp_path_factory.mktemp("eval_tasks_data")
    for name in BENCHMARK_NAMES:
        if BENCHMARKS[name].hub_id is not None:  # built in (digits, the toy suite): no copy to make
            write_local_copy(name, data_dir)
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={"data_dir": str(data_dir)})


@pytest.mark.parametrize("name", BENCHMARK_NAMES)
def test_every_task_loads_in_lm_eval(task_manager, name):
    task = task_manager.load([f"mssr_{name}"])["tasks"][f"mssr_{name}"]
    benchmark = BENCHMARKS[name]
    doc = task.eval_docs[0]
    assert task.MULTIMODAL and task.OUTPUT_TYPE == "generate_until"
    assert task.doc_to_text(doc) == benchmark.prompt(doc)
    assert task.doc_to_target(doc) == benchmark.gold(doc)
    assert len(task.doc_to_image(doc)) == 1
    if benchmark.strict:  # graded by the training reward: a boxed gold answer is right
        assert task.process_results(doc, [f"\\boxed{{{benchmark.gold(doc)}}}"]) == {"acc": 1.0}
    assert task.process_results(doc, ["no answer at all"]) == {"acc": 0.0}


def test_bare_benchmark_names_are_tags(task_manager):
    assert set(BENCHMARK_NAMES) <= set(task_manager.all_tags)
    assert list(task_manager.load(["mathvista"])["tasks"]) == ["mssr_mathvista"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_lm_eval_cli_runs_digits_with_hf_multimodal(tiny_policy_path, tmp_path):
    # The check: plain `lm_eval --include_path <tasks> --tasks digits --model hf-multimodal`.
    plain_lm_eval_matches_mssr_eval("digits", ["digits"], tiny_policy_path, tmp_path)


def plain_lm_eval_matches_mssr_eval(tasks: str, benchmarks: list[str], model: str, tmp_path: Path, limit: int = 4):
    """Plain lm-eval (``--tasks tasks``, the README's flags) and ``mssr eval --benchmarks tasks`` on the first
    ``limit`` items of each of ``benchmarks``: the same response and score, item for item."""
    import json

    from typer.testing import CliRunner

    from mssr_cli.cli import app

    command = [
        sys.executable, "-m", "lm_eval", "run", "--model", "hf-multimodal",
        "--model_args", f"pretrained={model},dtype=float32",
        "--include_path", str(TASKS_DIR), "--tasks", tasks, "--limit", str(limit), "--batch_size", "4",
        "--apply_chat_template", "--device", "cpu", "--output_path", str(tmp_path / "out"),
        "--gen_kwargs", "max_gen_toks=12", "--log_samples",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=580)
    assert result.returncode == 0, result.stderr[-3000:]
    assert all(f"mssr_{name}" in result.stdout for name in benchmarks) and "acc" in result.stdout
    assert list(Path(tmp_path / "out").rglob("results_*.json"))

    ours = CliRunner().invoke(app, ["eval", "--benchmarks", tasks, "--model", model, "--limit", str(limit),
                                    "--max-new-tokens", "12", "--out", str(tmp_path / "ours")])
    assert ours.exit_code == 0, ours.output[-3000:]
    for name in benchmarks:
        plain = [json.loads(line) for f in Path(tmp_path / "out").rglob(f"samples_mssr_{name}_*.jsonl")
                 for line in f.read_text().splitlines()]
        mine = [json.loads(line) for line in (tmp_path / "ours" / f"samples_{name}.jsonl").read_text().splitlines()]
        assert len(plain) == len(mine) == limit, name
        plain_by_id = {str(s["doc"]["id"]): s for s in plain}
        for item in mine:
            theirs = plain_by_id[str(item["id"])]
            assert theirs["filtered_resps"][0].strip() == item["response"].strip(), (name, item["id"])
            assert theirs["acc"] == float(item["correct"]), (name, item["id"])
