"""GPU check: everything a GPU changes, in one command of about 8 minutes on one H200 with no network.

The GPU machines have torch and transformers (2.11 / 5.17 when last seen) but not TRL, hydra,
datasets, lm-eval or math-verify, and no network: `make gpu-wheels` (here, with network) puts
the pinned wheels of what they lack into gpu_wheels/ (ignored by git; carry it along). Then,
from the repository root on the GPU machine, the one command:

    python3 bench/gpu_check.py --install-wheels gpu_wheels --out $OUT

which first runs, and prints, the two installs (both offline, neither touches torch or transformers):

    python3 -m pip install -q --no-index --no-deps --find-links gpu_wheels trl==1.16.0 ...   (every pin in GPU_WHEELS)
    python3 -m pip install -q --no-index --no-deps --no-build-isolation -e .

Sections, each ending in one PASS/FAIL line with its numbers (all of them also in
OUT/gpu_check.json; the children's output in OUT/children.log):

  environment    versions, the GPU, every module the check's paths import, math-verify's worker
  1 bf16         `mssr train algo=X train.max_steps=20 train.bf16=true logging.wandb=disabled` for
                 grpo, mvsr and mssr on the tiny model: exit 0, every step's loss and grad norm finite,
                 and every loss forward of the policy computed in bf16 on CUDA (the output dtype of its
                 last decoder MLP: TRL's fused log-probs read lm_head.weight, never calling lm_head)
  4 eval         `mssr eval --benchmarks digits` on the mssr run above, generating on the GPU
  2 step time    GRPO and MSSR side by side (ABBA rounds while the time budget lasts) at Qwen2.5-VL-3B
                 dimensions with random weights, HF generation, short completions; prints MSSR/GRPO
  3 memory       `mssr train ... --dry-run`'s estimate per device against torch.cuda.max_memory_allocated
                 of those runs: estimate, measured, ratio (FAIL outside --memory-tolerance, default 2x)

The real-dims model is built here (random weights, the tiny tokenizer, vocabulary and sizes of
Qwen/Qwen2.5-VL-3B-Instruct) into a private Hugging Face cache under --work, under the Hub id
the preset names, so the runs are `mssr train model=qwen25vl-3b data=digits ...` unchanged,
offline. Work files (7.5 GB of weights) go to --work, never to --out.

The project pins transformers>=5.20 but is installed with --no-deps: the machine's own
transformers is used (this whole check passed on CPU with transformers 5.17.0 and
huggingface_hub 1.33.0, the versions seen there).

Sizes are options so that tests/test_gpu_check.py runs every section on CPU in one to two minutes
(--dims small, 2 steps; what only CUDA can measure is reported as skipped). There,
--simulate-gpu-packages hides every installed package that the GPU machine lacks and
GPU_WHEELS does not carry, so a new import on these paths fails the test, not the GPU run.
Exit status: 1 if any section FAILs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPU_PYTHON = "3.12"  # python3 on the GPU machines (3.12.3 when last seen): the wheels are for it

# What the GPU machine lacks on the check's paths, pinned to the versions tested here, with every
# dependency of theirs that it lacks too (tests/test_gpu_check.py checks both). The one place the
# list lives: `make gpu-wheels` downloads exactly these, --install-wheels installs exactly these.
GPU_WHEELS = {
    # mssr train
    "trl": "1.16.0",
    "datasets": "5.2.0",
    "dill": "0.4.1",
    "multiprocess": "0.70.19",
    "hydra-core": "1.3.8",
    "omegaconf": "2.3.1",
    "antlr4-python3-runtime": "4.9.3",
    # the reward's equivalence check (math-verify's worker process)
    "math-verify": "0.9.0",
    "latex2sympy2-extended": "1.11.0",
    # the paper recipes' grader (reward.grader=mathruler) and what it imports without declaring it
    "mathruler": "0.1.0",
    "pylatexenc": "2.11",
    # mssr eval (lm-eval's tasks) and lm-eval's own requirements
    "lm-eval": "0.4.13",
    "evaluate": "0.4.6",
    "more-itertools": "11.2.1",
    "pytablewriter": "1.2.1",
    "dataproperty": "1.1.1",
    "mbstrdecoder": "1.1.5",
    "chardet": "6.0.0.post1",
    "pathvalidate": "3.3.1",
    "tabledata": "1.3.5",
    "tcolorpy": "0.1.7",
    "typepy": "1.3.5",
    "rouge-score": "0.1.2",
    "nltk": "3.10.4",
    "defusedxml": "0.7.1",
    "sqlitedict": "2.1.0",
    "word2number": "1.1",
    # `pip install --no-build-isolation -e .`: hatchling's editable wheel (force-include needs editables)
    "hatchling": "1.33.0",
    "editables": "0.6",
    "trove-classifiers": "2026.9.21.13",
}
BUILD_ONLY = {"hatchling", "editables", "trove-classifiers"}  # for the install, not imported by mssr
SDIST_ONLY = {"antlr4-python3-runtime", "rouge-score", "sqlitedict", "word2number"}  # PyPI has no wheel: built here
NOT_CARRIED = {  # mssr's requirements that the check does not need there, and why
    "wandb": "logging.wandb=disabled: mssr imports it only to log; transformers and accelerate only when installed",
    "submitit": "executor=slurm only (imported when a SLURM job is submitted or read); the check submits none",
}

# The GPU machine's Python packages (device README, KINDS.md, read 2026-11-17), for --simulate-gpu-packages.
GPU_MACHINE_PACKAGES = set("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader
lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl
meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja
numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13
nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())

ALGOS = ["grpo", "mvsr", "mssr"]
REAL_HUB_ID = "Qwen/Qwen2.5-VL-3B-Instruct"  # what model=qwen25vl-3b loads; built here under that id
MEMORY_TERMS = ("weights", "gradients", "optimizer", "reference", "activations", "logits", "total")
WORK_MARKER = ".mssr_gpu_check"  # --work is emptied only when this check wrote it
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")  # glibc wheels for the GPU machine


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


# --- children: the mssr commands run in fresh processes, observed from inside ----------------------


def _hide_missing_packages(names_file: str) -> None:
    """Make the packages named in the file unimportable, as on a machine without them."""
    hidden = json.loads(Path(names_file).read_text())
    modules, dists = set(hidden["modules"]), set(hidden["distributions"])

    class Filter:
        def __init__(self, finder):
            self.finder = finder

        def find_spec(self, fullname, path=None, target=None):
            if fullname.partition(".")[0] in modules:
                return None  # as if absent: importlib.util.find_spec() says None, import raises
            find = getattr(self.finder, "find_spec", None)
            return find(fullname, path, target) if find else None

        def find_distributions(self, *args, **kwargs):
            find = getattr(self.finder, "find_distributions", None)
            found = find(*args, **kwargs) if find else ()
            return (d for d in found if canonical(d.metadata["Name"] or "") not in dists)

        def invalidate_caches(self):
            if hasattr(self.finder, "invalidate_caches"):
                self.finder.invalidate_caches()

    sys.meta_path[:] = [Filter(f) for f in sys.meta_path]


def _imported_distributions() -> list[str]:
    from importlib import metadata

    owners = metadata.packages_distributions()
    return sorted({canonical(d) for name in list(sys.modules) for d in owners.get(name.partition(".")[0], [])})


def child_cli(record_path: str, cli_args: list[str]) -> None:
    """Run one `mssr` command; at exit write what was observed (memory, dtypes, devices, imports)."""
    import atexit

    observed: dict = {"forwards": {}, "param_dtypes": []}

    def record() -> None:
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            observed["max_memory_allocated"] = torch.cuda.max_memory_allocated()
            observed["max_memory_reserved"] = torch.cuda.max_memory_reserved()
            observed["device_name"] = torch.cuda.get_device_name()
        observed["distributions"] = _imported_distributions()
        Path(record_path).write_text(json.dumps(observed))

    atexit.register(record)
    import mssr_cli.models.loading as loading

    load_policy = loading.load_policy

    def observed_load_policy(*args, **kwargs):
        """The policy as loaded, with a hook on its last decoder MLP: the dtype and device each forward really computed in."""
        import torch

        model, processor = load_policy(*args, **kwargs)
        observed["param_dtypes"] = sorted({str(p.dtype) for p in model.parameters()})

        def hook(module, inputs, output):
            mode = "grad" if torch.is_grad_enabled() else "no_grad"  # loss forwards vs generation / reference
            key = f"{mode}:{output.device.type}:{str(output.dtype).replace('torch.', '')}"
            observed["forwards"][key] = observed["forwards"].get(key, 0) + 1

        # the last decoder layer's MLP output: TRL's fused log-probs read lm_head.weight without calling lm_head
        last = [m for name, m in model.named_modules() if name.endswith("mlp.down_proj") and "visual" not in name][-1]
        last.register_forward_hook(hook)
        return model, processor

    loading.load_policy = observed_load_policy  # runner and evaluation import it from the module at call time
    from mssr_cli.cli import app

    app(cli_args, prog_name="mssr")


def child_env(record_path: str) -> None:
    """Versions, the GPU, every module the check's paths need, and math-verify's worker."""
    from importlib import import_module, metadata

    found: dict = {"python": sys.version.split()[0], "versions": {}, "import_errors": {}}
    for dist in ["torch", "transformers", "tokenizers", "huggingface-hub", "accelerate", "torchvision", "peft", "typer", "wandb",
                 *sorted(n for n in GPU_WHEELS if n not in BUILD_ONLY), "mssr-cli"]:
        try:
            found["versions"][dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found["versions"][dist] = None
    for module in ["torch", "transformers", "trl", "datasets", "hydra", "omegaconf", "lm_eval.tasks", "math_verify",
                   "mssr_cli.cli", "mssr_cli.training.trainer", "mssr_cli.evaluation.runner"]:
        try:
            import_module(module)
        except Exception as err:  # noqa: BLE001 - reported, the section FAILs
            found["import_errors"][module] = f"{type(err).__name__}: {err}"
    import torch

    found["cuda"] = torch.cuda.is_available()
    if found["cuda"]:
        props = torch.cuda.get_device_properties(0)
        found.update(device_name=props.name, device_memory_gib=round(props.total_memory / 2**30, 1),
                     bf16_supported=torch.cuda.is_bf16_supported(), cuda_version=torch.version.cuda)
    import mssr_cli

    found["mssr_cli_file"] = mssr_cli.__file__
    from mssr_cli.rewards import accuracy_reward

    # 1/2 = 0.5 only by math-verify's numeric equivalence, never by normalisation: its worker must run
    found["math_verify_reward"] = accuracy_reward("so \\boxed{0.5}", "\\frac{1}{2}")
    Path(record_path).write_text(json.dumps(found))


def child_build(folder: str, dims: str) -> None:
    """A Qwen2.5-VL with random weights and the tiny tokenizer, saved in the Hub checkpoint's schema."""
    import torch
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    from mssr_cli.models.chat_template import QWEN2VL_CHAT_TEMPLATE
    from mssr_cli.models.tiny import build_tokenizer

    tok = build_tokenizer()
    ids = tok.convert_tokens_to_ids
    if dims == "3b":  # Qwen/Qwen2.5-VL-3B-Instruct's config.json (vocabulary larger than the tokenizer, as there)
        text = dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                    num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=128000, rms_norm_eps=1e-6,
                    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]})
        vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                      window_size=112, fullatt_block_indexes=[7, 15, 23, 31])
    else:  # small: the same architecture at test sizes, for a CPU run of the whole check
        text = dict(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]})
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, window_size=112,
                      fullatt_block_indexes=[1])
    config = Qwen2_5_VLConfig(
        text_config={**text, "tie_word_embeddings": True, "bos_token_id": ids("<|endoftext|>"),
                     "eos_token_id": ids("<|im_end|>"), "pad_token_id": ids("<|endoftext|>")},
        vision_config={**vision, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "hidden_act": "silu"},
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # 3.75B random weights: seconds on a GPU
        model = Qwen2_5_VLForConditionalGeneration(config).to(torch.bfloat16)
    gen = model.generation_config
    gen.eos_token_id, gen.pad_token_id, gen.bos_token_id = [ids("<|im_end|>"), ids("<|endoftext|>")], ids("<|endoftext|>"), ids("<|endoftext|>")
    model.save_pretrained(folder)
    Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(), tokenizer=tok, video_processor=Qwen2VLVideoProcessor(),
                        chat_template=QWEN2VL_CHAT_TEMPLATE).save_pretrained(folder)
    params = sum(p.numel() for p in model.parameters())
    vision_params = sum(p.numel() for p in model.model.visual.parameters())
    Path(folder, "gpu_check_facts.json").write_text(json.dumps({"params": params, "vision_params": vision_params}))


