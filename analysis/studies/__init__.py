"""Report templates of the studies, one module per study (`experiments/configs/<study>.py`).

Each module defines `TEMPLATE` (an `analysis.templates.Template` named after the study) and `TITLE`;
`analysis.templates.build` registers every module listed in `MODULES`. The templates of the first
studies (`bn_ablation`, `edge_of_stability`) and the generic one live in `analysis.templates` itself.
"""

from analysis.studies import batch_size, skip_connections

MODULES: list = [batch_size, skip_connections]
