"""Curvature of what training found: Hessian, GGN, Fisher operators over whole datasets
(`operators`), eigen-solvers (`lanczos`), trace and diagonal estimators (`trace`), spectral densities
(`density`). Every solver takes a `LinearOperator` and reports its own error estimate."""

from research.curvature.lanczos import EigenResult, eigenpairs, power_iteration
from research.curvature.linear_operator import LinearOperator
from research.curvature.operators import (
                                          Chunks,
                                          adam_preconditioner,
                                          empirical_fisher,
                                          fisher,
                                          ggn,
                                          gradient_covariance,
                                          hessian,
                                          make_chunks,
                                          mean_gradient,
                                          model_functions,
                                          parameter_blocks,
                                          preconditioned,
)

__all__ = ["Chunks", "EigenResult", "LinearOperator", "adam_preconditioner", "eigenpairs",
           "empirical_fisher", "fisher", "ggn", "gradient_covariance", "hessian", "make_chunks",
           "mean_gradient", "model_functions", "parameter_blocks", "power_iteration", "preconditioned"]