def _child_main(argv: list[str]) -> None:
    if os.environ.get("MSSR_GPU_CHECK_HIDE"):
        _hide_missing_packages(os.environ["MSSR_GPU_CHECK_HIDE"])
    mode, target, rest = argv[0], argv[1], argv[2:]
    if mode == "_cli":
        child_cli(target, rest)
    elif mode == "_env":
        child_env(target)
    elif mode == "_build":
        child_build(target, rest[0])
    else:
        raise SystemExit(f"unknown child mode {mode}")


# --- the parent: sections, each a PASS/FAIL line and a JSON entry ---------------------------------


class Check:
    def __init__(self, opts):
        self.opts = opts
        self.out = Path(opts.out)
        self.work = Path(opts.work)
        self.out.mkdir(parents=True, exist_ok=True)
        if self.work.exists() and any(self.work.iterdir()) and not (self.work / WORK_MARKER).exists():
            raise SystemExit(f"--work {self.work} holds files this check did not write: give an empty or new folder")
        shutil.rmtree(self.work, ignore_errors=True)  # a previous check's scratch
        self.work.mkdir(parents=True)
        (self.work / WORK_MARKER).write_text("scratch of bench/gpu_check.py: removed when it ends\n")
        self.log_path = self.out / "gpu_check.log"
        self.children_log = self.out / "children.log"
        self.log_path.write_text("")
        self.children_log.write_text("")
        self.started = time.time()
        self.results: dict = {"argv": sys.argv[1:], "sections": {}}
        self.cuda: bool | None = None
        self.env = self._child_env()

    def say(self, line: str = "") -> None:
        print(line, flush=True)
        with self.log_path.open("a") as log:
            log.write(line + "\n")

    def _child_env(self) -> dict:
        env = {**os.environ}
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HUB_CACHE=str(self.work / "hf_cache"),
                   WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
        env.setdefault("MSSR_CACHE", str(self.work / "mssr_cache"))  # the tiny model, built once
        if self.opts.simulate_gpu_packages:
            hidden = self.work / "hidden_packages.json"
            hidden.write_text(json.dumps(hidden_packages()))
            env["MSSR_GPU_CHECK_HIDE"] = str(hidden)
        return env

    def child(self, label: str, mode: str, target: str, *args: str) -> tuple[int, str, float]:
        """Run this file as a child; returns (exit status, its output, seconds). Output goes to children.log."""
        started = time.time()
        try:
            out = subprocess.run([sys.executable, str(Path(__file__).resolve()), mode, target, *args], cwd=ROOT,
                                 env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 timeout=self.opts.child_timeout)
            code, text = out.returncode, out.stdout
        except subprocess.TimeoutExpired as err:
            partial = err.stdout.decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
            code, text = 124, partial + f"\n[gpu_check: killed after {self.opts.child_timeout} s]"
        seconds = time.time() - started
        with self.children_log.open("a") as log:
            log.write(f"===== {label}: exit {code}, {seconds:.1f} s\n{text[-20000:]}\n")
        return code, text, seconds

    def section(self, name: str, title: str, body) -> None:
        self.say(f"\n== {title}")
        started = time.time()
        result: dict = {"checks": {}, "skipped": []}
        try:
            body(result)
        except Exception as err:  # noqa: BLE001 - a broken section is a FAIL with its reason, never a crash
            result["checks"]["section ran"] = False
            result["error"] = f"{type(err).__name__}: {err}"
        result["seconds"] = round(time.time() - started, 1)
        failed = [k for k, ok in result["checks"].items() if not ok]
        result["status"] = "FAIL" if failed or not result["checks"] else "PASS"
        summary = result.get("summary", "")
        skipped = f"; skipped: {', '.join(result['skipped'])}" if result["skipped"] else ""
        why = f"; failed: {', '.join(failed)}" if failed else ""
        why += f"; {result['error']}" if "error" in result else ""
        self.say(f"{result['status']} {name}: {summary}{why}{skipped} ({result['seconds']:.0f} s)")
        self.results["sections"][name] = result
        self.save()

    def save(self) -> None:
        self.results["seconds"] = round(time.time() - self.started, 1)
        (self.out / "gpu_check.json").write_text(json.dumps(self.results, indent=2) + "\n")

    # --- sections ---

    def environment(self, result: dict) -> None:
        record = self.work / "env.json"
        code, text, _ = self.child("environment", "_env", str(record))
        result["checks"]["probe exit 0"] = code == 0
        if code:
            result["output_tail"] = text[-3000:]
            return
        found = json.loads(record.read_text())
        result.update(found)
        self.cuda = bool(found["cuda"])
        self.results["cuda"] = self.cuda
        result["checks"]["every module imports"] = not found["import_errors"]
        result["checks"]["math-verify worker grades 0.5 = 1/2"] = found["math_verify_reward"] == 1.0
        wrong = {n: found["versions"].get(n) for n, v in GPU_WHEELS.items() if n not in BUILD_ONLY and found["versions"].get(n) != v}
        result["checks"]["every carried package installed as pinned"] = not wrong
        if wrong:
            result["not_as_pinned"] = wrong
        if self.cuda:
            result["checks"]["GPU supports bf16"] = bool(found.get("bf16_supported"))
        v = found["versions"]
        gpu = f"{found['device_name']}, {found['device_memory_gib']} GiB" if self.cuda else "no CUDA (CPU run)"
        result["summary"] = (f"{gpu}; python {found['python']}, torch {v['torch']}, transformers {v['transformers']}, "
                             f"trl {v['trl']}, hub {v['huggingface-hub']}; mssr_cli from {found['mssr_cli_file']}")
        for module, err in found["import_errors"].items():
            self.say(f"  import {module}: {err}")

    def _train(self, label: str, overrides: list[str], run_dir: Path) -> dict:
        """One `mssr train` child: exit status, steps, losses, step times and what the child observed."""
        record = self.work / f"{label}.json"
        code, text, seconds = self.child(label, "_cli", str(record), "train", *overrides, "--run-dir", str(run_dir))
        run: dict = {"exit": code, "seconds": round(seconds, 1)}
        if code:
            run["output_tail"] = text[-3000:]
            self.say(f"  {label}: exit {code}\n" + "\n".join("    " + line for line in text[-3000:].splitlines()[-25:]))
        metrics_path = run_dir / "metrics.jsonl"
        lines = [json.loads(line) for line in metrics_path.read_text().splitlines()] if metrics_path.exists() else []
        steps = [m for m in lines if "train/loss" in m]
        run["steps"] = len(steps)
        run["losses"] = [m["train/loss"] for m in steps]
        run["grad_norms"] = [m.get("collapse/grad_norm") for m in steps]
        times = [m["time/step_seconds"] for m in steps if m.get("step", 0) > 1 and "time/step_seconds" in m]
        run["step_seconds"] = times
        run["median_step_seconds"] = statistics.median(times) if times else None
        if record.exists():
            run["observed"] = json.loads(record.read_text())
        summary = run_dir / "summary.json"
        if summary.exists():
            s = json.loads(summary.read_text())
            run["val_accuracy"] = [s.get("start_val_accuracy"), s.get("final_val_accuracy")]
        return run

    def bf16_training(self, result: dict) -> None:
        o = self.opts
        bf16 = "true" if self.cuda else "false"  # transformers refuses bf16 training on a CPU
        if not self.cuda:
            result["skipped"].append("bf16 (no CUDA: trained in fp32)")
        result["algos"] = {}
        parts = []
        for algo in self.opts.algos.split(","):
            overrides = [f"algo={algo}", f"train.max_steps={o.steps}", f"train.bf16={bf16}", "logging.wandb=disabled",
                         "logging.progress=false", *(f"train.rollouts_per_step={o.rollouts}",) * bool(o.rollouts),
                         *o.train_override]
            run = self._train(f"tiny_{algo}", overrides, self.work / f"tiny_{algo}")
            result["algos"][algo] = run
            finite = bool(run["losses"]) and all(_finite(x) for x in run["losses"] + run["grad_norms"])
            result["checks"][f"{algo} exit 0"] = run["exit"] == 0
            result["checks"][f"{algo} ran {o.steps} steps"] = run["steps"] == o.steps
            result["checks"][f"{algo} loss and grad norm finite"] = finite
            forwards = run.get("observed", {}).get("forwards", {})
            loss_forwards = {k: n for k, n in forwards.items() if k.startswith("grad:")}
            result["checks"][f"{algo} loss forwards seen"] = bool(loss_forwards)
            if self.cuda:
                result["checks"][f"{algo} loss forwards in bf16 on cuda"] = bool(loss_forwards) and all(
                    k == "grad:cuda:bfloat16" for k in loss_forwards)
            med = run["median_step_seconds"]
            parts.append(f"{algo} {run['steps']} steps, last loss {run['losses'][-1] if run['losses'] else float('nan'):.4g}, "
                         f"{med if med is not None else float('nan'):.3f} s/step, forwards {loss_forwards}, "
                         f"params {run.get('observed', {}).get('param_dtypes')}")
        result["summary"] = "; ".join(parts)

    def evaluation(self, result: dict) -> None:
        o = self.opts
        trained = [self.work / f"tiny_{a}" for a in reversed(o.algos.split(","))]  # mssr's, when it ran
        trained = [d for d in trained if (d / "model" / "config.json").exists()]
        model = str(trained[0]) if trained else "tiny"
        if not trained:
            result["skipped"].append("a trained model (section 1 saved none): the tiny preset instead")
        out = self.work / "eval"
        record = self.work / "eval.json"
        code, text, seconds = self.child("eval", "_cli", str(record), "eval", "--benchmarks", "digits", "--model", model,
                                         "--limit", str(o.eval_limit), "--max-new-tokens", "12", "--out", str(out))
        result["checks"]["exit 0"] = code == 0
        if code:
            result["output_tail"] = text[-3000:]
        summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
        digits = summary.get("benchmarks", {}).get("digits", {})
        result["checks"]["every item graded"] = digits.get("n") == o.eval_limit
        observed = json.loads(record.read_text()) if record.exists() else {}
        forwards = observed.get("forwards", {})
        result["forwards"], result["imported"] = forwards, observed.get("distributions", [])
        result["checks"]["generation forwards seen"] = bool(forwards)
        if self.cuda:
            result["checks"]["generation on cuda"] = bool(forwards) and all(":cuda:" in k for k in forwards)
        else:
            result["skipped"].append("generation on cuda (no CUDA)")
        result.update(model=model, n=digits.get("n"), accuracy=digits.get("accuracy"), generation_seconds=digits.get("seconds"))
        rate = digits["n"] / digits["seconds"] if digits.get("seconds") else None
        result["items_per_second"] = rate
        result["summary"] = (f"{digits.get('n')} items, accuracy {digits.get('accuracy')}, "
                             f"{rate if rate is not None else float('nan'):.1f} items/s, forwards {forwards}")

    def _real_overrides(self, algo: str) -> list[str]:
        o = self.opts
        return [f"algo={algo}", "model=qwen25vl-3b", "data=digits", "launcher=none", "train.use_vllm=false",
                f"train.bf16={'true' if self.cuda else 'false'}",
                f"model.max_pixels={o.pixels}", f"model.min_pixels={o.pixels}",
                f"train.rollouts_per_step={o.real_rollouts}", "train.minibatch_size=null",
                f"train.micro_batch_size={o.real_micro}", f"train.max_completion_length={o.completion}",
                f"train.max_steps={o.real_steps}", "train.eval_every=0", "train.save_every=0", "train.log_samples_every=0",
                "algo.tracker.warm_start=false", "logging.wandb=disabled", "logging.progress=false", *o.real_override]

    def build_real_model(self) -> dict:
        commit = "0" * 40
        repo = self.work / "hf_cache" / ("models--" + REAL_HUB_ID.replace("/", "--"))
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
        code, text, seconds = self.child("build real-dims model", "_build", str(snapshot), self.opts.dims)
        if code:
            raise RuntimeError(f"building the {self.opts.dims} model failed: {text[-1500:]}")
        facts = json.loads((snapshot / "gpu_check_facts.json").read_text())
        facts["build_seconds"] = round(seconds, 1)
        return facts

    def real_dims(self, result: dict) -> None:
        """Section 2 (step time) and section 3 (memory) share the runs: built once, run in ABBA rounds."""
        o = self.opts
        facts = self.build_real_model()
        self.real = {"facts": facts, "runs": {"grpo": [], "mssr": []}}
        result["model"] = facts
        self.say(f"  built the {o.dims} model: {facts['params']:,} parameters ({facts['vision_params']:,} in the vision tower) "
                 f"in {facts['build_seconds']:.0f} s")
        if o.dims == "3b":
            from mssr_cli.models.facts import MODEL_FACTS

            expected = MODEL_FACTS[REAL_HUB_ID].params
            result["checks"]["parameters match the 3B's card (within 1%)"] = abs(facts["params"] / expected - 1) < 0.01
        round_seconds = []
        for r in range(o.real_rounds):
            elapsed = time.time() - self.started
            if r and elapsed + 1.1 * max(round_seconds) > o.budget_s:
                result["skipped"].append(f"rounds {r + 1}-{o.real_rounds} (time budget {o.budget_s} s)")
                break
            started = time.time()
            for algo in (["grpo", "mssr"] if r % 2 == 0 else ["mssr", "grpo"]):
                run_dir = self.work / f"real_{algo}_{r}"
                run = self._train(f"real_{algo}_{r}", self._real_overrides(algo), run_dir)
                shutil.rmtree(run_dir, ignore_errors=True)  # 7.5 GB of saved model per run at 3B
                self.real["runs"][algo].append(run)
                self.say(f"  round {r + 1} {algo}: exit {run['exit']}, {run['steps']} steps, median "
                         f"{run['median_step_seconds']} s/step, peak "
                         f"{_gb(run.get('observed', {}).get('max_memory_allocated'))} GB, {run['seconds']:.0f} s")
            round_seconds.append(time.time() - started)
        result["runs"] = self.real["runs"]
        medians = {}
        for algo, runs in self.real["runs"].items():
            result["checks"][f"{algo} runs exit 0"] = bool(runs) and all(r["exit"] == 0 for r in runs)
            result["checks"][f"{algo} ran {o.real_steps} steps"] = bool(runs) and all(r["steps"] == o.real_steps for r in runs)
            result["checks"][f"{algo} losses finite"] = bool(runs) and all(
                r["losses"] and all(_finite(x) for x in r["losses"]) for r in runs)
            times = [t for r in runs for t in r["step_seconds"]]
            medians[algo] = statistics.median(times) if times else None
            result["checks"][f"{algo} steps timed"] = bool(times)
            if self.cuda:
                forwards = {k for r in runs for k in r.get("observed", {}).get("forwards", {}) if k.startswith("grad:")}
                result["checks"][f"{algo} loss forwards in bf16 on cuda"] = forwards == {"grad:cuda:bfloat16"}
        ratio = medians["mssr"] / medians["grpo"] if medians["grpo"] and medians["mssr"] else None
        result.update(median_step_seconds=medians, mssr_over_grpo=ratio)
        result["checks"]["ratio measured"] = ratio is not None and _finite(ratio)
        result["summary"] = (f"{o.dims} dims, {o.real_rollouts} rollouts x {o.completion} tokens per step; median s/step "
                             f"GRPO {_fmt(medians['grpo'])}, MSSR {_fmt(medians['mssr'])}; MSSR/GRPO {_fmt(ratio, 2)}")

    def memory(self, result: dict) -> None:
        o = self.opts
        if not getattr(self, "real", None):
            raise RuntimeError("no real-dims runs to measure (section 2 failed before running them)")
        result["tolerance"] = o.memory_tolerance
        parts = []
        for algo, runs in self.real["runs"].items():
            code, text, _ = self.child(f"dry run {algo}", "_cli", str(self.work / f"dry_{algo}.json"), "train",
                                       *self._real_overrides(algo), "--dry-run")
            estimate = parse_memory_estimate(text)
            result["checks"][f"{algo} dry run printed an estimate"] = code == 0 and "total" in estimate
            peaks = [r.get("observed", {}).get("max_memory_allocated") for r in runs]
            peaks = [p for p in peaks if p]
            measured = max(peaks) if peaks else None
            entry = {"estimate_gb": estimate, "measured_gb": _gb(measured, 2),
                     "reserved_gb": _gb(max((r.get("observed", {}).get("max_memory_reserved") or 0 for r in runs), default=0), 2)}
            if measured and estimate.get("total"):
                entry["measured_over_estimate"] = round(measured / 1e9 / estimate["total"], 3)
                ratio = entry["measured_over_estimate"]
                result["checks"][f"{algo} measured within {o.memory_tolerance:g}x of the estimate"] = (
                    1 / o.memory_tolerance <= ratio <= o.memory_tolerance)
                parts.append(f"{algo} estimate {estimate['total']:.1f} GB, measured {entry['measured_gb']:.1f} GB "
                             f"(reserved {entry['reserved_gb']:.1f}), ratio {ratio:.2f}")
            else:
                if not self.cuda:
                    result["skipped"].append(f"{algo} measurement (no CUDA)")
                else:
                    result["checks"][f"{algo} peak measured"] = False
                parts.append(f"{algo} estimate {estimate.get('total', float('nan')):.1f} GB, measured -")
            result[algo] = entry
        if o.dims != "3b":
            result["note"] = "the estimate is for the real 3B (the plan knows the preset's sizes), the model run is small"
        result["summary"] = "; ".join(parts)

    def run(self) -> int:
        o = self.opts
        self.say(f"gpu_check: out {self.out}, work {self.work}, python {sys.executable}")
        if o.install_wheels:
            self.section("install", "install: the carried wheels and the project, offline", self.install)
        self.section("environment", "environment", self.environment)
        if self.cuda is None:  # the probe failed: still hold the GPU sections to the GPU's checks
            self.cuda = shutil.which("nvidia-smi") is not None and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0
            self.results["cuda"] = self.cuda
        self.section("bf16_training", f"1. bf16 training, tiny model, {o.steps} steps per algorithm", self.bf16_training)
        self.section("eval", "4. mssr eval on the GPU (digits)", self.evaluation)
        self.section("step_time", f"2. MSSR/GRPO step time at {o.dims} dimensions", self.real_dims)
        self.section("memory", "3. --dry-run memory estimate vs torch.cuda.max_memory_allocated", self.memory)
        failed = [n for n, s in self.results["sections"].items() if s["status"] != "PASS"]
        self.results["passed"] = not failed
        self.save()
        self.say(f"\n{'PASS' if not failed else 'FAIL'} gpu_check: {len(self.results['sections']) - len(failed)} of "
                 f"{len(self.results['sections'])} sections passed{(' (failed: ' + ', '.join(failed) + ')') if failed else ''} "
                 f"in {time.time() - self.started:.0f} s; {self.out / 'gpu_check.json'}")
        if not o.keep_work:
            shutil.rmtree(self.work, ignore_errors=True)
        return 0 if not failed else 1

    def install(self, result: dict) -> None:
        for command in install_commands(Path(self.opts.install_wheels)):
            self.say("  $ " + " ".join(command))
            out = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            result["checks"][" ".join(command[3:5])] = out.returncode == 0
            if out.returncode:
                self.say(out.stdout[-3000:])
        result["summary"] = f"{len(GPU_WHEELS)} wheels from {self.opts.install_wheels}, then mssr-cli (editable)"


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _gb(n, digits: int = 1):
    return None if not n else round(n / 1e9, digits)


