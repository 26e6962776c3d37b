"""Report templates of the studies, one module per study (`experiments/configs/<study>.py`).

Each module defines `TEMPLATE` (an `analysis.templates.Template` named after the study) and `TITLE`;
`analysis.templates.build` registers every module listed in `MODULES`. The templates of the first
studies (`bn_ablation`, `edge_of_stability`) and the generic one live in `analysis.templates` itself.
"""

from analysis.studies import (
  batch_size,
  compression,
  depth_width,
  generalization_measures,
  hessian_spectrum,
  label_noise,
  lr_batch_ratio,
  optimizers,
  reparameterization,
  sam,
  skip_connections,
)

MODULES: list = [batch_size, depth_width, lr_batch_ratio, optimizers, label_noise, hessian_spectrum,
                 compression, reparameterization, generalization_measures, sam, skip_connections]
