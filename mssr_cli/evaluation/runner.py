"""``mssr eval``: a model on the benchmarks, scored judge-free, with a table, a summary and per-sample logs.

Documents, prompts and gold answers come from the lm-eval tasks shipped in ``tasks/`` (the same
ones ``lm_eval --include_path`` runs); generation is ours (``hf``) or lm-eval's ``vllm-vlm``;
scoring is ``Benchmark.grade`` (a training grader: math-verify's by default, the paper recipes'
mathruler with ``grader="mathruler"``). Every benchmark's data is located before
the model loads, so a missing local copy fails in seconds, not after a model download.

Outputs in ``out`` (default ``<run>/eval/`` for a run folder):
    summary.json              settings (the grader too), and per benchmark n, correct, accuracy, seconds, source (with
                              --judge-url: the judge's calls, failures and skipped items, overall and
                              per benchmark; its URL without credentials)
    samples_<benchmark>.jsonl one line per item: id, prompt, response, extracted, gold, correct (and
                              judge: answered | none | failed | skipped, for the items it was asked about)
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from mssr_cli.evaluation.benchmarks import BENCHMARKS, parse_benchmarks
from mssr_cli.fileio import write_text_atomic
from mssr_cli.evaluation.errors import ModelLoadError
from mssr_cli.evaluation.generation import check_backend
from mssr_cli.evaluation.judge import DEFAULT_TIMEOUT as JUDGE_TIMEOUT
from mssr_cli.secrets import redact

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
CHUNK_BATCHES = 8  # batches of documents decoded at once: bounded memory on large benchmarks
LM_EVAL_CHUNK = 512  # documents handed to vLLM at once (it batches them continuously)


# what a score depends on: benchmarks of an earlier `mssr eval` into the same folder are kept when these match
SAME_MEASUREMENT = ("model_path", "backend", "limit", "data_dir", "max_new_tokens", "temperature", "judge_url",
                    "grader")
BEFORE_GRADER = {"grader": "math_verify"}  # summaries written before --grader existed were graded by math-verify


def merge_earlier(path: Path, summary: dict, console) -> dict:
    """``summary`` plus the benchmarks of the summary.json already at ``path`` that this call did not evaluate, when
    that one measured the same way (``SAME_MEASUREMENT``): `mssr eval --benchmarks a` then `--benchmarks b` leaves
    both in one summary (re-evaluated benchmarks are replaced). An earlier summary measured otherwise is replaced
    whole, and the line printed says which benchmarks went and why."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return summary
    kept = {name: result for name, result in (earlier.get("benchmarks") or {}).items()
            if name not in summary["benchmarks"]}
    if not kept:
        return summary
    earlier = {**BEFORE_GRADER, **earlier}
    changed = [key for key in SAME_MEASUREMENT if earlier.get(key) != summary.get(key)]
    if changed:
        console.print(f"{path}: replaced its results on {', '.join(kept)} (measured with other "
                      f"{', '.join(changed)}: {', '.join(f'{k}={earlier.get(k)!r}' for k in changed)})",
                      markup=False, highlight=False, soft_wrap=True)
        return summary
    benchmarks = {**kept, **summary["benchmarks"]}
    accuracies = [r["accuracy"] for r in benchmarks.values()]
    return {**summary, "benchmarks": benchmarks, "mean_accuracy": sum(accuracies) / len(accuracies)}


def task_name(benchmark: str) -> str:
    return f"mssr_{benchmark}"


@dataclass
class ModelTarget:
    """What ``--model`` names, resolved without loading anything heavy."""

    label: str  # as given
    path: str  # the folder or Hub id to load (for presets: filled in when built)
    run_dir: Path | None = None  # set when the model is a run folder's model/
    model_cfg: object = None  # for mssr_cli.models.loading.load_policy
    data_cfg: object = None  # only for building the tiny preset
    data_options: dict = field(default_factory=dict)  # digits' image_size / num_val (a run's data.*)


