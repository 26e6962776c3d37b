"""A measurement written outside the library, as a user would: the parameter norm, every N steps.

Importing this module registers it (section `toy`); nothing in `research/` names it.
"""

import jax
import jax.numpy as jnp
import ml_collections

from research.core import evaluator


def default_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(every_steps=0, at_end=False, scale=1.0))


def build(config: ml_collections.ConfigDict) -> evaluator.Evaluator | None:
  c = config.toy
  if not c.every_steps and not c.at_end:
    return None

  def fn(ctx: evaluator.Context) -> dict:
    norm = jnp.sqrt(sum(jnp.vdot(x, x) for x in jax.tree.leaves(ctx.state.params)))
    init = jnp.sqrt(sum(jnp.vdot(x, x) for x in jax.tree.leaves(ctx.initial_params)))
    return {"toy/param_norm": c.scale * float(norm), "toy/initial_norm": float(init),
            "toy/fraction_done": ctx.step / ctx.total_steps}

  return evaluator.Evaluator("toy", fn, every_steps=c.every_steps, at_end=c.at_end)


evaluator.register("toy", default_config=default_config, build=build)
