"""Helpers shared by test modules (importable: pytest puts tests/ on sys.path)."""

from research import training


def tiny_config(synthetic: dict, *, width: int = 16, num_steps: int = 20, eval_every: int = 10,
                log_every: int = 5, **changes):
  """A seconds-long training config: `mlp` (depth 1) on the synthetic dataset `synthetic` (its options),
  then `changes` ({dotted key: value}) applied on top."""
  c = training.default_config()
  c.data.name = "synthetic"
  c.data.options.update(synthetic)
  c.model.name = "mlp"
  c.model.knobs.update(dict(depth=1, width=width))
  c.training.batch_size = 32
  c.training.num_epochs = 0
  c.training.num_steps = num_steps
  c.eval.every_epochs = 0
  c.eval.every_steps = eval_every
  c.eval.batch_size = 48
  c.eval.splits = ("eval_train", "test")
  c.log_every = log_every
  c.progress = "none"
  for key, value in changes.items():
    section = c
    *path, last = key.split(".")
    for p in path:
      section = section[p]
    with section.unlocked():
      section[last] = value
  return c
