"""Rank correlation of a generalization measure with the generalization gap over a population of runs
(Jiang, Neyshabur, Mobahi, Krishnan & Bengio 2020, "Fantastic generalization measures and where to
find them", arXiv:1912.02178, Section 4).

- Kendall's tau as Jiang et al. define it (eq. 3; Kendall's tau-a):
  tau = (1 / (n (n - 1) / 2)) sum_{i < j} sign(mu_i - mu_j) sign(g_i - g_j),
  so a pair tied in the measure or in the gap counts 0 (no tie correction, unlike tau-b).
- Granulated Kendall coefficient (eq. 4): for each hyperparameter axis k, the runs are grouped by the
  values of all the other axes; psi_k is the mean over groups of tau within a group (only axis k
  varies in it); Psi = (1 / K) sum_k psi_k. Groups with fewer than two runs carry no pair and are
  skipped (the paper's grids are complete, so none are).

Tables are pandas DataFrames (or anything `pandas.DataFrame` accepts, e.g. a list of dicts), one row
per run, with one column per hyperparameter axis, the measure and the gap.
"""

from collections.abc import Sequence

import numpy as np
import pandas as pd

from research.core.errors import UserError


def kendall_tau(measure, gap) -> float:
  """Jiang et al.'s tau (module docstring) of two (n,) sequences, n >= 2; ties count 0."""
  mu, g = np.asarray(measure, np.float64), np.asarray(gap, np.float64)
  if mu.shape != g.shape or mu.ndim != 1:
    raise UserError(f"measure and gap must be 1-D of equal length, got shapes {mu.shape} and {g.shape}")
  n = len(mu)
  if n < 2:
    raise UserError(f"Kendall's tau needs at least two runs, got {n}")
  if not (np.isfinite(mu).all() and np.isfinite(g).all()):
    raise UserError("measure and gap must be finite (drop diverged runs first)")
  i, j = np.triu_indices(n, 1)
  return float(np.sum(np.sign(mu[i] - mu[j]) * np.sign(g[i] - g[j])) / (n * (n - 1) / 2))


def _table(table, columns: Sequence[str]) -> pd.DataFrame:
  df = table if isinstance(table, pd.DataFrame) else pd.DataFrame(table)
  missing = [c for c in columns if c not in df.columns]
  if missing:
    raise UserError(f"the table has no column(s) {missing}; columns: {', '.join(map(str, df.columns))}")
  return df


def granulated_kendall(table, measure: str, gap: str, axes: Sequence[str]) -> dict:
  """{"Psi", "psi": {axis: psi_k}, "groups": {axis: number of groups used}, "tau": overall tau}."""
  axes = list(axes)
  if not axes:
    raise UserError("granulated Kendall needs at least one hyperparameter axis")
  df = _table(table, [measure, gap] + axes)
  psi, groups = {}, {}
  for axis in axes:
    others = [a for a in axes if a != axis]
    parts = [part for _, part in df.groupby(others, dropna=False)] if others else [df]
    taus = [kendall_tau(p[measure], p[gap]) for p in parts if len(p) >= 2]
    if not taus:
      raise UserError(f"no two runs differ only in {axis!r}: the table is not a grid over {axes}")
    psi[axis], groups[axis] = float(np.mean(taus)), len(taus)
  return {"Psi": float(np.mean(list(psi.values()))), "psi": psi, "groups": groups,
          "tau": kendall_tau(df[measure], df[gap]), "num_runs": len(df)}
