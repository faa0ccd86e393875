"""Trainer callbacks: validation, the per-step metrics line (jsonl + W&B), the progress bar.

TRL counts optimizer updates (``state.global_step``); mssr counts RL steps (one batch of
rollouts, possibly several updates). ``RunLogger`` converts between the two.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager

from transformers import TrainerCallback

from mssr_cli.training.metrics import EntropyRatio, rename_trl_logs


def side_by_side(images):
    """One picture of a sample's images for its W&B table cell: a list of several is pasted left to right in
    order (top-aligned, each at its own size), so every image the prompt held is shown; one image as it is."""
    if not isinstance(images, (list, tuple)):
        return images
    images = [image for image in images if image is not None]
    if len(images) <= 1:
        return images[0] if images else None
    from PIL import Image

    images = [image.convert("RGB") for image in images]
    canvas = Image.new("RGB", (sum(i.width for i in images), max(i.height for i in images)), "white")
    left = 0
    for image in images:
        canvas.paste(image, (left, 0))
        left += image.width
    return canvas


class RunLogger:
    """Collects each RL step's metrics and writes one line to metrics.jsonl and to W&B."""

    def __init__(self, run_folder, updates_per_step: int, rollouts_per_step: int, wandb_run=None,
                 detector=None, console=None, on_collapse: str = "warn", rollbacks_left: int = 0):
        self.run_folder = run_folder
        self.detector = detector
        self.console = console
        self.on_collapse = on_collapse  # train.on_collapse: warn | stop | rollback
        self.rollbacks_left = rollbacks_left  # on_collapse=rollback: rollbacks still allowed (then: stop)
        self.stop_reason: str | None = None
        self.rollback_alarm = None  # the alarm a rollback answers; the runner restores a checkpoint and clears it
        self.rollbacks: int | None = 0 if on_collapse == "rollback" else None  # collapse/rollbacks (None: not logged)
        self.abandoned_steps = 0  # RL steps a rollback abandoned: their rollouts count in `rollouts`
        self.last_step: int | None = None  # the step of the trajectory's latest line (None: nothing logged yet)
        self.updates_per_step = updates_per_step
        self.rollouts_per_step = rollouts_per_step
        self.wandb_run = wandb_run
        self.entropy_ratio = EntropyRatio()
        self.pending: dict[str, float] = {}
        self.latest: dict[str, float] = {}
        self.started = time.time()
        self.last_write = self.started
        self.samples_every = 0  # train.log_samples_every
        self.samples_source = None  # () -> the step's kept rollouts (the trainer's pop_samples)

    def rl_step(self, global_step: int) -> int:
        return global_step // self.updates_per_step

    def resume(self, lines: list[dict], done: int) -> None:
        """Continue after the lines a resumed run keeps (up to RL step ``done``, and those of attempts a rollback
        abandoned): time/elapsed goes on from the latest, abandoned ones included (their time was spent)."""
        from mssr_cli.runs.trajectory import kept

        ours = [m for m in kept(lines) if m["step"] <= done]
        elapsed = [m["time/elapsed"] for m in lines if isinstance(m.get("time/elapsed"), (int, float))]
        self.started = time.time() - max(elapsed, default=0.0)
        for line in ours:
            self.latest.update({k: v for k, v in line.items() if v is not None})
        self.last_step = ours[-1]["step"] if ours else None

    def stage(self, metrics: dict[str, float]) -> None:
        """Metrics to attach to the next line written (e.g. validation before the step's log)."""
        self.pending.update(metrics)

    def write(self, step: int, metrics: dict[str, float]) -> dict:
        now = time.time()
        rollouts = (step + self.abandoned_steps) * self.rollouts_per_step  # cost: abandoned steps' rollouts too
        line = {"step": step, "rollouts": rollouts, **self.pending, **metrics}
        self.pending = {}
        if self.rollbacks is not None:
            line["collapse/rollbacks"] = self.rollbacks
        if "collapse/entropy" in line:
            line["collapse/entropy_ratio"] = self.entropy_ratio(line["collapse/entropy"])
        line["time/elapsed"] = round(now - self.started, 3)
        if step > 0:
            line["time/step_seconds"] = round(now - self.last_write, 3)
        self.last_write = now
        line = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in line.items()}
        if self.detector is not None and step > 0:
            self._watch_collapse(line)
        self.run_folder.append_metrics(line)
        if self.wandb_run is not None:
            self.wandb_run.log({k: v for k, v in line.items() if k != "step" and v is not None}, step=step)
        self.latest.update({k: v for k, v in line.items() if v is not None})
        self.last_step = step
        return line

    def write_samples(self, step: int) -> None:
        """Every ``samples_every`` RL steps: the step's kept rollouts to samples.jsonl and a W&B table."""
        samples = self.samples_source() if self.samples_source is not None else []
        if not self.samples_every or step % self.samples_every or not samples:
            return
        rows = [{"step": step, **{k: v for k, v in s.items() if k != "image"}} for s in samples]
        self.run_folder.append_samples(rows)
        if self.wandb_run is not None:
            import wandb

            columns = ["step", "id", "completion", "reward", "advantage", "entropy", "image"]
            table = wandb.Table(columns=columns)
            for row, sample in zip(rows, samples, strict=True):
                image = side_by_side(sample.get("image"))
                table.add_data(*(row[c] for c in columns[:-1]), wandb.Image(image) if image is not None else None)
            self.wandb_run.log({"samples": table}, step=step)

    def alert(self, title: str, text: str) -> None:
        """A W&B alert (email/Slack, as the project's settings say), when W&B is online."""
        if self.wandb_run is not None and getattr(self.wandb_run.settings, "mode", "offline") == "online":
            self.wandb_run.alert(title=title, text=text)

    def _watch_collapse(self, line: dict) -> None:
        """Feed the line to the collapse detector; warn, alert W&B and, as train.on_collapse says, request a
        stop or a rollback."""
        from mssr_cli.training.rollback import earliest_evidence

        alarms = self.detector.observe(line)
        line["collapse/alarm"] = self.detector.metric_value()
        for alarm in alarms:
            if self.console is not None:
                self.console.print(f"[bold yellow]collapse alarm[/bold yellow] at step {alarm.step}: {alarm.message}")
            self.alert(f"mssr collapse alarm ({alarm.rule})", alarm.message)
        if not alarms or self.stop_reason is not None or self.rollback_alarm is not None or self.on_collapse == "warn":
            return
        if self.on_collapse == "rollback" and self.rollbacks_left > 0:
            self.rollback_alarm = earliest_evidence(alarms)
            return
        alarm = alarms[0]
        self.stop_reason = f"{alarm.rule} at step {alarm.step}: {alarm.message}"
        if self.on_collapse == "rollback":
            self.stop_reason += f" (no rollback left after {self.rollbacks}: train.rollback.max_times)"


