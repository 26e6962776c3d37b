"""Measurements that run during training (or afterwards on a checkpoint), each a plug-in.

Every module here owns one section of the run config (`default_config()`), builds its `Evaluator` from
the run config (`build(config)`, None when the section is off) and registers both with
`research.core.evaluator.register`. The training loop finds them through that registry, by section
name; it imports none of them. Importing this package registers the built-in evaluators:

  curvature    the Hessian on a fixed probe set: lambda_max, top-k, trace, density (`curv/...`)
  measures     sharpness and generalization measures (`sharp/...`)
  compression  accuracy after post-training quantization and pruning (`compress/...`)
  landscape    a 1-D or 2-D loss-landscape scan around the parameters (`land/...`)
  smoothness   loss range, gradient change and effective beta along the gradient step (`smooth/...`)

`posthoc.measure_checkpoint` runs the same evaluators once on a saved checkpoint.

A new measurement is one module that calls `register(...)` at import, imported before the run (by
this package for built-in ones, by the user's own code otherwise); see docs/design.md.
"""

from research.evaluators import compression, curvature, landscape, measures, smoothness  # noqa: F401  (registers)
