"""Sweeps: search spaces (lists of config overrides) and the runner that trains one run directory per
trial, locally in parallel or on Slurm, resumably. Entry: `python -m experiments.sweep` (README)."""

from research.sweeps.index import load, trial_dirs, trial_names
from research.sweeps.runner import load_definition, run_sweep, train_argv
from research.sweeps.space import (
                                   Choice,
                                   IntUniform,
                                   LogUniform,
                                   Uniform,
                                   concat,
                                   grid,
                                   halton,
                                   product,
                                   random_search,
                                   seeds,
                                   zipped,
)

__all__ = ["Choice", "IntUniform", "LogUniform", "Uniform", "concat", "grid", "halton", "load",
           "load_definition", "product", "random_search", "run_sweep", "seeds", "train_argv", "trial_dirs",
           "trial_names", "zipped"]
