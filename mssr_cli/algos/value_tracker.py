"""Per-prompt Beta-Bernoulli value tracker with a KL-adaptive forgetting factor (MVSR/MSSR).

The single-rollout baseline of the MSSR paper (sec. 4.1, equations as numbered in the
reference code): V(x) ~ Beta(alpha(x), beta(x)), v(x) = alpha / (alpha + beta) (eq. 5);
warm start alpha0 = N0 * v0, beta0 = N0 * (1 - v0), N0 = 1 / (1 - rho_min) (eq. 6,
Algorithm 2); update with forgetting alpha <- rho * alpha + r, beta <- rho * beta + (1 - r)
(eq. 7). rho follows the policy's KL to the reference over a window of steps (ALGORITHMS.md).

Reference-code facts (github ruiiu/MSSR, ``verl/trainer/core_algos.py`` class
``MVSRValueTracker`` and ``compute_mvsr_advantage``; ``verl/trainer/ray_trainer.py``),
read to check fidelity:

- The KL window is hard-coded to 10 steps (``self.kl_window_size = 10``), ignoring the
  config's ``mvsr_kl_window_size: 20``. Here ``kl_window`` is honoured (default 20, the
  paper); pass ``kl_window=10`` to reproduce the code.
- The step's KL joins the window before rho is computed (``update`` appends, then calls
  ``_get_adaptive_rho``), so the first update with a KL already uses it.
- "paper" schedule: above the target the code computes ``min(kl / target, 1) = 1`` and so
  ``rho_max - 1 * (rho_max - rho_min) = rho_min``; below it rho RISES with KL from rho_min
  to rho_max (its comment says "Lower KL -> higher rho", the code does the opposite), a
  jump back to rho_min at the target. Kept as the default; "monotone" is the fix.
- target_kl defaults differ: 0.1 in the class, 0.06 in ``verl/trainer/config.py``, 0.01
  in ``examples/config_mssr.yaml`` (the paper's value, used here).
- The KL fed to rho: per rollout, the token mean of ``compute_kl(old_log_probs,
  ref_log_probs, kl_penalty)`` (``low_var_kl`` = k3 in the recipe), rollout policy before
  the step's update; then the batch mean.
- Per-prompt variant: D(x) is a token SUM (not mean) of ``old - new`` sampled-token log
  probs, where "old" are the log probs stored the last time x was seen, i.e. of a
  different response, so D is not a KL of one sequence; a first-seen prompt or a
  non-finite D gets rho_max; in that mode no KL joins the window; duplicates of an id in
  one batch share one rho (dict keyed by id). Here D(x) is whatever the caller passes.
- Rewards are binarised (``scores > 0.5``) for the update, but the warm start averages
  raw scores; here both binarise (identical for 0/1 rewards).
- The tracker is not saved in checkpoints (``_save_checkpoint`` stores actor, critic and
  dataloader only) and a resumed run skips the warm start, so every prompt falls back to
  v_init. Here ``state_dict``/``load_state_dict`` carry it through checkpoints.
"""

from __future__ import annotations

import math
import numbers
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import torch

__all__ = ["SCHEDULES", "BetaValueTracker"]

SCHEDULES = ("paper", "monotone", "per_prompt")
_STATE_FORMAT = "mssr.BetaValueTracker/1"

PromptId = int | str


def _normalise_id(x: Any) -> PromptId:
    """ints (incl. numpy/torch scalars, integral floats) -> int, strings -> str.

    1 and "1" stay distinct; both survive a JSON round trip of ``state_dict`` unchanged.
    """
    if isinstance(x, torch.Tensor):
        x = x.item()
    if isinstance(x, str):
        return str(x)
    if isinstance(x, numbers.Integral):  # bool and numpy ints too
        return int(x)
    if isinstance(x, numbers.Real) and float(x).is_integer():
        return int(x)
    raise TypeError(f"prompt ids must be ints or strings, got {type(x).__name__}: {x!r}")


def _id_list(ids: Iterable[Any]) -> list[PromptId]:
    if hasattr(ids, "tolist"):  # torch / numpy arrays
        ids = ids.tolist()
    if isinstance(ids, (str, int)):
        ids = [ids]
    return [_normalise_id(i) for i in ids]


