"""Learning-rate schedules by name: `make_schedule(cfg, *, total_steps, steps_per_epoch) -> optax.Schedule`.

Every schedule is an Optax schedule function (step -> learning rate); the train loop calls it to log the
learning rate and the optimizer calls it with its own step count (0 for the first update).

Config fields (`default_schedule_config()` gives all of them with their defaults):
- `name`: one of SCHEDULES.
  - "constant": `lr` throughout.
  - "step": `lr` times `decay_factor` for each boundary passed; a boundary is `fraction * total_steps`
    rounded to the nearest whole epoch (so with PyTorch's MultiStepLR stepped per epoch the decay lands on
    an epoch's first step), and the decay applies from that step on (MultiStepLR's convention).
  - "cosine": cosine decay from `lr` at step 0 to `final_lr_fraction * lr` at `total_steps`
    (Loshchilov & Hutter 2017, SGDR, without restarts); constant after.
  - "warmup_cosine": linear warm-up from 0 at step 0 to `lr` at `warmup_steps`, then cosine decay to
    `final_lr_fraction * lr` at `total_steps` (Goyal et al. 2017 warm-up; the total includes the warm-up).
  - "linear": linear decay from `lr` at step 0 to `final_lr_fraction * lr` at `total_steps`.
  - "one_cycle": Smith & Topin 2019 super-convergence, as `optax.cosine_onecycle_schedule` and PyTorch's
    OneCycleLR (anneal_strategy="cos", no momentum cycling): cosine rise from `lr / div_factor` at step 0
    to `lr` at `int(pct_start * total_steps)`, then cosine fall to `lr / (div_factor * final_div_factor)`
    at `total_steps`. (PyTorch reaches the peak and the end one step earlier, at pct_start * total - 1
    and total - 1.)
- `lr` (float): the base ("constant", "step") or peak learning rate.
- `warmup_steps` (int): warm-up length of "warmup_cosine" (0 = plain cosine); unused by the others.
- `boundaries` (tuple of floats in (0, 1)): the "step" decay points as fractions of `total_steps`.
- `decay_factor` (float): the "step" multiplier at each boundary, e.g. 0.1.
- `final_lr_fraction` (float): final lr / `lr` for "cosine", "warmup_cosine" and "linear" (optax's alpha).
- `pct_start`, `div_factor`, `final_div_factor` (floats): "one_cycle" as in PyTorch's OneCycleLR.
"""

import ml_collections
import optax

from research.core.errors import UserError, choices_message

SCHEDULES = ("constant", "step", "cosine", "warmup_cosine", "linear", "one_cycle")
# The domain of each numeric field (`research.training.config.Interval` syntax), checked by `validate`.
RANGES = {
    "lr": "[0, inf); 0: the parameters stay at initialization",
    "warmup_steps": "[0, inf); 0: no warm-up",
    "boundaries": "(0, 1)",
    "decay_factor": "(0, inf)",
    "final_lr_fraction": "[0, 1]",
    "pct_start": "(0, 1)",
    "div_factor": "(0, inf)",
    "final_div_factor": "(0, inf)",
}


def default_schedule_config() -> ml_collections.ConfigDict:
  """Every schedule field with its default (a constant learning rate of 0.1)."""
  return ml_collections.ConfigDict(dict(
      name="constant",
      lr=0.1,
      warmup_steps=0,
      boundaries=(0.5, 0.75),
      decay_factor=0.1,
      final_lr_fraction=0.0,
      pct_start=0.3,
      div_factor=25.0,
      final_div_factor=1e4,
  ))


def _step_boundaries(cfg, total_steps: int, steps_per_epoch: int) -> dict[int, float]:
  """{step: scale} for "step"; boundaries rounded to whole epochs, coinciding ones multiplied."""
  num_epochs = total_steps / steps_per_epoch
  out: dict[int, float] = {}
  for fraction in cfg.boundaries:
    if not 0.0 < fraction < 1.0:
      raise UserError(f"schedule boundaries must be fractions of total_steps in (0, 1), got "
                      f"{tuple(cfg.boundaries)}")
    step = round(fraction * num_epochs) * steps_per_epoch
    out[step] = out.get(step, 1.0) * cfg.decay_factor
  return out


def make_schedule(cfg: ml_collections.ConfigDict, *, total_steps: int,
                  steps_per_epoch: int) -> optax.Schedule:
  """The schedule `cfg.name` (one of SCHEDULES) over `total_steps` optimizer steps. Raises UserError."""
  if cfg.name not in SCHEDULES:
    raise UserError(choices_message("schedule", cfg.name, SCHEDULES))
  if total_steps < 1 or steps_per_epoch < 1:
    raise UserError(f"a schedule needs total_steps >= 1 and steps_per_epoch >= 1, got {total_steps} and "
                    f"{steps_per_epoch}")
  lr, final = float(cfg.lr), float(cfg.lr) * cfg.final_lr_fraction
  if cfg.name == "constant":
    return optax.constant_schedule(lr)
  if cfg.name == "step":
    return optax.piecewise_constant_schedule(lr, _step_boundaries(cfg, total_steps, steps_per_epoch))
  if cfg.name == "cosine":
    return optax.cosine_decay_schedule(lr, total_steps, alpha=cfg.final_lr_fraction)
  if cfg.name == "warmup_cosine":
    if cfg.warmup_steps <= 0:
      return optax.cosine_decay_schedule(lr, total_steps, alpha=cfg.final_lr_fraction)
    if cfg.warmup_steps >= total_steps:
      raise UserError(f"schedule warmup_steps must be below total_steps, got {cfg.warmup_steps} >= "
                      f"{total_steps}")
    return optax.warmup_cosine_decay_schedule(0.0, lr, cfg.warmup_steps, total_steps, end_value=final)
  if cfg.name == "linear":
    return optax.linear_schedule(lr, final, total_steps)
  if not 0.0 < cfg.pct_start < 1.0:
    raise UserError(f"schedule pct_start must be in (0, 1), got {cfg.pct_start!r}")
  return optax.cosine_onecycle_schedule(total_steps, lr, pct_start=cfg.pct_start, div_factor=cfg.div_factor,
                                        final_div_factor=cfg.final_div_factor)