class ValidationCallback(TrainerCallback):
    """Validation at step 0, every ``eval_every`` RL steps, and at the last step: greedy, or sampled at
    ``temperature`` with the rollouts' ``top_p`` (the reference's validation overrides only the temperature)."""

    def __init__(self, logger: RunLogger, processor, val_set, eval_every: int, max_steps: int, batch_size: int,
                 max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0, block_image_token: bool = False,
                 grader: str = "math_verify"):
        self.logger, self.processor, self.val_set, self.grader = logger, processor, val_set, grader
        self.eval_every, self.max_steps = eval_every, max_steps
        self.batch_size, self.max_new_tokens, self.temperature = batch_size, max_new_tokens, temperature
        self.top_p, self.block_image_token = top_p, block_image_token

    @classmethod
    def from_config(cls, cfg, logger: RunLogger, processor, val_set) -> ValidationCallback:
        """The validation a composed config asks for (its ``train`` keys, graded by ``reward.grader``)."""
        train = cfg.train
        return cls(logger, processor, val_set, train.eval_every, train.max_steps, train.val_batch_size,
                   train.val_max_new_tokens, train.val_temperature, train.top_p, train.block_image_token,
                   cfg.reward.grader)

    def _validate(self, model) -> dict[str, float]:
        from mssr_cli.models.generation import greedy_accuracy
        from mssr_cli.training.distributed import generate_across_processes

        # several processes: each answers a shard and all get the same metrics (no rank waits alone)
        result = greedy_accuracy(model, self.processor, self.val_set, self.batch_size, self.max_new_tokens,
                                 temperature=self.temperature, spread=generate_across_processes, top_p=self.top_p,
                                 block_image_token=self.block_image_token, grader=self.grader)
        return {"val/accuracy": result["accuracy"], "val/format_rate": result["format_rate"]}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # step 0 once: not again when a rollback restores checkpoint-0 (the policy before RL)
        if self.eval_every and state.global_step == 0 and self.logger.last_step is None:
            self.logger.write(0, self._validate(model))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if not self.eval_every or state.global_step % self.logger.updates_per_step:
            return
        step = self.logger.rl_step(state.global_step)
        if step % self.eval_every == 0 or step == self.max_steps:
            self.logger.stage(self._validate(model))


