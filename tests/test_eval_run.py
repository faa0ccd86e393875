"""``run_eval`` end to end on the tiny model: outputs, parity with training validation, errors, judge."""

from __future__ import annotations

import io
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from mssr_cli.evaluation import (
    BackendUnavailableError,
    BenchmarkDataError,
    ModelLoadError,
    UnknownBenchmarkError,
    run_eval,
)
from mssr_cli.evaluation import runner
from mssr_cli.evaluation.benchmarks import BENCHMARKS
from test_eval_data import write_local_copy

SAMPLE_KEYS = {"id", "prompt", "response", "extracted", "gold", "correct"}


def _console():
    from rich.console import Console

    return Console(file=io.StringIO(), width=120)


def _samples(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture()
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_chat_rendering_is_the_training_one(tiny_policy_path):
    from transformers import AutoProcessor

    from mssr_cli.data.digits import load_digits_split
    from mssr_cli.evaluation.generation import chat_text
    from mssr_cli.models.generation import chat_texts

    processor = AutoProcessor.from_pretrained(tiny_policy_path)
    docs = load_digits_split("validation", limit=2)
    assert [chat_text(processor, BENCHMARKS["digits"].prompt(d)) for d in docs] == chat_texts(processor, docs["prompt"])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_digits_end_to_end_matches_training_validation(tiny_policy_path, tmp_path):
    from mssr_cli.config.compose import compose
    from mssr_cli.data.digits import load_digits_split
    from mssr_cli.models.loading import load_policy
    from mssr_cli.models.generation import greedy_accuracy

    console = _console()
    summary = run_eval(["digits"], "tiny", limit=20, out=tmp_path, max_new_tokens=12, console=console)
    result = summary["benchmarks"]["digits"]
    assert result["n"] == 20 and result["source"] == "built in"
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    samples = _samples(tmp_path / "samples_digits.jsonl")
    assert len(samples) == 20 and all(set(s) == SAMPLE_KEYS for s in samples)
    assert sum(s["correct"] for s in samples) == result["correct"]
    # Same split, same greedy decoding, same reward: the run's val/accuracy (the parity check).
    cfg = compose([])
    model, processor = load_policy(cfg.model, cfg.data)
    validation = greedy_accuracy(model, processor, load_digits_split("validation", limit=20), 20, 12)
    assert abs(result["accuracy"] - validation["accuracy"]) <= 1 / 20
    table = console.file.getvalue()
    assert "benchmark" in table and "digits" in table and f"{100 * result['accuracy']:.1f}%" in table


@pytest.mark.timeout(600)
def test_local_copies_end_to_end(tiny_policy_path, tmp_path, offline):
    data_dir = tmp_path / "data"
    for name in ("mathvista", "mathverse"):
        write_local_copy(name, data_dir)
    out = tmp_path / "out"
    summary = run_eval(
        "mathvista,mathverse", tiny_policy_path, limit=2, data_dir=data_dir, batch_size=2, out=out,
        max_new_tokens=8, console=_console(),
    )
    assert list(summary["benchmarks"]) == ["mathvista", "mathverse"]
    for name in ("mathvista", "mathverse"):
        result = summary["benchmarks"][name]
        assert result["n"] == 2 and result["source"] == f"local copy {data_dir / name}"
        samples = _samples(out / f"samples_{name}.jsonl")
        assert len(samples) == 2 and all(set(s) == SAMPLE_KEYS for s in samples)
        assert all(s["prompt"].startswith("<image>") for s in samples)
    assert [s["gold"] for s in _samples(out / "samples_mathvista.jsonl")] == ["tokyo", "1.45"]
    assert summary["model_path"] == tiny_policy_path and summary["data_dir"] == str(data_dir)


@pytest.mark.timeout(600)
def test_separate_calls_into_one_folder_add_up_when_measured_alike(tiny_policy_path, tmp_path, offline):
    """`mssr eval --benchmarks mathvista` then `--benchmarks mathverse` into one folder: one summary with both (what
    `mssr ablate --eval` and `mssr compare` read). Measured otherwise (another --limit), the earlier one is replaced,
    saying so."""
    data_dir = tmp_path / "data"
    for name in ("mathvista", "mathverse"):
        write_local_copy(name, data_dir)
    out = tmp_path / "out"
    common = dict(data_dir=data_dir, batch_size=2, out=out, max_new_tokens=8)
    first = run_eval("mathvista", tiny_policy_path, limit=2, console=_console(), **common)
    second = run_eval("mathverse", tiny_policy_path, limit=2, console=_console(), **common)
    saved = json.loads((out / "summary.json").read_text())
    assert saved == second and list(saved["benchmarks"]) == ["mathvista", "mathverse"]
    assert saved["benchmarks"]["mathvista"] == first["benchmarks"]["mathvista"]
    assert saved["mean_accuracy"] == pytest.approx(
        (saved["benchmarks"]["mathvista"]["accuracy"] + saved["benchmarks"]["mathverse"]["accuracy"]) / 2)
    console = _console()
    other = run_eval("mathverse", tiny_policy_path, limit=1, console=console, **common)
    assert list(other["benchmarks"]) == ["mathverse"] and other["benchmarks"]["mathverse"]["n"] == 1
    assert json.loads((out / "summary.json").read_text()) == other
    assert "replaced its results on mathvista (measured with other limit: limit=2)" in console.file.getvalue()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_run_folder_writes_into_the_run_and_its_wandb(tiny_policy_path, tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from mssr_cli.config.compose import compose

    monkeypatch.setenv("WANDB_MODE", "offline")
    run = tmp_path / "mssr__digits__tiny__s0__20260101-000000"
    shutil.copytree(tiny_policy_path, run / "model")
    (run / "config.yaml").write_text(OmegaConf.to_yaml(compose([])))
    (run / "wandb").mkdir()
    summary = run_eval(["digits"], str(run), limit=4, max_new_tokens=12, console=_console())
    assert summary["run"] == str(run) and summary["model_path"] == str(run / "model")
    assert (run / "eval" / "summary.json").is_file() and (run / "eval" / "samples_digits.jsonl").is_file()
    run_id = run.name.replace("__", "-")[-64:]
    assert any(run_id in p.name for p in (run / "wandb").iterdir()), list((run / "wandb").iterdir())


def test_unknown_benchmark_fails_before_anything_loads(monkeypatch):
    monkeypatch.setattr(runner, "load_tasks", _must_not_run)
    with pytest.raises(UnknownBenchmarkError, match=r"unknown benchmark 'mathvistaa'; valid names: digits, mathvista, "):
        run_eval(["digits", "mathvistaa"], "tiny")


def test_missing_data_fails_before_the_model_loads(tmp_path, monkeypatch, offline):
    monkeypatch.setattr(runner, "_load_model", _must_not_run)
    with pytest.raises(BenchmarkDataError, match=r"^wemath: no data: no folder .* --local-dir .*wemath$"):
        run_eval(["digits", "wemath"], "tiny", data_dir=tmp_path, out=tmp_path / "out", console=_console())


def test_backend_errors(monkeypatch):
    monkeypatch.setattr(runner, "load_tasks", _must_not_run)
    with pytest.raises(BackendUnavailableError, match="unknown backend 'trt'; valid backends: hf, vllm"):
        run_eval(["digits"], "tiny", backend="trt")
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(BackendUnavailableError, match=r"needs vLLM, which is not installed: pip install 'mssr-cli\[vllm\]'"):
            run_eval(["digits"], "tiny", backend="vllm")


def test_model_that_is_not_a_model(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "load_tasks", _must_not_run)
    (tmp_path / "notes").mkdir()
    with pytest.raises(ModelLoadError, match="neither a run folder"):
        run_eval(["digits"], str(tmp_path / "notes"))


def test_unloadable_hub_id_is_one_line(tmp_path, offline):
    with pytest.raises(ModelLoadError) as info:
        run_eval(["digits"], "no-such-org/no-such-model", limit=1, out=tmp_path, console=_console())
    assert "\n" not in str(info.value) and "cannot load --model no-such-org/no-such-model" in str(info.value)


def _must_not_run(*args, **kwargs):
    raise AssertionError("should have failed earlier")


# --- the optional judge, against a local stub of an OpenAI-compatible server ------------------


class _Stub(BaseHTTPRequestHandler):
    answer = "B"
    bodies: list = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Stub.bodies.append((self.path, body))
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": _Stub.answer}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def do_GET(self):  # noqa: N802
        reply = json.dumps({"object": "list", "data": [{"id": "stub-judge", "object": "model"}]}).encode()
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture()
def judge_url():
    server = HTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Stub.bodies.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_judge_extracts_only_what_the_rules_cannot(judge_url):
    from mssr_cli.evaluation.judge import Judge

    judge = Judge(judge_url)
    doc = {"question_type": "multi-choice", "answer": "B", "question": "Choices:\nA:2\nB:4", "query_cot": "Q"}
    mathverse = BENCHMARKS["mathverse"]
    assert mathverse.grade(doc, "I believe the second one, four.").correct is False  # rules: nothing
    graded = mathverse.grade(doc, "I believe the second one, four.", judge)
    assert graded.extracted == "B" and graded.correct
    path, body = _Stub.bodies[-1]
    assert path == "/v1/chat/completions" and "the second one, four" in body["messages"][0]["content"]
    assert body["model"] == "stub-judge" and body["temperature"] == 0
    assert mathverse.grade(doc, r"\boxed{A}", judge).correct is False
    assert judge.calls == 1  # a response with an answer never reaches the judge


def test_judge_outage_counts_as_no_answer():
    from mssr_cli.evaluation.judge import Judge

    judge = Judge("http://127.0.0.1:9/v1", timeout=2)
    assert judge("q", "r") is None and judge.failures == 1


@pytest.mark.timeout(600)
def test_run_eval_with_judge(tiny_policy_path, tmp_path, judge_url, offline):
    write_local_copy("hallusionbench", tmp_path / "data")
    _Stub.answer = "yes"
    summary = run_eval(
        ["hallusionbench"], tiny_policy_path, limit=2, data_dir=tmp_path / "data", out=tmp_path / "out",
        max_new_tokens=4, judge_url=judge_url, console=_console(),
    )
    result = summary["benchmarks"]["hallusionbench"]
    samples = _samples(tmp_path / "out" / "samples_hallusionbench.jsonl")
    assert result["judge_calls"] == len(_Stub.bodies) <= 2
    assert all(s["extracted"] is not None for s in samples)  # the rules' answer or the judge's "yes"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_lm_eval_model_path_matches_ours(tiny_policy_path):
    # The vllm backend drives lm-eval's generate_until; hf-multimodal exercises that code path here.
    from lm_eval.models.hf_vlms import HFMultimodalLM

    from mssr_cli.config.compose import compose
    from mssr_cli.data.digits import load_digits_split
    from mssr_cli.evaluation.generation import generate_hf, generate_lm_eval
    from mssr_cli.models.loading import load_policy

    cfg = compose([])
    model, processor = load_policy(cfg.model, cfg.data)
    docs = load_digits_split("validation", limit=8)
    prompts = [BENCHMARKS["digits"].prompt(d) for d in docs]
    images = [BENCHMARKS["digits"].images(d) for d in docs]
    ours = generate_hf(model, processor, prompts, images, batch_size=4, max_new_tokens=12)
    lm = HFMultimodalLM(pretrained=tiny_policy_path, batch_size=4, device="cpu", dtype="float32")
    assert generate_lm_eval(lm, prompts, images, max_new_tokens=12) == ours


def test_benchmark_lists():
    from mssr_cli.evaluation.benchmarks import parse_benchmarks

    assert parse_benchmarks("mathvista, mathverse,mathvista") == ["mathvista", "mathverse"]
    assert parse_benchmarks(["digits"]) == ["digits"]
    with pytest.raises(UnknownBenchmarkError, match="no benchmark given"):
        parse_benchmarks(" , ")


@pytest.mark.parametrize(("option", "kwargs"), [("--limit", {"limit": 0}), ("--batch-size", {"batch_size": 0})])
def test_bad_numbers_are_refused(option, kwargs, monkeypatch):
    monkeypatch.setattr(runner, "load_tasks", _must_not_run)
    with pytest.raises(ValueError, match=f"{option} must be at least 1"):
        run_eval(["digits"], "tiny", **kwargs)


@pytest.mark.timeout(600)
def test_sampled_evaluation_repeats(tiny_policy_path, tmp_path):
    responses = []
    for attempt in range(2):
        run_eval(["digits"], tiny_policy_path, limit=6, out=tmp_path / str(attempt), max_new_tokens=8,
                 temperature=1.0, console=_console())
        responses.append([s["response"] for s in _samples(tmp_path / str(attempt) / "samples_digits.jsonl")])
    assert responses[0] == responses[1]
