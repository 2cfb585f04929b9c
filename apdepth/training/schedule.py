"""The learning-rate schedule: a linear warm-up, then an exponential (or cosine) decay.

The package's one learning-rate schedule: both ApDepth stages (:meth:`LRSchedule.from_config`, the
``optim.*`` keys), the fidelity report and the component pre-training of the demo model use it.
``LRSchedule(n)`` is the factor ``torch.optim.lr_scheduler.LambdaLR`` multiplies the base rate by
after ``n`` optimizer steps, so optimizer step ``n + 1`` runs at ``lr * LRSchedule(n)``
(:meth:`LRSchedule.scheduler` makes that ``LambdaLR``).

Warm-up (``n < warmup_steps``):

* ``warmup_from_zero=False`` (apdepth's default): ``(n + 1) / warmup_steps``; the first step already
  moves the weights.
* ``warmup_from_zero=True`` (the authors' release and Marigold, ``IterExponential``): ``n / warmup_steps``;
  the first optimizer step runs at learning rate 0.

Decay (``n >= warmup_steps``, ``t = (n - warmup_steps) / decay_steps``):

* ``exponential``: ``final_ratio ** t``, never below ``final_ratio``. The paper default decays over
  25,000 steps after the warm-up; the release over ``25,000 - warmup`` = 24,900 (its ``total_iter``
  counts the warm-up).
* ``cosine``: ``final_ratio + (1 - final_ratio) * (1 + cos(pi * min(t, 1))) / 2`` (component pre-training).
"""

from __future__ import annotations

import math

import torch

DECAYS = ("exponential", "cosine")


class LRSchedule:
    """Learning-rate factor after ``n`` optimizer steps (a plain class: LambdaLR saves and restores its
    attributes with the scheduler state)."""

    def __init__(self, warmup_steps: int, decay_steps: int, final_ratio: float, *, warmup_from_zero: bool = False,
                 decay: str = "exponential"):
        if warmup_steps < 0 or decay_steps <= 0:
            raise ValueError(f"LRSchedule: warmup_steps must be >= 0 and decay_steps > 0, got {warmup_steps}, "
                             f"{decay_steps}")
        if not 0 < final_ratio <= 1:
            raise ValueError(f"LRSchedule: final_ratio must be in (0, 1], got {final_ratio}")
        if decay not in DECAYS:
            raise ValueError(f"LRSchedule: decay must be one of {DECAYS}, got {decay!r}")
        self.warmup_steps, self.decay_steps, self.final_ratio = int(warmup_steps), int(decay_steps), float(final_ratio)
        self.warmup_from_zero = bool(warmup_from_zero)
        self.decay = decay

    @classmethod
    def from_config(cls, optim) -> LRSchedule:
        """The schedule of a training run's :class:`~.config.OptimConfig` (``optim.warmup_steps``,
        ``optim.decay_steps``, ``optim.final_ratio``, ``optim.warmup_from_zero``; exponential decay)."""
        return cls(optim.warmup_steps, optim.decay_steps, optim.final_ratio, warmup_from_zero=optim.warmup_from_zero)

    def scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        """The torch scheduler that applies this schedule to ``optimizer`` (``.step()`` after each optimizer step)."""
        return torch.optim.lr_scheduler.LambdaLR(optimizer, self)

    def __call__(self, n: int) -> float:
        if n < self.warmup_steps:
            return (n if self.warmup_from_zero else n + 1) / self.warmup_steps
        t = (n - self.warmup_steps) / self.decay_steps
        if self.decay == "cosine":
            return self.final_ratio + (1 - self.final_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
        return max(self.final_ratio**t, self.final_ratio)

    def __repr__(self) -> str:
        return (f"LRSchedule(warmup_steps={self.warmup_steps}, decay_steps={self.decay_steps}, "
                f"final_ratio={self.final_ratio}, warmup_from_zero={self.warmup_from_zero}, decay={self.decay!r})")