def resolve_model(model: str) -> ModelTarget:
    """A run folder (its ``model/``), a Hugging Face model folder, a preset name, or else a Hub id.

    A Hub id (also a preset's) is checked to load here in seconds (``ensure_loadable``): offline and
    not in the Hugging Face cache fails before any data or weights load."""
    from mssr_cli.config.paths import group_options

    if not model.strip():
        raise ModelLoadError(f"--model is empty; {_MODEL_CHOICES.format(presets=', '.join(group_options('model')))}")
    folder = Path(model).expanduser()
    if folder.is_dir():
        if _is_model_folder(folder / "model"):
            return _run_target(model, folder)
        if _is_model_folder(folder):
            return ModelTarget(model, str(folder), model_cfg=_path_cfg(str(folder)))
        raise ModelLoadError(
            f"--model {model}: a folder, but neither a run folder (no model/config.json) nor a model folder (no config.json)"
        )
    if model in group_options("model"):
        from mssr_cli.config.compose import compose

        cfg = compose([f"model={model}"])
        if cfg.model.name_or_path:
            _ensure_loadable(cfg.model.name_or_path, f"cannot load --model {model} ({cfg.model.name_or_path})")
        data = {"image_size": cfg.data.image_size, "num_val": cfg.data.num_val}
        return ModelTarget(model, cfg.model.name_or_path or "", model_cfg=cfg.model, data_cfg=cfg.data, data_options=data)
    _ensure_loadable(model, f"cannot load --model {model}")
    return ModelTarget(model, model, model_cfg=_path_cfg(model))  # a Hub id: loads only with network or cache


_MODEL_CHOICES = "give a run folder, a model folder, a preset ({presets}) or a Hub id"


def default_model(runs_root: Path | None, console) -> str:
    """No ``--model``: the newest finished run under ``runs_root`` (default ``logging.runs_root``), said in
    one line; ModelLoadError naming ``--model`` when there is none."""
    from mssr_cli.config.paths import group_options
    from mssr_cli.config.schema import LoggingConfig
    from mssr_cli.runs.finished import newest_finished_run

    root = Path(runs_root) if runs_root is not None else Path(LoggingConfig.runs_root)
    run = newest_finished_run(root)
    if run is None:
        where = (f"no finished run in {root} (one with model/ and summary.json, not running)" if root.is_dir()
                 else f"no runs folder {root}")
        presets = ", ".join(group_options("model"))
        raise ModelLoadError(f"no --model given and {where}: pass --model M, a run folder, a model folder, "
                             f"a preset ({presets}) or a Hub id (or --runs-root DIR)")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.finished))
    console.print(f"evaluating the newest finished run: {run.path} (finished {when})", markup=False, highlight=False,
                  soft_wrap=True)
    return str(run.path)


def _ensure_loadable(name_or_path: str, label: str) -> None:
    from mssr_cli.config.paths import group_options
    from mssr_cli.models.loading import ModelNotFoundError, ensure_loadable, looks_like_path

    try:
        ensure_loadable(name_or_path, label, pass_folder="--model DIR")
    except ModelNotFoundError as err:
        choices = f" ({_MODEL_CHOICES.format(presets=', '.join(group_options('model')))})" if looks_like_path(name_or_path) else ""
        raise ModelLoadError(f"{err}{choices}") from None


def _path_cfg(path: str, dtype: str = "auto", min_pixels=None, max_pixels=None, trust_remote_code: bool = False):
    return SimpleNamespace(name_or_path=path, dtype=dtype, min_pixels=min_pixels, max_pixels=max_pixels, freeze_vision=False,
                           attn_implementation="auto", trust_remote_code=trust_remote_code)


