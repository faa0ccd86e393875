"""Dataclass schemas behind the YAML in conf/: a typo or a wrong type is an error naming the key.

Plain dataclasses (no OmegaConf import) so ``mssr --help`` can list the keys without loading
anything heavy. Each field's ``help`` is its one-line documentation (shown by ``--help``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable

from mssr_cli.config.paths import group_options

# Names the trainer's registries accept (kept here, torch-free, so validation stays instant;
# tests check they match mssr_cli.training.estimators and mssr_cli.algos.value_tracker).
ESTIMATOR_NAMES = ("grpo", "single_rollout", "rloo", "reinforce_pp")
SCHEDULE_NAMES = ("paper", "monotone", "per_prompt")
GRADER_NAMES = ("math_verify", "mathruler")  # mssr_cli.rewards.grader.GRADERS
LOSS_AGG_NAMES = ("token_mean", "micro_token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")

SEED_MAX = 2**32 - 1  # numpy's seed bound (transformers.set_seed seeds numpy with it)
ON_COLLAPSE = ("warn", "stop", "rollback")  # train.on_collapse
PORT_MAX = 65535


@dataclass(frozen=True)
class Range:
    """The values a key allows, as data: bounds (gt/ge/lt/le), a finite-number rule, or a set of choices.

    Whether null is allowed comes from the field's type (``int | None``). ``choices`` is a tuple or a
    function returning one (a listing of a conf/ group). Checked by ``compose.check_ranges``."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    finite: bool = True  # floats only: refuse nan and +-inf
    choices: tuple[str, ...] | Callable[[], list[str]] | None = None
    ignore_case: bool = False  # choices: compare lowercased (train.bf16=true arrives as 'True')

    def valid_choices(self) -> list[str] | None:
        if self.choices is None:
            return None
        return list(self.choices() if callable(self.choices) else self.choices)


def key(  # noqa: PLR0913 - one keyword per kind of rule
    default,
    help: str,  # noqa: A002 - mirrors argparse's naming
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    finite: bool = True,
    choices: tuple[str, ...] | Callable[[], list[str]] | None = None,
    ignore_case: bool = False,
):
    """A config field with its one-line help and the values it allows.

    Numbers: ``gt``/``ge`` (lower bound, exclusive/inclusive), ``lt``/``le`` (upper bound); floats
    must also be finite unless ``finite=False``. Strings with a fixed set of values: ``choices``.
    Null is allowed exactly when the type says so (``int | None``)."""
    if gt is not None and ge is not None or lt is not None and le is not None:
        raise TypeError("key(): give one lower bound (gt or ge) and one upper bound (lt or le)")
    for bound in (gt, ge, lt, le):
        if bound is not None and not math.isfinite(bound):
            raise TypeError(f"key(): bound {bound!r} is not finite")
    rule = Range(gt=gt, ge=ge, lt=lt, le=le, finite=finite, choices=choices, ignore_case=ignore_case)
    metadata = {"help": help, "range": rule}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrackerConfig:
    rho_min: float = key(0.875, "lowest forgetting factor rho (policy moving fast; paper 0.875)", gt=0, lt=1)
    rho_max: float = key(0.96, "highest forgetting factor rho (policy nearly still; paper 0.96)", gt=0, lt=1)
    target_kl: float = key(0.01, "KL* of the schedule: mean KL to the reference at which rho bottoms out", gt=0)
    kl_window: int = key(20, "steps in the KL window (paper text 20; its reference code silently uses 10)", ge=1)
    v_init: float = key(0.5, "baseline of a prompt never seen before", ge=0, le=1)
    schedule: str = key("paper", "rho schedule: paper (jumps at KL*, as the reference) | monotone | per_prompt (SPO)", choices=SCHEDULE_NAMES)
    d_half: float = key(0.06, "per_prompt schedule: KL at which a prompt's rho halves (SPO's D_half)", gt=0)
    warm_start: bool = key(True, "before step 1, sample n0 rollouts of every training prompt to seed the baselines")
    warm_start_rollouts: int = key(1, "n0: rollouts per prompt in the tracker warm start (paper 1)", ge=1)
    always_measure_kl: bool = key(True, "measure the step's KL to the reference even when algo.kl_coef=0, as the reference does (keeps a reference model and one extra no-grad forward pass per rollout); false: rho then stays at its midpoint")


