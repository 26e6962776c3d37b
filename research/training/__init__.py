"""Training: losses, Optax optimizers and schedules, SAM, the train state and step, the resumable loop,
checkpoints, the run directory, the device mesh. Entry: `train_and_evaluate(config, workdir)`."""

from research.training.config import default_config, validate
from research.training.loop import DIVERGED_EXIT_CODE, Context, Evaluator, load_run, train_and_evaluate

__all__ = ["DIVERGED_EXIT_CODE", "Context", "Evaluator", "default_config", "load_run", "train_and_evaluate",
           "validate"]
