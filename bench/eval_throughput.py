"""Throughput of `mssr eval` against lm-eval's stock `hf-multimodal` model, side by side in one run.

Same model, task (digits), limit, batch size and answer length for both; rounds alternate
(mssr, lm-eval, mssr, ...) so machine noise hits both alike. Each timing is a whole evaluation
call (model loading, prompting, generation, scoring), as a user runs it. Prints items per second
(median over rounds) and the ratio mssr / lm-eval. Goal: at least 1.2.

    .venv/bin/python bench/eval_throughput.py [--model tiny] [--limit 300] [--batch-size 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def model_path(model: str) -> str:
    if model != "tiny":
        return model
    from mssr_cli.config.compose import compose
    from mssr_cli.models.loading import resolve_model_path

    cfg = compose([])
    return str(resolve_model_path(cfg.model, cfg.data))


def time_mssr(model: str, limit: int, batch_size: int, max_new_tokens: int, out: Path) -> float:
    from rich.console import Console

    from mssr_cli.evaluation import run_eval

    started = time.perf_counter()
    run_eval(["digits"], model, limit=limit, batch_size=batch_size, max_new_tokens=max_new_tokens, out=out,
             console=Console(file=open(os.devnull, "w")))
    return time.perf_counter() - started


def time_lm_eval(path: str, limit: int, batch_size: int, max_new_tokens: int) -> float:
    import lm_eval
    from lm_eval.tasks import TaskManager

    from mssr_cli.evaluation import TASKS_DIR

    started = time.perf_counter()
    lm_eval.simple_evaluate(
        model="hf-multimodal", model_args=f"pretrained={path},dtype=float32", tasks=["digits"],
        task_manager=TaskManager(include_path=str(TASKS_DIR)), limit=limit, batch_size=batch_size,
        apply_chat_template=True, gen_kwargs=f"max_gen_toks={max_new_tokens}", device="cpu",
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    path = model_path(opts.model)
    mssr_s, lm_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(opts.rounds):
            mssr_s.append(time_mssr(path, opts.limit, opts.batch_size, opts.max_new_tokens, Path(tmp) / f"r{r}"))
            lm_s.append(time_lm_eval(path, opts.limit, opts.batch_size, opts.max_new_tokens))
    mssr_rate, lm_rate = opts.limit / statistics.median(mssr_s), opts.limit / statistics.median(lm_s)
    print(f"digits, {opts.limit} items, batch {opts.batch_size}, {opts.max_new_tokens} new tokens, {opts.rounds} rounds")
    print(f"{'evaluator':<28} {'median s':>9} {'items/s':>9}")
    print(f"{'mssr eval (hf)':<28} {statistics.median(mssr_s):>9.2f} {mssr_rate:>9.1f}")
    print(f"{'lm-eval hf-multimodal':<28} {statistics.median(lm_s):>9.2f} {lm_rate:>9.1f}")
    print(f"ratio mssr / lm-eval: {mssr_rate / lm_rate:.2f}")


if __name__ == "__main__":
    main()
