"""No API key or token reaches a run folder: config, meta.json, metrics, checkpoints, the W&B run, eval outputs.

The end-to-end test trains 2 steps and evaluates with a judge whose URL carries a password, every key
set in the environment to a unique fake value, then searches every byte under the run folder for them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from mssr_cli.secrets import MASK, redact, redact_data
from test_eval_data import write_local_copy

FAKE = {  # unique, so a hit can only be this test's key
    "WANDB_API_KEY": "fakewandbkey" + "0123456789abcdef" * 2,
    "OPENAI_API_KEY": "sk-fake-openai-7c41d2e9b8",
    "HF_TOKEN": "hf_fakeHubToken93kq1xz",
    "HUGGING_FACE_HUB_TOKEN": "hf_fakeLegacyToken55mwp",
}
URL_PASSWORD = "fakeUrlPassword4417"


def test_redact_masks_env_values_url_passwords_and_key_parameters(monkeypatch):
    for name, value in FAKE.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MY_SERVICE_TOKEN", "another-fake-token-1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a setting, not a key: "1" must stay readable
    # named like a credential but too short to be a key (MIN_SECRET_CHARS = 8): a setting, kept readable
    monkeypatch.setenv("DEBUG_TOKEN", "1")
    monkeypatch.setenv("RETRY_TOKEN", "sevench")  # 7 characters: kept
    monkeypatch.setenv("BATCH_TOKEN", "eightchr")  # 8: masked
    text = (f"key {FAKE['WANDB_API_KEY']} and {FAKE['HF_TOKEN']}; http://judge:{URL_PASSWORD}@127.0.0.1:8000/v1 "
            f"https://host/v1?api_key=abc123&model=m&token=xyz; another-fake-token-1; step=1 lr=1e-6 sevench eightchr")
    masked = redact(text)
    for secret in [*FAKE.values(), URL_PASSWORD, "abc123", "xyz", "another-fake-token-1"]:
        if secret in text:
            assert secret not in masked, secret
    assert f"http://{MASK}@127.0.0.1:8000/v1" in masked and "model=m" in masked
    assert masked.endswith(f"step=1 lr=1e-6 sevench {MASK}"), masked
    assert redact_data({"a": [f"x {FAKE['OPENAI_API_KEY']}", 3, None], "b": ("1",)}) == {"a": [f"x {MASK}", 3, None], "b": ("1",)}
    assert redact("train.max_steps=2 model=tiny http://127.0.0.1:8000/v1") == "train.max_steps=2 model=tiny http://127.0.0.1:8000/v1"


def test_meta_json_and_wandb_config_mask_secrets(tmp_path, base_cfg, monkeypatch):
    """What a command line or a config value may carry (a URL's password, a key pasted in) stays out of
    meta.json and the W&B config; config.yaml keeps the config as given (resume reads it)."""
    import wandb
    from omegaconf import OmegaConf

    from mssr_cli.training import runner
    from mssr_cli.runs.folder import RunFolder

    monkeypatch.setenv("HF_TOKEN", FAKE["HF_TOKEN"])
    host = f"http://judge:{URL_PASSWORD}@10.0.0.1"
    overrides = [f"train.vllm_server_host={host}", "train.max_steps=2"]
    monkeypatch.setattr(sys, "argv", ["mssr", "train", *overrides, f"data.hub_id=x?token={FAKE['HF_TOKEN']}"])
    cfg = OmegaConf.merge(base_cfg, {"train": {"vllm_server_host": host}, "data": {"hub_id": FAKE["HF_TOKEN"]}})
    folder = RunFolder(tmp_path / "run")
    folder.write_start(cfg, overrides)
    meta = (tmp_path / "run" / "meta.json").read_text()
    assert URL_PASSWORD not in meta and FAKE["HF_TOKEN"] not in meta and "train.max_steps=2" in meta

    seen = {}
    monkeypatch.setattr(wandb, "init", lambda **kwargs: seen.update(kwargs))
    runner._init_wandb(OmegaConf.merge(cfg, {"logging": {"wandb": "offline"}}), folder)
    config = json.dumps(seen["config"])
    assert URL_PASSWORD not in config and FAKE["HF_TOKEN"] not in config
    assert seen["config"]["train"]["vllm_server_host"] == f"http://{MASK}@10.0.0.1"  # masked, not dropped


class _Judge(BaseHTTPRequestHandler):
    """An OpenAI-compatible stub that records the Authorization header it was sent."""

    authorizations: list = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers["Content-Length"]))
        _Judge.authorizations.append(self.headers.get("Authorization"))
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": "3"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def do_GET(self):  # noqa: N802
        reply = json.dumps({"data": [{"id": "stub"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def _mssr(args: list[str], env: dict, timeout: int) -> subprocess.CompletedProcess:
    code = "import sys; from mssr_cli.cli import app; sys.argv = ['mssr', *sys.argv[1:]]; app()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_no_key_is_written_anywhere_in_the_run_folder(tmp_path, tiny_policy_path):
    env = {**os.environ, **FAKE, "WANDB_MODE": "offline"}
    run = tmp_path / "run"
    train = ["train", "train.max_steps=2", "train.eval_every=2", "train.save_every=2", "train.rollouts_per_step=8",
             "data.val_limit=8", "logging.wandb=offline", "logging.progress=false", "--run-dir", str(run)]
    out = _mssr(train, env, 600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert list((run / "wandb").glob("offline-run-*")) and list((run / "checkpoints").glob("checkpoint-*"))

    server = HTTPServer(("127.0.0.1", 0), _Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Judge.authorizations.clear()
    judge_url = f"http://judge:{URL_PASSWORD}@127.0.0.1:{server.server_address[1]}/v1?api_key={URL_PASSWORD}"
    write_local_copy("hallusionbench", tmp_path / "data")  # digits is graded strictly: it never asks a judge
    try:  # one new token: no answer the rules can find, so the items go to the judge (and its key is sent)
        out = _mssr(["eval", "--benchmarks", "hallusionbench", "--data-dir", str(tmp_path / "data"), "--model", str(run),
                     "--limit", "2", "--max-new-tokens", "1", "--judge-url", judge_url], env, 300)
    finally:
        server.shutdown()
        server.server_close()
    assert out.returncode == 0, out.stderr[-3000:]
    assert _Judge.authorizations and set(_Judge.authorizations) == {f"Bearer {FAKE['OPENAI_API_KEY']}"}  # the key was in use
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert summary["judge"]["calls"] >= 1 and summary["judge_url"].startswith(f"http://{MASK}@127.0.0.1")

    secrets = {name: value.encode() for name, value in {**FAKE, "url password": URL_PASSWORD}.items()}
    files = [p for p in run.rglob("*") if p.is_file()]
    assert len(files) > 20 and any(p.suffix == ".wandb" for p in files)  # the W&B run's binary log is searched too
    leaks = [f"{name} in {p.relative_to(run)}" for p in files for name, secret in secrets.items()
             if secret in p.read_bytes()]
    assert not leaks, leaks
    for stream in (out.stdout, out.stderr):  # nor printed (the console is often logged)
        assert not any(value in stream for value in [*FAKE.values(), URL_PASSWORD])


def test_trust_remote_code_is_off_unless_asked(tiny_policy_path, base_cfg, monkeypatch):
    """Every from_pretrained of a policy load gets trust_remote_code=False by default, True only when set."""
    import transformers
    from omegaconf import OmegaConf

    from mssr_cli.models.loading import load_policy

    seen: list = []
    for cls in (transformers.AutoProcessor, transformers.AutoModelForImageTextToText):
        original = cls.from_pretrained.__func__

        def spy(klass, *args, _original=original, **kwargs):
            seen.append((klass.__name__, kwargs.get("trust_remote_code", "absent")))
            kwargs["trust_remote_code"] = False  # the tiny model needs no remote code either way
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))

    cfg = OmegaConf.merge(base_cfg, {"model": {"name_or_path": tiny_policy_path}})
    load_policy(cfg.model, cfg.data)
    assert sorted(seen) == [("AutoModelForImageTextToText", False), ("AutoProcessor", False)]
    seen.clear()
    load_policy(OmegaConf.merge(cfg, {"model": {"trust_remote_code": True}}).model, cfg.data)
    assert sorted(seen) == [("AutoModelForImageTextToText", True), ("AutoProcessor", True)]


def test_no_other_code_loads_with_trust_remote_code():
    """The policy load is the one place that may pass trust_remote_code, and only from the config."""
    root = Path(__file__).resolve().parents[1] / "mssr_cli"
    hits = [f"{p.relative_to(root)}:{n}" for p in root.rglob("*.py")
            for n, line in enumerate(p.read_text().splitlines(), 1) if "trust_remote_code" in line]
    allowed = ("models/loading.py", "config/schema.py", "evaluation/runner.py", "training/trl_args.py",  # trl_args: TRL's loads
               "export.py")  # export: the base of a LoRA run, as the run loaded it
    assert hits and all(h.startswith(allowed) for h in hits), hits
    assert "trust_remote_code=True" not in (root / "models" / "loading.py").read_text()


def test_a_failed_batch_run_keeps_no_key_in_its_error_log(tmp_path, monkeypatch):
    """ablate/sweep keep a failed run's stderr in error.log: a key quoted there (here an override that
    happens to hold one) is masked."""
    from rich.console import Console

    from mssr_cli.experiments.batch import PlannedRun, run_batch

    key = "sk-fake-batch-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    runs = [PlannedRun("bad__s0", [f"train.lr={key}"], 1)]
    run_batch(runs, tmp_path / "abl", Console(record=True, width=200))
    log = (tmp_path / "abl" / "bad__s0" / "error.log").read_text()
    assert runs[0].status == "failed" and "train.lr" in log, log
    assert key not in log and MASK in log
    assert key not in (runs[0].error or "")