@dataclass
class ShapingConfig:
    enabled: bool = key(False, "MSSR's entropy-based advantage shaping A' = A + min(alpha H, |A|/kappa)")
    alpha: float = key(0.4, "alpha_s: weight of the token entropy (paper 0.4)", ge=0)
    kappa: float = key(2.0, "kappa: the shaping term is capped at |A|/kappa (paper 2.0; must be > 0)", gt=0)
    entropy: str = key("full", "H_t: full (entropy of the whole next-token distribution, the paper) | sampled (-p log p of the sampled token, the reference code)", choices=("full", "sampled"))


@dataclass
class AlgoConfig:
    name: str = key("mssr", "algorithm: grpo (group baseline) | mvsr (single rollout, Beta baseline) | mssr (mvsr + entropy shaping) | rloo (leave-one-out group baseline) | reinforce_pp (REINFORCE++: batch-whitened token returns)", choices=lambda: group_options("algo"))
    estimator: str = key("single_rollout", "advantage estimator: grpo (group mean/std) | single_rollout (per-prompt Beta tracker, batch-normalised) | rloo (r - mean of the group's other rewards) | reinforce_pp (discounted token returns, whitened over the batch's tokens)", choices=ESTIMATOR_NAMES)
    rollouts_per_prompt: int = key(1, "G: rollouts sampled per prompt (GRPO and RLOO need G >= 2; single_rollout uses 1)", ge=1)
    gamma: float = key(1.0, "reinforce_pp: discount of the token returns R_t = r_t + gamma R_{t+1} (the reference: 1.0)", ge=0, le=1)
    normalize: bool = key(True, "single_rollout: normalise r - v over the batch to zero mean, unit variance")
    zero_signal_guard: bool = key(False, "single_rollout: zero the advantages when every reward in the batch is equal")
    tracker: TrackerConfig = field(default_factory=TrackerConfig, metadata={"help": "per-prompt Beta value tracker"})
    shaping: ShapingConfig = field(default_factory=ShapingConfig, metadata={"help": "entropy-based advantage shaping"})
    clip_low: float = key(0.2, "PPO clip ratio below 1 (epsilon_low)", ge=0, lt=1)
    clip_high: float = key(0.3, "PPO clip ratio above 1 (epsilon_high; > clip_low is clip-higher)", ge=0)
    dual_clip: float | None = key(3.0, "dual-clip bound on the ratio for negative advantages; null disables", gt=1)
    kl_coef: float = key(0.01, "coefficient of the k3 KL-to-reference loss (0 drops the reference model)", ge=0)
    entropy_coef: float = key(0.0, "entropy bonus coefficient in the loss (the paper uses none)", ge=0)
    cross_modal_kl_coef: float = key(0.0, "coefficient of KL(pi(.|text, image) || pi(.|text, blank image)) in the loss (one extra forward pass)", ge=0)
    loss_agg: str = key("token_mean", "loss aggregation (README: Loss aggregation): token_mean (over the step's tokens, TRL dapo) | micro_token_mean (token mean per micro-batch, averaged: the reference code, TRL bnpo) | seq_mean_token_mean | seq_mean_token_sum_norm", choices=LOSS_AGG_NAMES)
    grpo_eps: float = key(1e-4, "GRPO: epsilon in (r - group mean) / (group std + eps) (TRL 1e-4; the reference code 1e-6)", gt=0)
    kl_bias_correction: bool = key(True, "multiply the k3 KL loss by the probability ratio (TRL's default; the reference uses plain k3: false)")
    vllm_is_correction: bool = key(True, "train.use_vllm: reweight each rollout's loss by trainer/vLLM probability ratios and zero those past the cap (TRL's default; the reference has none: false)")
    cross_modal_kl_grad: bool = key(True, "cross-modal KL: train through it (true) or add it as a constant as the reference code does (false: it then only shifts the logged loss)")
    entropy_bonus: str = key("full", "entropy_coef raises: full (TRL: entropy of the whole next-token distribution) | sampled (-p log p of the sampled token, the reference code)", choices=("full", "sampled"))


