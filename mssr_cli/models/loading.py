"""Load a policy (model + processor) for a model config: the one path for tiny and real presets.

Real presets load a Hub id or a local folder with ``AutoProcessor`` and
``AutoModelForImageTextToText``; the tiny preset is built once into the cache and then loaded
through exactly the same two calls.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mssr_cli.hub import hub_connection_error
from mssr_cli.models.cache import cache_dir

TINY_VERSION = 1  # bump when the tiny architecture, tokenizer or warm start changes
# Files that make a cached Hub snapshot loadable: its config and weights (one file or a sharded index)
# or, for a PEFT adapter, the adapter's config.
CONFIG_FILES = ("config.json", "adapter_config.json")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
                "adapter_model.safetensors", "adapter_model.bin")


class ModelNotFoundError(OSError):
    """The model cannot load here (no such folder; a Hub id neither cached nor reachable). An OSError, as
    transformers raises for a model it cannot find; the one-line message says what, where and the fix."""


def looks_like_path(name_or_path: str) -> bool:
    """Not a valid Hub id ('/abs', './rel', '~/x', 'a/b/c'): it can only be a local folder."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name_or_path)
    except HFValidationError:
        return True
    return False


def _cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    def has(names):
        return any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in names)

    return has(CONFIG_FILES) and has(WEIGHT_FILES)


def ensure_loadable(name_or_path: str, label: str | None = None, pass_folder: str = "model.name_or_path=DIR") -> None:
    """Fail in seconds, in one line naming the fix, when ``name_or_path`` cannot load here.

    A local folder must exist. A Hub id must be in the Hugging Face cache or the Hub
    reachable; cached with the Hub unreachable, this process goes offline (``HF_HUB_OFFLINE``) so
    transformers reads the cache at once. ``label`` starts the message (default
    ``model.name_or_path=<name_or_path>``); ``pass_folder`` is how the user then passes a local copy."""
    from huggingface_hub import constants

    label = label or f"model.name_or_path={name_or_path}"
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        return  # what it holds is checked as it loads (load_policy names a folder without a VLM processor)
    if folder.exists():
        raise ModelNotFoundError(f"{label}: {folder} is a file, not a model folder")
    if looks_like_path(name_or_path):
        raise ModelNotFoundError(f"{label}: no such folder {folder}")
    offline = "HF_HUB_OFFLINE=1" if constants.HF_HUB_OFFLINE else hub_connection_error()
    if offline is None:
        return  # online: transformers downloads it (and names an unknown id itself)
    if _cached(name_or_path):
        os.environ["HF_HUB_OFFLINE"] = "1"  # processes started from here (accelerate launch) read the env
        constants.HF_HUB_OFFLINE = True  # huggingface_hub reads the constant at each call; env was read at import
        return
    raise ModelNotFoundError(
        f"{label}: neither a local folder nor in the Hugging Face cache ({constants.HF_HUB_CACHE}), and the Hub is "
        f"unreachable ({offline}); where there is network run `hf download {name_or_path} --local-dir DIR`, then pass "
        f"{pass_folder}"
    )


# The built-in tasks a tiny model is built for: its tokenizer's text, image bounds and warm start.
TINY_TASKS = ("digits", "digit_sum")


def tiny_task(data_cfg) -> str:
    """The built-in task the tiny model is built and warm-started for: ``data.name`` when that is one
    (digits, digit_sum), else digits (Hub and local data reuse the digits model)."""
    return data_cfg.name if data_cfg.name in TINY_TASKS else "digits"


def tiny_cache_path(model_cfg, data_cfg) -> Path:
    ws = model_cfg.warm_start
    rows = "all" if ws.num_examples is None else ws.num_examples
    tag = f"ws{rows}-t{ws.target_accuracy:g}-c{ws.check_every}-lr{ws.lr:g}" if ws.enabled else "raw"
    task = tiny_task(data_cfg)
    suffix = "" if task == "digits" else f"-{task}"  # the digits model keeps the key it always had
    return cache_dir() / f"tiny-qwen2vl-v{TINY_VERSION}-s{ws.seed}-{tag}-img{data_cfg.image_size}{suffix}"


def _tiny_task_parts(task: str, data_cfg, ws):
    """(processor pixel bounds, warm-start train rows, check rows, longest check answer) of a built-in task."""
    if task == "digit_sum":
        from mssr_cli.data.digit_sum import load_digit_sum_split, pixel_bounds

        def rows(split, limit):
            return load_digit_sum_split(split, data_cfg.image_size, data_cfg.num_val, limit=limit, with_chains=True)

        bounds, answer_tokens = pixel_bounds(data_cfg.image_size), 32  # a chain is 16-22 tokens, + end of turn
    else:
        from mssr_cli.data.digits import load_digits_split
        from mssr_cli.models.tiny import IMAGE_SIZE

        def rows(split, limit):
            return load_digits_split(split, data_cfg.image_size, data_cfg.num_val, limit=limit)

        bounds, answer_tokens = (IMAGE_SIZE * IMAGE_SIZE,) * 2, 16
    if not ws.enabled:
        return bounds, None, None, answer_tokens
    return bounds, rows("train", ws.num_examples), rows("validation", ws.check_examples), answer_tokens