def _float_list(x: Any) -> list[float]:
    """Tensor, array, list or scalar -> flat list of Python floats (float64)."""
    if isinstance(x, numbers.Real):  # keep a Python float exact (as_tensor would round to f32)
        return [float(x)]
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x, dtype=torch.float64)
    return x.detach().reshape(-1).to("cpu", torch.float64).tolist()


class BetaValueTracker:
    """Per-prompt success-probability baseline v(x) for single-rollout RL.

    Args:
        rho_min: lowest forgetting factor (fastest forgetting; paper 0.875). Also sets the
            warm-start pseudo-count N0 = 1 / (1 - rho_min) (8 for the default).
        rho_max: highest forgetting factor (paper 0.96).
        target_kl: KL* of the global schedules (paper 0.01).
        kl_window: steps of KL averaged by the global schedules (paper 20, code 10).
        v_init: prior value of a prompt never seen: alpha = v_init * N0, beta =
            (1 - v_init) * N0 (ALGORITHMS.md's 0.5 gives alpha = beta = 0.5 * N0).
        schedule: how rho is chosen, one of ``SCHEDULES``:
            "paper"      mean_kl > KL*: rho_min; else rho_min + (mean_kl/KL*)(rho_max-rho_min)
            "monotone"   rho_max - min(mean_kl/KL*, 1)(rho_max - rho_min)
            "per_prompt" SPO: rho(x) = 2 ** (-D(x) / d_half), from ``update(prompt_kl=...)``
            All are clipped to [rho_min, rho_max]; with no KL yet the global schedules use
            (rho_min + rho_max) / 2.
        d_half: D_half of the per-prompt schedule (SPO: 0.06).

    Attributes:
        last_rho: the rho applied by the latest ``update`` (mean over rollouts for
            "per_prompt"); None before the first update.
        num_updates: number of ``update`` calls so far.
    """

    def __init__(
        self,
        rho_min: float = 0.875,
        rho_max: float = 0.96,
        target_kl: float = 0.01,
        kl_window: int = 20,
        v_init: float = 0.5,
        schedule: str = "paper",
        d_half: float = 0.06,
    ) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown rho schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
        if not 0.0 < rho_min <= rho_max <= 1.0 or not rho_min < 1.0:
            raise ValueError(
                f"need 0 < rho_min <= rho_max <= 1 and rho_min < 1; got {rho_min=}, {rho_max=}"
            )
        if not target_kl > 0:
            raise ValueError(f"target_kl must be > 0, got {target_kl!r}")
        if isinstance(kl_window, bool) or not isinstance(kl_window, int) or kl_window < 1:
            raise ValueError(f"kl_window must be a positive int, got {kl_window!r}")
        if not 0.0 <= v_init <= 1.0:
            raise ValueError(f"v_init must lie in [0, 1], got {v_init!r}")
        if not d_half > 0:
            raise ValueError(f"d_half must be > 0, got {d_half!r}")
        self.rho_min = float(rho_min)
        self.rho_max = float(rho_max)
        self.target_kl = float(target_kl)
        self.kl_window = kl_window
        self.v_init = float(v_init)
        self.schedule = schedule
        self.d_half = float(d_half)
        self.n0 = 1.0 / (1.0 - self.rho_min)  # eq. 6: effective window of the warm start
        self._alpha: dict[PromptId, float] = {}
        self._beta: dict[PromptId, float] = {}
        self._kls: deque[float] = deque(maxlen=kl_window)
        self.last_rho: float | None = None
        self.num_updates = 0

    # ---- state per prompt ------------------------------------------------------------

    @property
    def prior(self) -> tuple[float, float]:
        """(alpha, beta) of a prompt never seen: (v_init * N0, (1 - v_init) * N0)."""
        return self.v_init * self.n0, (1.0 - self.v_init) * self.n0

    @property
    def num_prompts(self) -> int:
        """Prompts with their own state (warm-started or updated at least once)."""
        return len(self._alpha)

    def warm_start(self, ids: Sequence[Any], outcomes: Sequence[Sequence[float]]) -> None:
        """Initialise prompts from n0 rollouts each (eq. 6, Algorithm 2 of the paper).

            v0(x) = mean_k 1[r_k > 0.5],  alpha0 = N0 * v0,  beta0 = N0 * (1 - v0)

        Args:
            ids: B prompt ids (ints or strings).
            outcomes: B lists of 0/1 outcomes, one list per id. An id given twice pools
                its lists; an empty list leaves the prompt at the prior. Replaces any
                state those ids had.
        """
        keys = _id_list(ids)
        if len(keys) != len(outcomes):
            raise ValueError(f"warm_start: {len(keys)} ids but {len(outcomes)} outcome lists")
        pooled: dict[PromptId, list[float]] = {}
        for key, outs in zip(keys, outcomes, strict=True):
            pooled.setdefault(key, []).extend(_float_list(outs))
        for key, outs in pooled.items():
            if not outs:
                continue
            v0 = sum(1.0 if o > 0.5 else 0.0 for o in outs) / len(outs)
            self._alpha[key] = self.n0 * v0
            self._beta[key] = self.n0 * (1.0 - v0)

    def _value(self, key: PromptId) -> float:
        if key not in self._alpha:
            return self.v_init
        a, b = self._alpha[key], self._beta[key]
        return a / (a + b)

    def values(self, ids: Sequence[Any]) -> torch.Tensor:
        """Baselines v(x) = alpha / (alpha + beta) (eq. 5), before this step's update.

        Args:
            ids: B prompt ids; an id never seen gets v_init.

        Returns:
            [B] float32 tensor on the CPU.
        """
        return torch.tensor([self._value(k) for k in _id_list(ids)], dtype=torch.float32)

    def mean_value(self) -> float:
        """Mean v(x) over tracked prompts (metric tracker/mean_value); v_init if none."""
        if not self._alpha:
            return self.v_init
        return sum(self._value(k) for k in self._alpha) / len(self._alpha)

    # ---- forgetting factor -------------------------------------------------------------

    @property
    def mean_kl(self) -> float | None:
        """Mean of the KL window (the last ``kl_window`` steps); None before any KL."""
        return sum(self._kls) / len(self._kls) if self._kls else None

    def rho_for_kl(self, mean_kl: float | None) -> float:
        """Global-schedule rho for a window-mean KL (the "per_prompt" schedule uses the
        "paper" rule here, for introspection only).

        Args:
            mean_kl: window mean of the per-step KL(pi || pi_ref); None = no KL known yet.

        Returns:
            rho in [rho_min, rho_max].
        """
        span = self.rho_max - self.rho_min
        if mean_kl is None:
            rho = (self.rho_min + self.rho_max) / 2
        elif self.schedule == "monotone":
            rho = self.rho_max - min(mean_kl / self.target_kl, 1.0) * span
        elif mean_kl > self.target_kl:  # "paper": fast forgetting when the policy moves fast
            rho = self.rho_min
        else:  # "paper": rises with KL up to KL*, then jumps down (reference-code schedule)
            rho = self.rho_min + (mean_kl / self.target_kl) * span
        return min(max(rho, self.rho_min), self.rho_max)  # negative KL -> bound, never outside

    @property
    def rho(self) -> float:
        """The global rho the current KL window gives (next update without a new KL)."""
        return self.rho_for_kl(self.mean_kl)

    def _per_prompt_rhos(self, prompt_kl: Any, n: int) -> list[float]:
        """SPO: rho(x) = 2 ** (-D(x) / d_half), clipped; unknown (None/NaN/inf) -> rho_max."""
        if prompt_kl is None:
            return [self.rho_max] * n
        d = torch.tensor(_float_list(prompt_kl), dtype=torch.float64)  # [B]
        if d.numel() != n:
            raise ValueError(f"prompt_kl has {d.numel()} entries for a batch of {n}")
        rho = torch.exp2(-d / self.d_half).clamp(self.rho_min, self.rho_max)  # [B]
        rho = torch.where(torch.isfinite(d), rho, torch.full_like(rho, self.rho_max))  # [B]
        return rho.tolist()

    # ---- update --------------------------------------------------------------------------

    def update(
        self,
        ids: Sequence[Any],
        rewards: torch.Tensor,
        kl: float | torch.Tensor | None = None,
        prompt_kl: torch.Tensor | None = None,
    ) -> float:
        """Bayesian update with forgetting (eq. 7), after the advantages were computed.

            r = 1[reward > 0.5];  alpha(x) <- rho * alpha(x) + r;  beta(x) <- rho * beta(x) + 1 - r

        The step's ``kl`` joins the window first, then rho is computed from the window
        mean. Rollouts are applied in order, so an id twice in one batch is updated twice.

        Args:
            ids: B prompt ids.
            rewards: [B] rewards (binarised at 0.5; NaN counts as 0).
            kl: this step's KL(pi || pi_ref) (token mean, batch mean): a float, a 0-d
                tensor or a [B] tensor (averaged). None or non-finite: the window is left
                as is.
            prompt_kl: [B] D(x) for the "per_prompt" schedule (ignored otherwise); None,
                NaN or inf entries get rho_max, as the reference does for a prompt seen
                for the first time.

        Returns:
            The rho applied (the mean over rollouts for "per_prompt"; rho_max for an
            empty batch there).
        """
        keys = _id_list(ids)
        outcomes = [1.0 if r > 0.5 else 0.0 for r in _float_list(rewards)]  # [B]
        if len(outcomes) != len(keys):
            raise ValueError(f"update: {len(keys)} ids but {len(outcomes)} rewards")
        if kl is not None:
            kl_values = _float_list(kl)
            step_kl = sum(kl_values) / len(kl_values) if kl_values else math.nan
            if math.isfinite(step_kl):
                self._kls.append(step_kl)  # deque(maxlen) drops the oldest step
        if self.schedule == "per_prompt":
            rhos = self._per_prompt_rhos(prompt_kl, len(keys))
            applied = sum(rhos) / len(rhos) if rhos else self.rho_max
        else:
            applied = self.rho
            rhos = [applied] * len(keys)
        prior_alpha, prior_beta = self.prior
        for key, r, rho in zip(keys, outcomes, rhos, strict=True):
            alpha = self._alpha.get(key, prior_alpha)
            beta = self._beta.get(key, prior_beta)
            self._alpha[key] = rho * alpha + r  # eq. 7
            self._beta[key] = rho * beta + (1.0 - r)  # eq. 7
        self.last_rho = applied
        self.num_updates += 1
        return applied

    # ---- checkpointing -------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """Constructor arguments, as plain Python types."""
        return {
            "rho_min": self.rho_min,
            "rho_max": self.rho_max,
            "target_kl": self.target_kl,
            "kl_window": self.kl_window,
            "v_init": self.v_init,
            "schedule": self.schedule,
            "d_half": self.d_half,
        }

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state. Prompts are ``[id, alpha, beta]`` triples, so int and
        str ids come back with their type (JSON object keys would all become strings)."""
        return {
            "format": _STATE_FORMAT,
            "config": self.config(),
            "prompts": [[k, self._alpha[k], self._beta[k]] for k in self._alpha],
            "kl_window": list(self._kls),
            "last_rho": self.last_rho,
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (also after json.dumps/json.loads).

        The tracker keeps its own constructor settings (the run's config); only the
        state is restored. A shorter ``kl_window`` keeps the most recent steps.
        """
        missing = {"prompts", "kl_window", "last_rho", "num_updates"} - set(state)
        if missing or state.get("format", _STATE_FORMAT) != _STATE_FORMAT:
            raise ValueError(
                f"not a BetaValueTracker state (format {state.get('format')!r}, "
                f"missing {sorted(missing)})"
            )
        alpha: dict[PromptId, float] = {}
        beta: dict[PromptId, float] = {}
        for key, a, b in state["prompts"]:
            k = _normalise_id(key)
            alpha[k], beta[k] = float(a), float(b)
        self._alpha, self._beta = alpha, beta
        self._kls = deque((float(v) for v in state["kl_window"]), maxlen=self.kl_window)
        last = state["last_rho"]
        self.last_rho = None if last is None else float(last)
        self.num_updates = int(state["num_updates"])
