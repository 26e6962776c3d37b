"""The evaluator protocol: a measurement that runs inside training (or afterwards on a checkpoint) on a
step schedule, found by the name of its config section.

An evaluator module owns one top-level section of the run config and registers itself with
`register(section, default_config=..., build=...)`:
- `default_config() -> ConfigDict` is the section's schema (its keys, defaults and types), merged into
  the run config's defaults, so that `--config.<section>.<key>=...` is validated like any other key;
- `build(config) -> Evaluator | None` returns the evaluator that the run config switches on (None: off).

Training knows this protocol and the registry, never an evaluator by name: the built-in ones live in the
`research.evaluators` package, imported by name at the first look-up (as big_vision imports an
evaluator module from its config), and a user's module registers its own the same way. A new
measurement is one new module plus its `register` call; the loop does not change.
"""

import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections

from research.core.errors import UserError

PLUGIN_PACKAGE = "research.evaluators"  # imported on first look-up; registers the built-in evaluators


@dataclasses.dataclass
class Context:
  """What an evaluator sees at a step.

  `state` is the train state (`params`, `model_state`, `opt_state`, `step`, `rng`), `graphdef` the
  model's structure (`nnx.merge(graphdef, state.params, state.model_state)` rebuilds the model),
  `dataset` the run's `research.data.Dataset`, `total_steps` the run's length. `tag` goes at the end of
  the stem of every record file an evaluator writes (`step<S>...<tag>.json`): empty in training;
  post-hoc measurements tag theirs so that they never overwrite training's. `is_writer` is True on the
  process that writes the run directory (process 0); the others compute the same numbers and write
  nothing.
  """
  step: int
  state: Any
  graphdef: Any
  dataset: Any
  config: ml_collections.ConfigDict
  workdir: Path
  total_steps: int
  initial_params_fn: Callable[[], Any] | None = None
  tag: str = ""
  is_writer: bool = True

  @property
  def initial_params(self):
    """The parameters at step 0 (rebuilt from the seed on first use, then kept)."""
    if self.initial_params_fn is None:
      raise UserError("this context has no initial parameters")
    if not hasattr(self, "_initial"):
      self._initial = self.initial_params_fn()
    return self._initial


@dataclasses.dataclass
class Evaluator:
  """A measurement on a step schedule: `fn(context) -> dict` of metrics (named `<prefix>/...`, e.g.
  `curv/lambda_max`) that go into the step's `metrics.jsonl` record. It runs at the steps that are
  multiples of `every_steps` (0: never; step 0 included, as the initialization) and at the last step
  when `at_end`. It may write files under the workdir when `context.is_writer`."""
  name: str
  fn: Callable[[Context], dict]
  every_steps: int = 0
  at_end: bool = True

  def due(self, step: int, total_steps: int) -> bool:
    return bool((self.every_steps and step % self.every_steps == 0) or (self.at_end and step == total_steps))


@dataclasses.dataclass(frozen=True)
class Registration:
  section: str
  default_config: Callable[[], ml_collections.ConfigDict]
  build: Callable[[ml_collections.ConfigDict], Evaluator | None]


_REGISTRY: dict[str, Registration] = {}
_plugins_loaded = False


def register(section: str, *, default_config: Callable[[], ml_collections.ConfigDict],
             build: Callable[[ml_collections.ConfigDict], Evaluator | None]) -> None:
  """Registers the evaluator owning config section `section` (registering a section again replaces it,
  so that re-importing a module is harmless)."""
  if not section.isidentifier():
    raise ValueError(f"an evaluator's section must be an identifier, got {section!r}")
  _REGISTRY[section] = Registration(section, default_config, build)


def unregister(section: str) -> None:
  _REGISTRY.pop(section, None)


def registered() -> dict[str, Registration]:
  """{section: registration} of every evaluator, the built-in ones first, in registration order."""
  global _plugins_loaded
  if not _plugins_loaded:
    importlib.import_module(PLUGIN_PACKAGE)
    _plugins_loaded = True
  return dict(_REGISTRY)


def build_all(config: ml_collections.ConfigDict) -> tuple[Evaluator, ...]:
  """The evaluators `config` switches on, in registration order."""
  built = (reg.build(config) for name, reg in registered().items() if name in config)
  return tuple(e for e in built if e is not None)
