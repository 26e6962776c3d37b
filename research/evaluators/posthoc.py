"""Measuring a saved checkpoint afterwards with the same evaluators training runs on its schedule.

`measure_checkpoint(workdir, sections=("curvature", ...), overrides={...}, step=None)` rebuilds the
run's checkpoint (`load_run`: the latest one by default), switches on the config sections named in
`sections` (their `at_end`; every other section's evaluator off), applies `overrides` (dotted config
keys, checked like training's) and calls those evaluators once. They write their records where training
writes them (`curvature/`, ...), so reports read both alike, with the tag `_posthoc<UTC time>` at the
end of their file stems so that nothing training wrote is overwritten; their metrics are appended to
`<workdir>/posthoc.jsonl` as `{"step", "sections", "overrides", "tag", "time", <metrics>...}`.
Training's own `metrics.jsonl`, `summary.json`, records and checkpoints are never touched.
"""

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import ml_collections

from research.core import evaluator as evaluator_lib
from research.core import rundir
from research.core.errors import UserError, choices_message
from research.training import config as config_lib
from research.training.loop import build_state, load_run, schedule_lengths


def sections() -> tuple[str, ...]:
  """Config sections of the registered evaluators that can run once (an `at_end` key)."""
  return tuple(name for name, reg in evaluator_lib.registered().items() if "at_end" in reg.default_config())


def _set(config: ml_collections.ConfigDict, key: str, value) -> None:
  *path, last = key.split(".")
  sub = config
  for part in path:
    if part not in sub:
      raise UserError(config_lib.unknown_key_message(key))
    sub = sub[part]
  if not isinstance(sub, ml_collections.ConfigDict) or last not in sub:
    raise UserError(config_lib.unknown_key_message(key))
  with sub.unlocked():
    sub[last] = tuple(value) if isinstance(value, list) else value


def measure_checkpoint(workdir: str | Path, sections_to_run: Sequence[str], *,
                       overrides: Mapping[str, object] | None = None, step: int | None = None) -> dict:
  """Runs the evaluators of `sections_to_run` on the checkpoint at `step`; returns their metrics."""
  valid = sections()
  if not sections_to_run:
    raise UserError(f"name at least one section to measure; valid choices: {', '.join(valid)}")
  for name in sections_to_run:
    if name not in valid:
      raise UserError(choices_message("section", name, valid))
  overrides = dict(overrides or {})
  for key in overrides:
    if key.split(".", 1)[0] not in sections_to_run:
      raise UserError(f"override {key!r} is outside the measured sections ({', '.join(sections_to_run)})")
  workdir = Path(workdir)
  config, ds, graphdef, state, step = load_run(workdir, step)
  config = ml_collections.ConfigDict(config.to_dict())
  for name in valid:
    _set(config, f"{name}.at_end", name in sections_to_run)
    if "every_steps" in config[name]:
      _set(config, f"{name}.every_steps", 0)
  if "curvature" in sections_to_run:
    _set(config, "curvature.save_every", 1)  # a record at any step, not only the final one
  for key, value in overrides.items():
    _set(config, key, value)
  config_lib.validate(config)
  start = time.time()
  tag = "_posthoc" + time.strftime("%Y%m%dT%H%M%S", time.gmtime())
  spe, total = schedule_lengths(config, ds)
  ctx = evaluator_lib.Context(step, state, graphdef, ds, config, workdir, total_steps=total,
                              initial_params_fn=lambda: build_state(config, ds, total, spe)[1].params,
                              tag=tag, is_writer=rundir.is_writer())
  metrics = {}
  for evaluator in evaluator_lib.build_all(config):
    metrics |= evaluator.fn(ctx)
  record = {"step": step, "sections": list(sections_to_run), "overrides": overrides, "tag": tag,
            "time": rundir.now(),
            "seconds": time.time() - start, **metrics}
  if ctx.is_writer:
    with open(workdir / "posthoc.jsonl", "a") as f:
      f.write(json.dumps(record, default=str) + "\n")
  return metrics