class OnTrainBegin(TrainerCallback):
    """Runs ``fn()`` once, when ``train()`` has prepared the model: under DeepSpeed it is on its GPU
    (and ZeRO-3-sharded) only from then on. Every process runs it (e.g. the tracker warm start)."""

    def __init__(self, fn):
        self.fn = fn

    def on_train_begin(self, args, state, control, **kwargs):
        self.fn()


class InterruptCallback(TrainerCallback):
    """Ctrl-C while training: finish the RL step, checkpoint it, stop (a second Ctrl-C stops at once).

    A checkpoint written wherever the KeyboardInterrupt lands would not resume the same run: mid-step,
    TRL regenerates the half-used batch; between the optimizer update and the step counter, the weights
    and the tracker are one update ahead of the checkpoint's name."""

    def __init__(self, updates_per_step: int):
        self.updates_per_step = updates_per_step
        self.requested = False

    @contextmanager
    def catching_sigint(self):
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield
            return

        def handler(signum, frame):
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.updates_per_step:
            return
        from mssr_cli.training.distributed import broadcast_from_main

        self.requested = broadcast_from_main(self.requested)  # every process stops at the same step
        if self.requested:
            control.should_save = True
            control.should_training_stop = True


class MetricsCallback(TrainerCallback):
    """Turns TRL's log of each RL step into one mssr metrics line."""

    def __init__(self, logger: RunLogger):
        self.logger = logger

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs:  # the end-of-training summary log has no step metrics
            return
        from mssr_cli.training.distributed import broadcast_from_main

        step = self.logger.rl_step(state.global_step)
        self.logger.write(step, rename_trl_logs(logs))
        self.logger.write_samples(step)
        # every process stops together, on rank 0's word (a rank stopping alone would hang the others)
        logger = self.logger
        logger.stop_reason, logger.rollback_alarm = broadcast_from_main((logger.stop_reason, logger.rollback_alarm))
        if logger.rollback_alarm is not None:  # on_collapse=rollback: stop unsaved; the runner restores a checkpoint
            control.should_save = False
            control.should_training_stop = True
        elif logger.stop_reason is not None:  # on_collapse=stop (or no rollback left): checkpoint, then stop
            control.should_save = True
            control.should_training_stop = True
        return control


class ProgressCallback(TrainerCallback):
    """A rich progress bar over RL steps: reward, validation accuracy, time left."""

    def __init__(self, logger: RunLogger, progress, max_steps: int):
        self.logger, self.progress = logger, progress
        self.task = progress.add_task("RL", total=max_steps)

    def on_train_begin(self, args, state, control, **kwargs):
        self.progress.update(self.task, completed=self.logger.rl_step(state.global_step), description=self._describe())

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.progress.update(self.task, completed=self.logger.rl_step(state.global_step), description=self._describe())

    def _describe(self) -> str:
        latest = self.logger.latest
        reward, val = latest.get("train/reward"), latest.get("val/accuracy")
        return f"RL  reward {'-' if reward is None else f'{reward:.2f}'}  val {'-' if val is None else f'{val:.2f}'}"