@dataclass
class WarmStartConfig:
    enabled: bool = key(True, "supervised warm start after building the tiny model (format + some accuracy)")
    num_examples: int | None = key(None, "labelled training rows it may use (null: all of the training split)", ge=1)
    target_accuracy: float = key(0.25, "stop once greedy accuracy on the check rows reaches this", ge=0, le=1)
    check_examples: int = key(100, "validation rows used for the stopping check", ge=1)
    check_every: int = key(8, "optimizer steps between stopping checks (a fixed number of rows, not a share of an epoch)", ge=1)
    max_epochs: int = key(60, "cap on epochs if the target is never reached", ge=1)
    lr: float = key(2e-3, "AdamW learning rate of the warm start", gt=0)
    batch_size: int = key(32, "warm-start batch size", ge=1)
    seed: int = key(0, "seed of the built model and its warm start (part of the cache key)", ge=0, le=SEED_MAX)


@dataclass
class LoraConfig:
    enabled: bool = key(False, "train LoRA adapters instead of every weight (PEFT); the reference model is then the base with adapters off")
    r: int = key(64, "LoRA rank", ge=1)
    alpha: int = key(128, "LoRA alpha (scale = alpha / r)", ge=1)
    dropout: float = key(0.05, "LoRA dropout", ge=0, lt=1)
    target_modules: list[str] = key(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "module names that get adapters (these match the language model only; the vision tower stays as model.freeze_vision says)",
    )


@dataclass
class ModelConfig:
    preset: str = key("tiny", "preset name (the model/ config option)", choices=lambda: group_options("model"))
    name_or_path: str | None = key(None, "Hugging Face Hub id or local folder; null builds the tiny model")
    dtype: str = key("auto", "weights dtype: auto (bf16 on a GPU that has it, else fp32) | float32 | bfloat16", choices=("auto", "float32", "bfloat16", "float16"))
    min_pixels: int | None = key(None, "lower bound on pixels per image: images are resized into the bounds when the dataset is built (null: as they are, the processor's default)", ge=1)
    max_pixels: int | None = key(None, "upper bound on pixels per image: images are resized into the bounds when the dataset is built (null: as they are, the processor's default)", ge=1)
    freeze_vision: bool = key(False, "freeze the vision tower (the paper trains it)")
    attn_implementation: str = key("auto", "attention kernel: auto (flash_attention_2 when installed on a GPU, else sdpa) | flash_attention_2 | sdpa | eager", choices=("auto", "flash_attention_2", "sdpa", "eager"))
    gradient_checkpointing: bool = key(False, "recompute activations in the backward pass: less memory, about 30% more compute (real presets: on; it only slows the tiny model)")
    trust_remote_code: bool = key(False, "run Python code shipped in the model's repository when loading it (only for a model that needs it: Qwen2-VL and Qwen2.5-VL do not)")
    lora: LoraConfig = field(default_factory=LoraConfig, metadata={"help": "LoRA adapters through PEFT (fewer GPUs)"})
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig, metadata={"help": "tiny model warm start"})


@dataclass
class DataConfig:
    name: str = key("digits", "dataset (the data/ config option)", choices=lambda: group_options("data"))
    image_size: int = key(56, "digits: side of the upscaled RGB image in px (digit_sum: of each digit's slot)", ge=1)
    num_val: int = key(300, "validation rows held out (the rest train): digits, and local files without val_path (digit_sum: validation digit images)", ge=1)
    train_limit: int | None = key(None, "use only the first N training rows (null: all)", ge=1)
    val_limit: int | None = key(None, "validate on only the first N validation rows (null: all)", ge=1)
    hub_id: str | None = key(None, "Hugging Face dataset id read with datasets.load_dataset (null: local files in data.path)")
    path: str | None = key(None, "local data: with hub_id, a local copy of that dataset (hf download --local-dir); else a parquet/JSONL file, folder or glob")
    val_path: str | None = key(None, "validation parquet/JSONL file, folder or glob (null: val_split of the dataset; local files: num_val rows held out)")
    train_split: str = key("train", "split of the dataset used for training")
    val_split: str = key("validation", "split of the dataset used for validation")
    question_column: str = key("problem", "column holding the question text (<image> placeholders are removed)")
    answer_column: str = key("answer", "column holding the gold answer")
    image_column: str = key("images", "column holding the image: path, bytes, {bytes, path} or a list of these (every image is used, in order)")
    image_root: str | None = key(None, "folder that relative image paths are resolved against (null: the data file's folder)")
    skip_bad_rows: bool = key(False, "skip rows with a missing question, empty answer or unreadable image (and say how many) instead of failing")
    max_prompt_tokens: int | None = key(None, "drop prompts longer than this many tokens, image tokens included, before training (paper: 2048; null keeps every prompt)", ge=1)