def _fmt(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def parse_memory_estimate(text: str) -> dict[str, float]:
    """{term: GB} from the `GPU memory per device` lines of a dry run's plan."""
    pattern = re.compile(r"^\s+(" + "|".join(MEMORY_TERMS) + r")\s+([\d.]+) GB\s*$")
    return {m.group(1): float(m.group(2)) for m in map(pattern.match, text.splitlines()) if m}


def install_commands(folder: Path) -> list[list[str]]:
    """The two offline installs: the carried wheels (pinned), then the project, neither touching torch."""
    pins = [f"{name}=={version}" for name, version in GPU_WHEELS.items()]
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
    return [[*pip, "--find-links", str(folder), *pins], [*pip, "--no-build-isolation", "-e", str(ROOT)]]


def download_commands(folder: Path) -> list[list[str]]:
    """`make gpu-wheels`: wheels for the GPU machine's Python on Linux x86-64; the sdist-only ones built here."""
    binary = [f"{n}=={v}" for n, v in GPU_WHEELS.items() if n not in SDIST_ONLY]
    sdist = [f"{n}=={v}" for n, v in GPU_WHEELS.items() if n in SDIST_ONLY]
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    pip = [sys.executable, "-m", "pip"]
    return [[*pip, "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", GPU_PYTHON,
             "--implementation", "cp", *platforms, "-d", str(folder), *binary],
            [*pip, "wheel", "-q", "--no-deps", "--no-binary=:all:", "-w", str(folder), *sdist]]


def wheel_fits_gpu_machine(filename: str) -> bool:
    """Whether pip on the GPU machine (CPython 3.12, Linux x86-64) can install this wheel."""
    from packaging.tags import compatible_tags, cpython_tags
    from packaging.utils import parse_wheel_filename

    version = tuple(int(x) for x in GPU_PYTHON.split("."))
    platforms = [*PLATFORMS, "linux_x86_64"]
    fits = {*cpython_tags(version, platforms=platforms), *compatible_tags(version, "cp" + "".join(map(str, version)), platforms)}
    return bool(parse_wheel_filename(filename)[3] & fits)


def download_wheels(folder: Path) -> int:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for command in download_commands(folder):
        print("$ " + " ".join(command), flush=True)
        subprocess.run(command, check=True)
    wheels = sorted(folder.glob("*.whl"))
    wrong = [w.name for w in wheels if not wheel_fits_gpu_machine(w.name)]
    if len(wheels) != len(GPU_WHEELS) or wrong:
        print(f"expected {len(GPU_WHEELS)} wheels for CPython {GPU_PYTHON} on Linux x86-64, got {len(wheels)}; "
              f"not for it: {wrong}")
        return 1
    size = sum(w.stat().st_size for w in wheels)
    print(f"{len(wheels)} wheels, {size / 2**20:.1f} MiB in {folder} (carry it: it counts towards the 64 MiB that travels)")
    return 0


def hidden_packages() -> dict:
    """Installed packages the GPU machine lacks and GPU_WHEELS does not carry: their modules and names.

    A package on the machine is taken to bring its own requirements (as installed here), since the
    list names only top-level installs' names, not versions."""
    from importlib import metadata

    from packaging.requirements import Requirement

    marker_env = {"python_version": GPU_PYTHON, "python_full_version": GPU_PYTHON + ".3", "sys_platform": "linux",
                  "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
                  "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
    present = {canonical(n) for n in GPU_MACHINE_PACKAGES}
    todo = list(present)
    while todo:
        try:
            requires = metadata.requires(todo.pop()) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            name = canonical(req.name)
            if (req.marker is None or req.marker.evaluate(marker_env)) and name not in present:
                present.add(name)
                todo.append(name)
    allowed = present | {canonical(n) for n in GPU_WHEELS} | {"mssr-cli"}
    owners = metadata.packages_distributions()
    modules = sorted(m for m, dists in owners.items() if not any(canonical(d) in allowed for d in dists))
    installed = {canonical(d.metadata["Name"]) for d in metadata.distributions()}
    return {"modules": modules, "distributions": sorted(installed - allowed)}


def parse_args(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/gpu_check", help="results: gpu_check.json, gpu_check.log, children.log")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "mssr_gpu_check"),
                   help="scratch: run folders, the real-dims model (7.5 GB at 3B); emptied first, removed at the end")
    p.add_argument("--keep-work", action="store_true", help="keep --work afterwards")
    p.add_argument("--install-wheels", default=None, metavar="DIR", help="first install DIR's wheels and the project, offline")
    p.add_argument("--download-wheels", default=None, metavar="DIR", help="only download the wheels into DIR (make gpu-wheels)")
    p.add_argument("--steps", type=int, default=20, help="1: RL steps per algorithm on the tiny model")
    p.add_argument("--rollouts", type=int, default=None, help="1: rollouts per step (default: the tiny recipe's 128)")
    p.add_argument("--algos", default=",".join(ALGOS), help="1: comma-separated algorithms")
    p.add_argument("--train-override", action="append", default=[], help="1: extra override for the tiny runs (repeatable)")
    p.add_argument("--eval-limit", type=int, default=64, help="4: digits items to evaluate")
    p.add_argument("--dims", choices=["3b", "small"], default="3b", help="2, 3: Qwen2.5-VL-3B sizes, or small ones for a CPU run")
    p.add_argument("--real-steps", type=int, default=6, help="2: RL steps per run (the first is not timed)")
    p.add_argument("--real-rounds", type=int, default=2, help="2: GRPO/MSSR rounds, ABBA, while the budget lasts")
    p.add_argument("--real-rollouts", type=int, default=16, help="2: rollouts per step (GRPO: 2 prompts x 8)")
    p.add_argument("--real-micro", type=int, default=8, help="2, 3: rollouts per forward/backward")
    p.add_argument("--completion", type=int, default=64, help="2, 3: completion tokens (a random model never stops early)")
    p.add_argument("--pixels", type=int, default=200704, help="2, 3: pixels per image (448x448: 256 image tokens, as the plan counts)")
    p.add_argument("--real-override", action="append", default=[], help="2, 3: extra override for those runs (repeatable)")
    p.add_argument("--memory-tolerance", type=float, default=2.0, help="3: FAIL when measured/estimate leaves [1/x, x]")
    p.add_argument("--budget-s", type=float, default=420, help="2: no further round once one would end past this")
    p.add_argument("--child-timeout", type=float, default=240, help="seconds one mssr command may take before it is killed")
    p.add_argument("--simulate-gpu-packages", action="store_true",
                   help="hide the installed packages the GPU machine lacks and GPU_WHEELS does not carry (tests)")
    return p.parse_args(argv)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        _child_main(sys.argv[1:])
        return 0
    opts = parse_args()
    if opts.download_wheels:
        return download_wheels(Path(opts.download_wheels))
    return Check(opts).run()


if __name__ == "__main__":
    sys.exit(main())
