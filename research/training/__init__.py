"""Training: Optax optimizers and schedules, SAM, the train state and step, the resumable loop,
checkpoints. Entry: `train_and_evaluate(config, workdir, evaluators=None)`. It knows the evaluator
protocol (`research.core.evaluator`), never an evaluator by name."""

from research.training.config import default_config, validate
from research.training.loop import (
  build_state,
  initial_state,
  load_run,
  run_config,
  schedule_lengths,
  train_and_evaluate,
)

__all__ = ["build_state", "default_config", "initial_state", "load_run", "run_config", "schedule_lengths",
           "train_and_evaluate", "validate"]
