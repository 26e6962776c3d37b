"""Sharpness and generalization measures of a trained network, each a pure function of a `loss_fn`
(or `logits_fn`), a params pytree and data (a batch dict or `research.curvature.Chunks`), with explicit
keys, returning a record of its settings and its own error estimate:

- `sharpness`: worst-case (l2 / l-inf, plain / adaptive, m-sharpness), average-case (Gaussian,
  antithetic) and Keskar's epsilon-sharpness;
- `pac_bayes`: Jiang et al.'s PAC-Bayes sigma (plain, magnitude-aware) and bound terms;
- `norms`: distance from init, Frobenius / spectral products, path norm, Fisher-Rao norm, margin;
- `hessian`: lambda_max, trace, effective rank (from research.curvature);
- `generalization`: train/test gaps, per class, with confidence intervals;
- `compression`: post-training int-b fake quantization and magnitude pruning, and the accuracy
  they cost (`compression_curve`);
- Kendall's tau and the granulated Kendall coefficient over runs (in `research.core.ranking`);
- `reparameterize`: Dinh et al.'s function-preserving rescalings;
- `smoothness`: Santurkar et al.'s loss range, gradient change and effective beta-smoothness along the
  gradient step;
- `tracking` (imported on its own): the training evaluator that computes any of these at the end of
  training (the `measures` config section), into `sharp/` metrics and `measures/step<S>.json`.
"""

from research.core.ranking import granulated_kendall, kendall_tau
from research.measures.common import Measurement, as_chunks
from research.measures.compression import CompressionRecord, compression_curve, prune, quantize
from research.measures.generalization import GapReport, generalization_gap, per_example
from research.measures.hessian import hessian_measures, hessian_operator, hessian_trace, lambda_max
from research.measures.norms import (
  distance_from_init,
  fisher_rao_norm,
  margins,
  norm_measures,
  num_params,
  output_margin,
  path_norm,
)
from research.measures.pac_bayes import pac_bayes_bounds, pac_bayes_sigma
from research.measures.reparameterize import rescale_before_batchnorm, rescale_relu_layers
from research.measures.sharpness import average_sharpness, epsilon_sharpness, worst_case_sharpness
from research.measures.smoothness import gradient_step_smoothness

__all__ = ["CompressionRecord", "GapReport", "Measurement", "as_chunks", "average_sharpness",
           "compression_curve", "distance_from_init", "epsilon_sharpness", "fisher_rao_norm",
           "generalization_gap", "gradient_step_smoothness", "granulated_kendall", "hessian_measures",
           "hessian_operator", "hessian_trace", "kendall_tau", "lambda_max", "margins", "norm_measures",
           "num_params", "output_margin", "pac_bayes_bounds", "pac_bayes_sigma", "path_norm", "per_example",
           "prune", "quantize", "rescale_before_batchnorm", "rescale_relu_layers", "worst_case_sharpness"]
