"""The report templates, one module per study (`experiments/configs/<study>.py`), and their registry.

Each module defines `TEMPLATE` (an `analysis.results.Template` named after its study, with its title);
`TEMPLATES` maps a study name to it. A run's `config.study` is only ever a key into this dictionary.
To add a study: write its module (importing `analysis.document`, `analysis.results` and the readers,
never `analysis.report` or another study) and list it here.
"""

from analysis.studies import (
  batch_size,
  bn_ablation,
  compression,
  depth_width,
  edge_of_stability,
  generalization_measures,
  generic,
  hessian_spectrum,
  label_noise,
  lr_batch_ratio,
  optimizers,
  reparameterization,
  sam,
  skip_connections,
)

GENERIC = generic.TEMPLATE
TEMPLATES = {m.TEMPLATE.name: m.TEMPLATE for m in (
    generic, bn_ablation, edge_of_stability, batch_size, depth_width, lr_batch_ratio, optimizers, label_noise,
    hessian_spectrum, compression, reparameterization, generalization_measures, sam, skip_connections)}
