"""``mssr export``: a LoRA run merged into its base gives the adapted policy's logits; full-weight runs and
checkpoints export as they are; every refusal is one line."""

from __future__ import annotations

import io
import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from mssr_cli.cli import app
from mssr_cli.config.compose import compose
from mssr_cli.export import EXPORT_FILE, export_run

# Two RL updates on 16 prompts. LoRA B starts at zero: lr 1e-2 (20x the tiny recipe's) moves it far enough
# that base and adapted logits differ by much more than the merge's tolerance; no dropout keeps them exact.
SHORT = ["train.max_steps=2", "train.eval_every=0", "train.rollouts_per_step=8", "data.train_limit=16",
         "data.val_limit=8", "logging.wandb=disabled", "logging.progress=false"]
LORA = ["model.lora.enabled=true", "model.lora.r=8", "model.lora.dropout=0", "train.lr=1e-2", "train.save_every=2"]


def _quiet():
    from rich.console import Console

    return Console(file=io.StringIO(), width=200)


def _train(folder, overrides):
    from mssr_cli.training.runner import run_training

    run_training(compose(overrides), overrides, folder)
    return folder


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_policy_path):
    return _train(tmp_path_factory.mktemp("lora") / "run", [*SHORT, *LORA])


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_policy_path):
    return _train(tmp_path_factory.mktemp("full") / "run", [*SHORT, "train.save_every=1"])  # checkpoints 1 and 2


@pytest.fixture(scope="module")
def lora_export(lora_run, tmp_path_factory):
    return export_run(lora_run, tmp_path_factory.mktemp("exports") / "lora", merge_lora=True, console=_quiet())


def _logits(model, processor) -> torch.Tensor:
    """Logits on two fixed validation digits (prompt + image), as training and eval render them."""
    from mssr_cli.data.digits import load_digits_split
    from mssr_cli.models.generation import chat_texts

    docs = load_digits_split("validation", limit=2)
    inputs = processor(images=[[im] for im in docs["image"]], text=chat_texts(processor, docs["prompt"]),
                       padding=True, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**inputs).logits  # [2, L, V]


