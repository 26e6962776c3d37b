"""Flax NNX model zoo: `create(name, *, num_classes, input_shape, rngs, **knobs)`, `available()`,
and the pure-function view curvature code needs (`functional`)."""

from research.models.functional import BN_MODES, apply_fn, split
from research.models.registry import available, create, knobs, num_params

__all__ = ["BN_MODES", "apply_fn", "available", "create", "knobs", "num_params", "split"]