@dataclass
class RollbackConfig:
    lr_factor: float = key(0.5, "each rollback multiplies the learning rate by this", gt=0, le=1)
    kl_factor: float = key(1.0, "each rollback multiplies the KL coefficient (algo.kl_coef) by this (1: unchanged; a kl_coef of 0 stays 0)", ge=1)
    max_times: int = key(2, "rollbacks at most; the alarm after the last one stops the run as train.on_collapse=stop", ge=0)


@dataclass
class TrainConfig:
    max_steps: int = key(150, "RL steps (each = one batch of rollouts_per_step rollouts)", ge=1)
    rollouts_per_step: int = key(32, "rollouts per RL step = prompts per step x algo.rollouts_per_prompt", ge=1)
    minibatch_size: int | None = key(None, "rollouts per optimizer update (null: the whole step, one update)", ge=1)
    micro_batch_size: int | None = key(None, "rollouts per forward/backward pass (null: the minibatch)", ge=1)
    lr: float = key(1e-6, "AdamW learning rate (constant)", gt=0)
    weight_decay: float = key(0.01, "AdamW weight decay", ge=0)
    max_grad_norm: float = key(1.0, "gradient clipping norm", gt=0)
    temperature: float = key(1.0, "rollout sampling temperature", gt=0)
    top_p: float = key(1.0, "rollout nucleus sampling", gt=0, le=1)
    skip_nonfinite_updates: bool = key(False, "skip the optimizer update when the gradient norm is not finite, as the reference does (TRL steps anyway); counted as train/skipped_updates. Not under DeepSpeed (launcher=zero2|zero3), whose engine steps inside backward")
    block_image_token: bool = key(False, "no generation may emit the image placeholder token: vLLM rollouts get the reference's logit bias -100 on it, validation and the tracker warm start suppress it (HF rollouts: TRL always does)")
    max_completion_length: int = key(1024, "longest rollout in tokens", ge=1)
    eval_every: int = key(25, "validate every N RL steps (and at step 0 and the last step); 0 disables", ge=0)
    val_batch_size: int = key(64, "validation generation batch size (greedy)", ge=1)
    val_max_new_tokens: int = key(1024, "longest validation answer in tokens", ge=1)
    save_every: int = key(50, "checkpoint every N RL steps (and at the end); 0 disables", ge=0)
    keep_checkpoints: int = key(2, "how many recent checkpoints to keep", ge=1)
    on_collapse: str = key("warn", "on a collapse alarm: warn (log it) | stop (checkpoint, stop) | rollback (back to a checkpoint before its evidence, lower lr, new seed, go on; README: Collapse detection)", choices=ON_COLLAPSE)
    rollback: RollbackConfig = field(default_factory=RollbackConfig, metadata={"help": "train.on_collapse=rollback: how a rollback changes the run"})
    log_samples_every: int = key(10, "every N RL steps append rollouts to samples.jsonl and a W&B table; 0 disables", ge=0)
    log_samples: int = key(4, "rollouts per samples.jsonl entry: the first K of the step's batch (main process)", ge=1)
    val_temperature: float = key(0.0, "validation sampling temperature (0: greedy; paper 0.6)", ge=0)
    bf16: str = key("auto", "bf16 mixed precision: auto (when the GPU supports it) | true | false", choices=("auto", "true", "false"), ignore_case=True)
    num_threads: int | None = key(None, "CPU threads for torch (null: the cores this process may use)", ge=1)
    use_vllm: bool = key(False, "generate rollouts with vLLM (GPU; needs the vllm extra)")
    vllm_mode: str = key("colocate", "vLLM placement: colocate (inside each training process) | server (a separate `trl vllm-serve`)", choices=("colocate", "server"))
    vllm_gpu_memory_utilization: float = key(0.3, "colocate: fraction of each GPU's memory vLLM may take (paper: 0.6)", gt=0, le=1)
    vllm_tensor_parallel_size: int = key(1, "colocate: GPUs one vLLM engine spans", ge=1)
    vllm_enable_sleep_mode: bool = key(False, "colocate: offload vLLM's weights and cache during the optimizer step (less memory, slower)")
    vllm_server_host: str = key("0.0.0.0", "server: host of `trl vllm-serve`")
    vllm_server_port: int = key(8000, "server: port of `trl vllm-serve`", ge=1, le=PORT_MAX)
    vllm_server_timeout: float = key(240.0, "server: seconds to wait for the server before failing", gt=0)