def _is_model_folder(folder: Path) -> bool:
    """A Hugging Face model, or a PEFT adapter (a LoRA run's model/: transformers loads it over its base)."""
    return (folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()


def _run_target(label: str, run_dir: Path) -> ModelTarget:
    model_dir = str(run_dir / "model")
    config = run_dir / "config.yaml"
    if not config.is_file():
        return ModelTarget(label, model_dir, run_dir=run_dir, model_cfg=_path_cfg(model_dir))
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(config)
    model_cfg = _path_cfg(
        model_dir, cfg.model.get("dtype", "auto"), cfg.model.get("min_pixels"), cfg.model.get("max_pixels"),
        cfg.model.get("trust_remote_code", False) is True,  # as the run loaded it
    )
    data = {k: cfg.data[k] for k in ("image_size", "num_val") if k in cfg.get("data", {})}
    return ModelTarget(label, model_dir, run_dir=run_dir, model_cfg=model_cfg, data_options=data)


def _default_out(target: ModelTarget) -> Path:
    if target.run_dir is not None:
        return target.run_dir / "eval"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", target.label.rstrip("/").split("/")[-1]) or "model"
    return Path("runs") / f"eval__{slug}__{time.strftime('%Y%m%d-%H%M%S')}"


def load_tasks(names: list[str], data_dir: Path | None, data_options: dict) -> dict:
    """{benchmark: lm-eval Task} from the shipped YAMLs; raises BenchmarkDataError on missing data."""
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # "custom kwargs can be passed..." notices
    metadata = {"data_dir": str(data_dir) if data_dir is not None else None, **data_options}
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata=metadata)
    return {name: manager.load([task_name(name)])["tasks"][task_name(name)] for name in names}


def _load_model(target: ModelTarget, console):
    from transformers.utils import logging as hf_logging

    from mssr_cli.config.paths import group_options
    from mssr_cli.models.loading import load_policy

    hf_logging.disable_progress_bar()  # our own table and messages replace its weight-loading bars
    try:
        model, processor = load_policy(target.model_cfg, target.data_cfg, console=console)
    except Exception as err:  # not found, no network, not a VLM: one line, with what --model accepts
        from mssr_cli.models.loading import ModelNotFoundError

        if isinstance(err, ModelNotFoundError):  # already one line naming the fix
            raise ModelLoadError(f"cannot load --model {target.label}: {err}") from None
        detail = " ".join(str(err).split())[:200] or type(err).__name__
        raise ModelLoadError(
            f"cannot load --model {target.label}: {detail} (give a run folder, a model folder, a preset "
            f"({', '.join(group_options('model'))}) or a Hub id with network)"
        ) from None
    import torch

    if torch.cuda.is_available():
        model.to("cuda")
    target.path = target.path or str(getattr(model, "name_or_path", "") or model.config._name_or_path)
    return model, processor


