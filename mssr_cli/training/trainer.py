"""The TRL seam: one small GRPOTrainer subclass through which every algorithm runs.

What it changes, and why:
- checkpoints are written to a staging folder and moved into place with one rename, so a crash
  mid-save never leaves a half-written checkpoint that a resume would pick up.
"""

from __future__ import annotations

import os
import shutil

from trl import GRPOTrainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR


class RLTrainer(GRPOTrainer):
    """GRPOTrainer with atomic checkpoints (and, later, the single-rollout estimators)."""

    def __init__(self, *args, keep_checkpoints: int = 2, **kwargs):
        super().__init__(*args, **kwargs)
        self.keep_checkpoints = keep_checkpoints

    def _save_checkpoint(self, model, trial):
        final_root = self.args.output_dir
        staging_root = os.path.join(final_root, ".staging")
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        shutil.rmtree(os.path.join(staging_root, name), ignore_errors=True)
        self.args.output_dir = staging_root  # the parent writes into <output_dir>/checkpoint-N
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.output_dir = final_root
        if not self.args.should_save:
            return
        target = os.path.join(final_root, name)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(os.path.join(staging_root, name), target)
        self._drop_old_checkpoints(final_root)

    def _drop_old_checkpoints(self, root: str) -> None:
        found = [d for d in os.listdir(root) if d.startswith(PREFIX_CHECKPOINT_DIR + "-")]
        found.sort(key=lambda d: int(d.rsplit("-", 1)[1]))
        for old in found[: max(0, len(found) - self.keep_checkpoints)]:
            shutil.rmtree(os.path.join(root, old), ignore_errors=True)