@dataclass
class RewardConfig:
    functions: list[str] = key(["accuracy"], "reward functions, TRL's convention: built-ins accuracy | format (<think>...</think>...\\boxed{}, the reference's check), or module:function / file.py:function (README: Your own reward)")
    weights: list[float] | None = key(None, "one weight per function; the step's reward is the weighted sum (null: 1.0 each)")
    grader: str = key("math_verify", "what the accuracy reward (and validation, the tracker's warm start) grades with: math_verify (last \\boxed{} or <answer> tag, option letters, math-verify equivalence) | mathruler (the reference's: the last \\boxed{} alone, mathruler's grade_answer; the paper recipes)", choices=GRADER_NAMES)


@dataclass
class CollapseConfig:
    entropy_ratio_below: float = key(0.2, "alarm rule: collapse/entropy_ratio below this ...", gt=0, le=1)
    entropy_patience: int = key(5, "... for this many consecutive steps", ge=1)
    val_drop: float = key(0.10, "alarm rule: accuracy down from its best by more than this (absolute)", gt=0, lt=1)
    format_rate_below: float = key(0.5, "alarm rule: train/format_rate below this ...", gt=0, le=1)
    format_patience: int = key(3, "... for this many consecutive steps", ge=1)
    nonfinite_loss: bool = key(True, "alarm rule: a NaN or infinite loss or grad norm")
    require_degradation: bool = key(True, "low entropy alarms only with falling format rate or accuracy (else it is convergence)")
    accuracy_window: int = key(5, "steps averaged for the train-accuracy degradation check", ge=1)


@dataclass
class LoggingConfig:
    wandb: str = key("offline", "W&B mode: offline (default, never waits on a network) | online | disabled", choices=("offline", "online", "disabled"))
    project: str = key("mssr", "W&B project")
    entity: str | None = key(None, "W&B entity (team or user)")
    runs_root: str = key("runs", "folder that receives one sub-folder per run")
    progress: bool = key(True, "show the rich progress bar")
    variant: str | None = key(None, "label `mssr compare` groups runs by (seeds together); null: the algorithm name")


@dataclass
class LauncherConfig:
    name: str = key("none", "how training starts: none (this process) | ddp | zero2 | zero3 (re-runs `mssr train` under `accelerate launch`)", choices=lambda: group_options("launcher"))
    num_processes: int | None = key(1, "training processes PER MACHINE, one per GPU (null: every GPU of this machine); the world size is num_processes x num_machines (accelerate's --num_processes, the total, is passed that product)", ge=1)
    accelerate_config: str | None = key(None, "accelerate config file: a name in conf/accelerate/ (ddp.yaml, zero2.yaml, zero3.yaml) or a path")
    main_process_port: int | None = key(None, "rendezvous port of process 0 (null: accelerate's default 29500; 0: a free port, one machine only)", ge=0, le=PORT_MAX)
    num_machines: int = key(1, "machines (nodes) the run spans, each starting num_processes processes (accelerate --num_machines; > 1 needs a launcher and main_process_ip)", ge=1)
    machine_rank: int = key(0, "this machine's rank, 0 .. num_machines - 1; rank 0 hosts the rendezvous and writes the run folder (accelerate --machine_rank)", ge=0)
    main_process_ip: str | None = key(None, "address of machine rank 0, reachable from every machine (accelerate --main_process_ip; needed when num_machines > 1)")