def build_tiny(model_cfg, data_cfg, folder: Path, progress=None) -> dict:
    """Build the tiny model for its task (``tiny_task``), warm-start it, save it to ``folder`` atomically;
    returns build facts."""
    from mssr_cli.models.tiny import build_model, build_processor, build_tokenizer, save_pretrained
    from mssr_cli.models.warm_start import warm_start

    ws = model_cfg.warm_start
    task = tiny_task(data_cfg)
    (min_pixels, max_pixels), train, check, answer_tokens = _tiny_task_parts(task, data_cfg, ws)
    tokenizer = build_tokenizer(task)
    processor = build_processor(tokenizer, min_pixels, max_pixels)
    model = build_model(tokenizer, seed=ws.seed)
    facts = {"task": task, "parameters": sum(p.numel() for p in model.parameters())}
    if ws.enabled:
        result = warm_start(
            model,
            processor,
            train,
            check,
            target_accuracy=ws.target_accuracy,
            max_epochs=ws.max_epochs,
            lr=ws.lr,
            batch_size=ws.batch_size,
            check_every=ws.check_every,
            seed=ws.seed,
            progress=progress,
            max_new_tokens=answer_tokens,
        )
        facts.update(warm_start_accuracy=result.accuracy, warm_start_epochs=result.epochs,
                     warm_start_reached_target=result.reached_target)
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    save_pretrained(model, processor, staging)
    staging.replace(folder)  # atomic: a crash mid-build never leaves a half-written cache entry
    return facts


def resolve_model_path(model_cfg, data_cfg, progress=None, console=None) -> str:
    """The folder or Hub id to load, checked to be loadable (``ensure_loadable``); builds the tiny model on first use."""
    if model_cfg.name_or_path:
        ensure_loadable(model_cfg.name_or_path)
        return model_cfg.name_or_path
    folder = tiny_cache_path(model_cfg, data_cfg)
    if not (folder / "config.json").exists():
        from filelock import FileLock

        folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder) + ".lock"):  # two runs starting together build it once
            if not (folder / "config.json").exists():
                if console:
                    console.print(f"Building the tiny Qwen2-VL into {folder} (once) ...")
                facts = build_tiny(model_cfg, data_cfg, folder, progress)
                if console:
                    console.print(f"Built: {facts}")
    return str(folder)


def load_processor(path: str, model_cfg):
    """The training processor of the model at ``path``: ``model.min_pixels`` / ``max_pixels`` as its image
    bounds (vLLM builds its own without them: ``mssr_cli.data.image_bounds``), left padding; checked to be a
    real VLM processor."""
    from transformers import AutoProcessor, ProcessorMixin

    # Code from a model repository runs only when asked for by name (model.trust_remote_code=true)
    kwargs = {"trust_remote_code": getattr(model_cfg, "trust_remote_code", False) is True}
    if model_cfg.min_pixels is not None:
        kwargs["min_pixels"] = model_cfg.min_pixels
    if model_cfg.max_pixels is not None:
        kwargs["max_pixels"] = model_cfg.max_pixels
    processor = AutoProcessor.from_pretrained(path, **kwargs)
    # AutoProcessor quietly falls back to a bare tokenizer when the image processor cannot be built
    # (e.g. torchvision missing); training would then fail far from the cause.
    if not isinstance(processor, ProcessorMixin) or getattr(processor, "image_processor", None) is None:
        raise RuntimeError(
            f"AutoProcessor.from_pretrained({path!r}) returned {type(processor).__name__}, not a vision-language "
            "processor: check that torchvision is installed and the folder has processor_config.json (or preprocessor_config.json)"
        )
    processor.tokenizer.padding_side = "left"
    return processor


def load_policy(model_cfg, data_cfg, progress=None, console=None):
    """(model, processor) ready for training; the processor is checked to be a real VLM processor."""
    import torch
    from transformers import AutoModelForImageTextToText

    path = resolve_model_path(model_cfg, data_cfg, progress, console)
    processor = load_processor(path, model_cfg)
    remote_code = getattr(model_cfg, "trust_remote_code", False) is True  # as for the processor: asked for by name
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(model_cfg.dtype)
    if dtype is None:  # auto
        dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(
        path, dtype=dtype, attn_implementation=attention_kernel(model_cfg.attn_implementation, dtype),
        trust_remote_code=remote_code,
    )
    if model_cfg.freeze_vision:
        vision = getattr(getattr(model, "model", model), "visual", None)  # Qwen2-VL / Qwen2.5-VL layout
        if vision is None:
            raise RuntimeError(f"model.freeze_vision=true but {type(model).__name__} has no .model.visual tower")
        vision.requires_grad_(False)
    return model, processor


def attention_kernel(requested: str, dtype) -> str:
    """The attention implementation to load with: ``auto`` picks the fastest one that can run here.

    FlashAttention-2 needs the ``flash_attn`` package, a CUDA GPU and 16-bit weights; otherwise
    PyTorch's SDPA (fused kernels on GPU, a plain path on CPU) is the best available.
    """
    if requested != "auto":
        return requested
    import importlib.util

    import torch

    if importlib.util.find_spec("flash_attn") and torch.cuda.is_available() and dtype in (torch.bfloat16, torch.float16):
        return "flash_attention_2"
    return "sdpa"


def lora_config(model_cfg):
    """PEFT ``LoraConfig`` for ``model.lora`` (None when disabled); adapters on the language model only.

    Qwen2.5-VL's vision MLP reuses the names gate/up/down_proj, so the target is a regex that
    excludes the vision tower (``visual``): with LoRA the whole base, vision included, is frozen.
    """
    lora = model_cfg.lora
    if not lora.enabled:
        return None
    from peft import LoraConfig

    names = "|".join(sorted(lora.target_modules))
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=rf"^(?!.*\bvisual\b).*\.({names})$",
        task_type="CAUSAL_LM",
    )