def _one_line_error(result, *words) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.mark.slow
def test_merged_lora_gives_the_adapted_logits(lora_run, lora_export):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText, AutoProcessor

    adapter = lora_run / "model"
    lora_b = [w for name, w in load_file(adapter / "adapter_model.safetensors").items() if "lora_B" in name]
    assert lora_b and max(w.abs().max().item() for w in lora_b) > 1e-3  # trained off zero: the merge is not a no-op

    merged, info = AutoModelForImageTextToText.from_pretrained(lora_export, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    base_path = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    processor = AutoProcessor.from_pretrained(lora_export)
    base_logits = _logits(AutoModelForImageTextToText.from_pretrained(base_path), processor)
    adapted = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base_path), str(adapter))
    adapted_logits = _logits(adapted, processor)

    torch.testing.assert_close(_logits(merged, processor), adapted_logits, atol=1e-4, rtol=0)
    assert (adapted_logits - base_logits).abs().max() > 1e-2  # the adapter mattered: 100x the tolerance above
    assert json.loads((lora_export / EXPORT_FILE).read_text()) | {"time": None} == {
        "run": lora_run.name, "run_dir": str(lora_run), "source": "model", "merged": True, "base_model": base_path,
        "preset": "tiny", "time": None}
    assert not list(lora_export.glob("adapter_*")) and not (lora_export / "training_args.bin").exists()
    assert not [p.name for p in lora_export.parent.iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.slow
def test_eval_reads_the_export_as_it_reads_the_run(lora_run, lora_export, tmp_path):
    """`mssr eval --model OUT` loads the merged folder and answers as the run (base + adapter) does."""
    def evaluate(model, out):
        result = CliRunner().invoke(app, ["eval", "--benchmarks", "digits", "--model", str(model), "--limit", "8",
                                          "--max-new-tokens", "12", "--out", str(out)])
        assert result.exit_code == 0, (result.output, result.stderr, result.exception)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["benchmarks"]["digits"]["n"] == 8
        return [json.loads(line)["response"] for line in (out / "samples_digits.jsonl").read_text().splitlines()]

    assert evaluate(lora_export, tmp_path / "export") == evaluate(lora_run, tmp_path / "run")


@pytest.mark.slow
def test_full_weight_run_exports_its_files_as_they_are(full_run, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = CliRunner().invoke(app, ["export", str(full_run), "--out", str(tmp_path / "out")])
    assert out.exit_code == 0, (out.output, out.stderr)
    export = tmp_path / "out"
    assert (export / "model.safetensors").read_bytes() == (full_run / "model" / "model.safetensors").read_bytes()
    assert not (export / "training_args.bin").exists()
    meta = json.loads((export / EXPORT_FILE).read_text())
    assert meta["merged"] is False and meta["source"] == "model" and meta["base_model"] is None
    model, info = AutoModelForImageTextToText.from_pretrained(export, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    AutoProcessor.from_pretrained(export)

    # exporting again replaces a previous export; --merge-lora on a full-weight run copies, with a note
    again = CliRunner().invoke(app, ["export", str(full_run), "--out", str(export), "--merge-lora"])
    assert again.exit_code == 0, (again.output, again.stderr)
    assert "nothing to merge" in again.output and json.loads((export / EXPORT_FILE).read_text())["merged"] is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # neither staging nor the old export left


@pytest.mark.slow
def test_a_run_without_model_exports_its_newest_verified_checkpoint(full_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    shutil.rmtree(run / "model")  # stopped before its end
    torn = run / "checkpoints" / "checkpoint-2" / "model.safetensors"
    torn.write_bytes(torn.read_bytes()[:1000])
    console = _quiet()
    export = export_run(run, tmp_path / "out", console=console)

    said = console.file.getvalue()
    assert "no model/" in said and "exporting checkpoint-1" in said and "checkpoint-2 skipped" in said
    checkpoint = run / "checkpoints" / "checkpoint-1"
    assert json.loads((export / EXPORT_FILE).read_text())["source"] == "checkpoints/checkpoint-1"
    assert (export / "model.safetensors").read_bytes() == (checkpoint / "model.safetensors").read_bytes()
    assert sorted(p.name for p in export.iterdir()) == sorted(
        [EXPORT_FILE, "chat_template.jinja", "config.json", "generation_config.json", "model.safetensors",
         "processor_config.json", "tokenizer.json", "tokenizer_config.json"])  # no optimizer, RNG, state, run/


@pytest.mark.slow
def test_a_lora_run_without_model_merges_its_checkpoint(lora_run, lora_export, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(lora_run, run)
    shutil.rmtree(run / "model")
    export = export_run(run, tmp_path / "out", merge_lora=True, console=_quiet())

    assert json.loads((export / EXPORT_FILE).read_text())["source"] == "checkpoints/checkpoint-2"
    # the last checkpoint holds the final adapter: the same merged weights as the export of model/
    assert (export / "model.safetensors").read_bytes() == (lora_export / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_refusals_are_one_line(lora_run, full_run, tmp_path):
    def export(*args):
        return CliRunner().invoke(app, ["export", *map(str, args)])

    _one_line_error(export(lora_run, "--out", tmp_path / "x"), "LoRA run", "--merge-lora")
    _one_line_error(export(tmp_path / "missing", "--out", tmp_path / "x"), "no such folder")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    _one_line_error(export(tmp_path / "notes", "--out", tmp_path / "x"), "not a run folder")
    _one_line_error(export(tmp_path / "notes" / "a.txt", "--out", tmp_path / "x"), "is a file")
    _one_line_error(export(full_run, "--out", tmp_path / "notes"), "not empty and not a previous export")
    _one_line_error(export(full_run, "--out", tmp_path / "notes" / "a.txt"), "is a file")
    _one_line_error(export(full_run, "--out", full_run / "model" / "x"), "inside")

    unfinished = tmp_path / "unfinished"  # config written, killed before the first checkpoint
    unfinished.mkdir()
    shutil.copyfile(full_run / "config.yaml", unfinished / "config.yaml")
    _one_line_error(export(unfinished, "--out", tmp_path / "x"), "no model/", "no checkpoint")

    moved = tmp_path / "moved"  # a LoRA run whose base model is not on this machine
    shutil.copytree(lora_run, moved)
    config = moved / "model" / "adapter_config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"base_model_name_or_path": str(tmp_path / "gone")}))
    _one_line_error(export(moved, "--out", tmp_path / "x", "--merge-lora"), "base model", "no such folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moved", "notes", "unfinished"]  # nothing written