def run_eval(
    benchmarks: list[str],
    model: str | None,
    limit: int | None = None,
    data_dir: Path | None = None,
    batch_size: int = 16,
    backend: str = "hf",
    out: Path | None = None,
    max_new_tokens: int = 1024,
    temperature: float = 0.0,
    judge_url: str | None = None,
    judge_timeout: float = JUDGE_TIMEOUT,
    console=None,
    runs_root: Path | None = None,
    grader: str = "math_verify",
) -> dict:
    """Evaluate ``model`` on ``benchmarks``; prints a table, writes the outputs, returns the summary.

    ``benchmarks``: names or one comma-separated string. ``limit``: the first N items of each.
    ``batch_size``: prompts per ``generate`` call (hf; vLLM batches continuously). Greedy at
    ``temperature`` 0, else sampled with a fixed seed. ``judge_timeout``: seconds one judge call may take
    (the judge is given up on after a few failures in a row; summary.json counts its calls and failures).
    ``model`` None: the newest finished run under ``runs_root`` (default: ``runs``), said in one line.
    ``grader``: ``math_verify`` (each benchmark's rules) or ``mathruler`` (the paper recipes' reward:
    the last box alone); recorded in summary.json, whose benchmarks add up only under one grader.

    Raises an ``EvalError`` subclass (one-line message) for an unknown benchmark or backend, data
    that is neither in ``data_dir`` nor on the Hub, or a model that cannot be loaded."""
    names = parse_benchmarks(benchmarks)
    check_backend(backend)
    for option, value in (("--limit", limit), ("--batch-size", batch_size), ("--max-new-tokens", max_new_tokens)):
        if value is not None and value < 1:
            raise ValueError(f"{option} must be at least 1, got {value}")
    if temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {temperature}")
    if not judge_timeout > 0:
        raise ValueError(f"--judge-timeout must be > 0 seconds, got {judge_timeout}")
    from mssr_cli.rewards.grader import grader_problem

    if problem := grader_problem(grader):
        raise ValueError(f"--grader {grader}: {problem}")
    if console is None:
        from mssr_cli.console import stdout_console

        console = stdout_console()
    started = time.time()
    if model is None:
        model = default_model(runs_root, console)
    target = resolve_model(model)
    out = Path(out) if out is not None else _default_out(target)

    tasks = load_tasks(names, data_dir, target.data_options)  # fails here, fast, if data is missing
    from mssr_cli.evaluation.sources import loaded_from, most_images

    sources = {name: loaded_from.get(name, "?") for name in names}

    from mssr_cli.cpu_threads import configure_cpu_threads

    configure_cpu_threads(None)
    if backend == "hf":
        policy = _load_model(target, console)
        lm = None
    else:
        if target.model_cfg is not None and not target.path:  # an unbuilt preset: build it, then hand vLLM the folder
            from mssr_cli.models.loading import resolve_model_path

            target.path = resolve_model_path(target.model_cfg, target.data_cfg, console=console)
        from mssr_cli.evaluation.generation import vllm_model

        max_images = max(most_images.get(name, 1) for name in names)  # rows with a list of images: all of them
        policy, lm = None, vllm_model(target.path, max_new_tokens, max_images)

    judge = None
    if judge_url:
        from mssr_cli.evaluation.judge import Judge

        judge = Judge(judge_url, timeout=judge_timeout,
                      warn=lambda message: console.print(f"warning: {message}", style="yellow", markup=False, highlight=False))
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in names:
        results[name] = _evaluate_one(
            name, tasks[name], policy, lm, out, limit, batch_size, max_new_tokens, temperature, judge, console, grader
        )
        results[name]["source"] = sources[name]

    accuracies = [r["accuracy"] for r in results.values()]
    summary = {
        "model": model,
        "model_path": target.path,
        "run": str(target.run_dir) if target.run_dir is not None else None,
        "backend": backend,
        "limit": limit,
        "data_dir": str(data_dir) if data_dir is not None else None,
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "grader": grader,
        "judge_url": redact(judge_url) if judge_url else None,  # a URL may carry a key (user:KEY@, ?key=)
        "judge": judge.stats() if judge is not None else None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 2),
        "mean_accuracy": sum(accuracies) / len(accuracies),
        "benchmarks": results,
    }
    summary = merge_earlier(out / "summary.json", summary, console)
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    console.print(results_table(summary))
    if judge is not None:
        console.print(f"Judge: {judge.calls} calls, {judge.failures} failed, {judge.skipped} items not asked "
                      f"(failed and not asked: graded by the rules alone)", markup=False, highlight=False)
    console.print(f"Samples and summary.json in {out}")
    if target.run_dir is not None:
        log_to_run_wandb(target.run_dir, summary, console)
    return summary