@dataclass
class ExecutorConfig:
    """Where a run's process runs (never what it computes: a run folder's settings check ignores every key here)."""

    name: str = key("local", "where runs run: local (processes on this machine) | slurm (jobs of the SLURM cluster, through submitit)", choices=lambda: group_options("executor"))
    max_parallel: int | None = key(1, "local: runs at once (null: one per GPU group, each run its own CUDA_VISIBLE_DEVICES; 1 on CPU)", ge=1)
    partition: str | None = key(None, "slurm: partition (sbatch --partition; null: the cluster's default)")
    account: str | None = key(None, "slurm: account charged (sbatch --account)")
    qos: str | None = key(None, "slurm: quality of service (sbatch --qos)")
    time_min: int = key(240, "slurm: time limit per job in minutes (sbatch --time); a run reaching it checkpoints and requeues itself", ge=1)
    gpus_per_node: int | None = key(None, "slurm: GPUs per node (null: launcher.num_processes; 0: a CPU-only job)", ge=0)
    nodes: int | None = key(None, "slurm: nodes per job, one per machine of the run (null: launcher.num_machines; any other value must equal it)", ge=1)
    cpus_per_task: int | None = key(None, "slurm: CPUs per task (sbatch --cpus-per-task; null: the cluster's default)", ge=1)
    mem_gb: float | None = key(None, "slurm: memory per node in GB (sbatch --mem; null: the cluster's default)", gt=0)
    constraint: str | None = key(None, "slurm: node features required (sbatch --constraint)")
    array_parallelism: int = key(256, "slurm: the most tasks of one job array running at once (sbatch --array=...%N)", ge=1)
    signal_delay_s: int = key(120, "slurm: seconds before the time limit that SLURM signals the job to checkpoint and requeue", ge=1)
    sbatch_extra: list = key([], "slurm: extra #SBATCH lines, each without '#SBATCH' (e.g. '--exclusive', '--mail-type=END')")
    setup: list = key([], "slurm: shell lines run before the command in each job (e.g. 'module load cuda', 'source .venv/bin/activate')")


@dataclass
class RootConfig:
    seed: int = key(0, "seed of the RL run (sampling, shuffling); the split and the tiny model have their own", ge=0, le=SEED_MAX)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    reward: RewardConfig = field(default_factory=RewardConfig, metadata={"help": "what a rollout earns"})
    collapse: CollapseConfig = field(default_factory=CollapseConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig, metadata={"help": "several GPUs: how the training processes start"})
    executor: ExecutorConfig = field(default_factory=ExecutorConfig, metadata={"help": "where runs run: this machine or SLURM"})


# Keys shown under "common keys" in --help.
COMMON_KEYS = [
    "seed",
    "train.max_steps",
    "train.rollouts_per_step",
    "train.lr",
    "train.eval_every",
    "algo.rollouts_per_prompt",
    "algo.kl_coef",
    "algo.shaping.alpha",
    "algo.shaping.kappa",
    "train.on_collapse",
    "logging.wandb",
]


@dataclass(frozen=True)
class Leaf:
    """One key of the schema, nested dataclasses flattened: ``train.max_steps``, its type and rule."""

    dotted: str
    kind: type  # int | float | bool | str | list
    nullable: bool  # the type says ``X | None``
    rule: Range | None  # None: a field declared without key() (none today)
    help: str


def _leaves(cls, prefix: str) -> list[Leaf]:
    import types
    import typing
    from dataclasses import fields, is_dataclass

    hints = typing.get_type_hints(cls)
    out: list[Leaf] = []
    for f in fields(cls):
        hint = hints[f.name]
        if is_dataclass(hint):
            out += _leaves(hint, f"{prefix}{f.name}.")
            continue
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else ()
        nullable = type(None) in args
        kind = next((a for a in args if a is not type(None)), hint) if args else hint
        kind = typing.get_origin(kind) or kind  # list[str] -> list
        out.append(Leaf(f"{prefix}{f.name}", kind, nullable, f.metadata.get("range"), f.metadata.get("help", "")))
    return out


@functools.cache
def leaves() -> dict[str, Leaf]:
    """Every key of the config (dotted) -> its Leaf, in schema order."""
    return {leaf.dotted: leaf for leaf in _leaves(RootConfig, "")}


def field_help(dotted: str) -> str:
    """The one-line help of a dotted key, e.g. ``train.max_steps``."""
    leaf = leaves().get(dotted)
    return leaf.help if leaf else ""
