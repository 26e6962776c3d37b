"""Compression at the end of training: an `Evaluator` that quantizes and prunes the final weights and
measures what it costs in accuracy and loss (`research.measures.compression`).

Settings: the `compression` section of the run config, owned here (`default_config()`; `at_end = False`:
off). Kernels only (biases and normalization scales are kept),
BatchNorm in eval mode with the running statistics of the uncompressed model (no recalibration), the
loss `config.loss.name` without label smoothing or weight decay.

Metrics (into `metrics.jsonl` at the last step; accuracies and drops as fractions, losses in nats), for
each split S of `splits` and each level L (`int8`, `int4`, ... for `bits`; `prune0.5`, ... for
`sparsities`):
- `compress/S_accuracy`, `compress/S_loss`: the uncompressed model on the same examples;
- `compress/S_accuracy_L`, `compress/S_loss_L`: the compressed model;
- `compress/S_drop_L`: S_accuracy - S_accuracy_L (positive: compression hurt);
- `compress/weight_error_L`: ||w' - w|| / ||w|| over all kernels; `compress/sparsity_L`: fraction of
  kernel entries that are zero after compression;
- `compress/seconds`.
The full record (per-layer errors and sparsities, settings, every number above) goes to
`compression/step<S>.json`.
"""

import time

import ml_collections

from research.core import rundir
from research.core.errors import UserError, choices_message
from research.core.evaluator import Evaluator, register
from research.curvature import operators
from research.measures import compression
from research.measures.common import check_choice
from research.training import config as config_lib

SPLITS = ("train", "eval_train", "valid", "test")


# The domain of each numeric key (`research.training.config.Interval` syntax; a tuple's entries each).
RANGES = {"bits": "[2, 16]", "sparsities": "[0, 1]", "num_examples": "[0, inf); 0: all",
          "chunk_size": "[0, inf); 0: all at once"}


def _check(c) -> list[tuple[str, float]]:
  """The (method, level) pairs of the section; raises UserError on a bad setting."""
  config_lib.check_ranges("compression", c, RANGES)
  if not c.splits:
    raise UserError(choices_message("compression.splits", c.splits, SPLITS))
  for s in c.splits:
    if s not in SPLITS:
      raise UserError(choices_message("compression.splits entry", s, SPLITS))
  check_choice("compression.granularity", c.granularity, compression.GRANULARITIES)
  check_choice("compression.scope", c.scope, compression.SCOPES)
  for name in ("num_examples", "chunk_size"):
    if c[name] < 0:
      raise UserError(f"compression.{name} = {c[name]} must be >= 0")
  levels = compression.levels(tuple(c.bits), tuple(c.sparsities))
  if not levels:
    raise UserError("compression.at_end needs at least one level in compression.bits or "
                    "compression.sparsities")
  return levels


def default_config() -> ml_collections.ConfigDict:
  """Accuracy after post-training compression of the final weights; off unless at_end. Kernels only:
  `bits` int-b fake quantization (per output `granularity`: channel | tensor), magnitude pruning to each
  of `sparsities` (`scope`: global | layer); evaluated on `splits` (train, eval_train, valid, test), the
  first `num_examples` of each (0: all), `chunk_size` examples per forward pass (0: all at once)."""
  return ml_collections.ConfigDict(dict(
      at_end=False, bits=(8, 4), sparsities=(0.5, 0.7, 0.9), scope="global", granularity="channel",
      splits=("test", "eval_train"), num_examples=0, chunk_size=1000))


def build(config: ml_collections.ConfigDict):
  """The compression `Evaluator` of a training config (`config.compression`), or None when it is off."""
  c = config.compression
  if not c.at_end:
    return None
  levels = _check(c)

  def measure(ctx) -> dict:
    start = time.time()
    loss_name = ctx.config.loss.name
    _, logits_fn = operators.model_functions(ctx.graphdef, ctx.state.model_state, bn_mode="eval",
                                             preprocess=ctx.dataset.preprocess, loss_name=loss_name)
    data = {}
    for s in c.splits:
      if len(getattr(ctx.dataset, s)) == 0:
        raise UserError(f"compression.splits has {s!r}, which has no examples in this dataset")
      data[s] = operators.first_examples(getattr(ctx.dataset, s), c.num_examples, c.chunk_size)
    evaluate = lambda p, s: compression.evaluate(logits_fn, p, data[s], loss_name=loss_name)
    metrics, splits, records = {}, {}, []
    for s in c.splits:
      base = evaluate(ctx.state.params, s)
      metrics |= {f"compress/{s}_accuracy": base["accuracy"], f"compress/{s}_loss": base["loss"]}
      splits[s] = {"num_examples": data[s].num_examples, "baseline": base, "levels": []}
    for method, level in levels:
      params, record = compression.compress(ctx.state.params, method, level, granularity=c.granularity,
                                            scope=c.scope)
      name = record.name
      records.append(record.to_dict())
      metrics |= {f"compress/weight_error_{name}": record.relative_error,
                  f"compress/sparsity_{name}": record.sparsity}
      for s in c.splits:
        m = evaluate(params, s)
        drop = splits[s]["baseline"]["accuracy"] - m["accuracy"]
        metrics |= {f"compress/{s}_accuracy_{name}": m["accuracy"], f"compress/{s}_loss_{name}": m["loss"],
                    f"compress/{s}_drop_{name}": drop}
        splits[s]["levels"].append({"name": name, "accuracy": m["accuracy"], "loss": m["loss"],
                                    "accuracy_drop": drop,
                                    "loss_increase": m["loss"] - splits[s]["baseline"]["loss"]})
    metrics["compress/seconds"] = time.time() - start
    record = {"run": str(ctx.workdir), "step": ctx.step,
              "settings": {"bits": list(c.bits), "sparsities": list(c.sparsities), "scope": c.scope,
                           "granularity": c.granularity, "bn_mode": "eval", "loss": loss_name,
                           "chunk_size": c.chunk_size, "which": "kernels"},
              "splits": splits, "compressions": records, "metrics": metrics}
    if ctx.is_writer:
      out_dir = ctx.workdir / "compression"
      out_dir.mkdir(parents=True, exist_ok=True)
      rundir.write_json_atomic(out_dir / f"step{ctx.step}{ctx.tag}.json", record)
    return metrics

  return Evaluator("compression", measure, every_steps=0, at_end=True)


register('compression', default_config=default_config, build=build)