def _evaluate_one(name, task, policy, lm, out, limit, batch_size, max_new_tokens, temperature, judge, console,
                  grader="math_verify") -> dict:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mssr_cli.evaluation.generation import generate_hf, generate_lm_eval

    benchmark = BENCHMARKS[name]
    docs = task.eval_docs
    n = len(docs) if limit is None else min(limit, len(docs))
    started, correct = time.time(), 0
    judge_before = (judge.calls, judge.failures, judge.skipped) if judge is not None else None
    chunk = max(batch_size, 1) * CHUNK_BATCHES if lm is None else LM_EVAL_CHUNK
    samples_path = out / f"samples_{name}.jsonl"
    partial = out / f".samples_{name}.jsonl.partial"  # renamed into place once every item is written
    with partial.open("w") as samples, Progress(
        TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console,
        transient=True, disable=not console.is_terminal,
    ) as progress:
        bar = progress.add_task(name, total=n)
        for start in range(0, n, chunk):
            rows = [docs[i] for i in range(start, min(start + chunk, n))]
            prompts = [task.doc_to_text(doc) for doc in rows]
            images = [task.doc_to_image(doc) for doc in rows]
            if lm is None:
                model, processor = policy
                responses = generate_hf(
                    model, processor, prompts, images, batch_size=batch_size, max_new_tokens=max_new_tokens,
                    temperature=temperature, on_batch=lambda k: progress.advance(bar, k),
                )
            else:
                responses = generate_lm_eval(lm, prompts, images, max_new_tokens=max_new_tokens, temperature=temperature)
                progress.advance(bar, len(rows))
            for doc, prompt, response in zip(rows, prompts, responses, strict=True):
                if judge is not None:
                    judge.outcome = None
                graded = benchmark.grade(doc, response, judge, grader)
                correct += graded.correct
                line = {
                    "id": benchmark.doc_id(doc),
                    "prompt": prompt,
                    "response": response,
                    "extracted": graded.extracted,
                    "gold": task.doc_to_target(doc),
                    "correct": graded.correct,
                }
                if judge is not None and judge.outcome is not None:  # failed/skipped: graded by the rules alone
                    line["judge"] = judge.outcome
                samples.write(json.dumps(line, ensure_ascii=False) + "\n")
    os.replace(partial, samples_path)
    result = {
        "n": n,
        "correct": int(correct),
        "accuracy": correct / n if n else 0.0,
        "seconds": round(time.time() - started, 2),
        "samples": samples_path.name,
    }
    if judge is not None:  # this benchmark's share (one judge serves every benchmark)
        result["judge_calls"], result["judge_failures"], result["judge_skipped"] = (
            now - before for now, before in zip((judge.calls, judge.failures, judge.skipped), judge_before, strict=True))
    return result


def results_table(summary: dict):
    from rich.table import Table

    table = Table(title=f"mssr eval: {summary['model']}")
    table.add_column("benchmark")
    table.add_column("n", justify="right")
    table.add_column("accuracy", justify="right")
    table.add_column("time", justify="right")
    for name, result in summary["benchmarks"].items():
        table.add_row(name, str(result["n"]), f"{100 * result['accuracy']:.1f}%", f"{result['seconds']:.1f} s")
    return table


def log_to_run_wandb(run_dir: Path, summary: dict, console) -> None:
    """Add ``eval/<benchmark>/accuracy`` to the run's own W&B run (offline unless the run was online)."""
    if not (run_dir / "wandb").is_dir() or not (run_dir / "config.yaml").is_file():
        return
    try:
        from omegaconf import OmegaConf

        from mssr_cli.runs.folder import wandb_id
        from mssr_cli.runs.wandb_run import read_record

        logging_cfg = OmegaConf.load(run_dir / "config.yaml").get("logging", {})
        # the W&B run the training logged to (under `wandb agent`: the agent's, online), else the folder's id
        record = read_record(run_dir) or {}
        mode = record.get("mode") or logging_cfg.get("wandb", "offline")
        if mode == "disabled":
            return
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        run = wandb.init(
            project=record.get("project") or logging_cfg.get("project"),
            entity=record.get("entity") or logging_cfg.get("entity"),
            id=record.get("id") or wandb_id(run_dir.name),  # the id mssr train gave the run
            resume="allow",
            dir=str(run_dir),
            mode=mode,
            # no system metadata: the run's own start recorded it, and this command line may hold the judge's key
            settings=wandb.Settings(console="off", x_disable_stats=True, x_disable_meta=True),
        )
        run.summary.update({f"eval/{name}/accuracy": r["accuracy"] for name, r in summary["benchmarks"].items()})
        run.finish()
    except Exception as err:  # the files on disk are the record; W&B is the live view
        console.print(f"warning: could not log to the run's W&B run: {err}", markup=False)
