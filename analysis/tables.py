"""Result tables as Markdown and LaTeX (booktabs): mean ± std over seeds per condition, best marked.

A `Table` holds plain cell text plus which cells are the best; `markdown(t)` and `latex(t)` render it
(LaTeX special characters in every cell, header and caption are escaped). Accuracies are shown in
percent. The best value of a column is the highest mean for accuracies and the lowest for losses and
gaps; curvature columns have no "best" (neither direction is better in general) unless `better` says.
Only valid rows compete for the best (`best_mask`): a condition with a failed, diverged or unfinished
run (the `status` column of runs_table, or listed in `invalid`) or a non-finite mean is never bold, and
nothing is bold when fewer than two valid rows remain.
"""

import dataclasses
import math
from collections.abc import Collection, Mapping, Sequence

import pandas as pd

from analysis import stats, style
from research.core.errors import UserError, choices_message

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "λ": r"$\lambda$", "η": r"$\eta$", "τ": r"$\tau$", "×": r"$\times$",
                  "<": r"\textless{}", ">": r"\textgreater{}"}


@dataclasses.dataclass
class Table:
  header: list[str]
  rows: list[list[str]]
  bold: list[list[bool]]
  caption: str = ""
  align: str = ""  # one letter per column (l, r, c); default: first column l, the rest r


def escape_latex(text: str) -> str:
  """Text -> LaTeX-safe text (special characters escaped; ±, λ, η, τ, × as math, λ_max as one symbol)."""
  parts = str(text).split("λ_max")
  return r"$\lambda_{\max}$".join("".join(_LATEX_SPECIAL.get(ch, ch) for ch in p) for p in parts)


SHORT_NAMES = {"test/accuracy": "test acc. (%)", "test/loss": "test loss",
               "eval_train/accuracy": "train acc. (%)", "eval_train/loss": "train loss",
               "valid/accuracy": "valid acc. (%)", "gap/accuracy": "gap acc. (points)",
               "gap/loss": "gap loss", "curv/lambda_max": "λ_max", "curv/trace": "trace"}


def default_better(metric: str) -> str | None:
  """`max` for accuracies, `min` for losses, None otherwise: a smaller generalization gap is not better in
  itself (an under-fitting run has a small one), so gaps are never marked."""
  if metric.startswith("gap/"):
    return None
  if metric.endswith("/accuracy"):
    return "max"
  if metric.endswith("/loss"):
    return "min"
  return None


VALID_STATUSES = ("done",)  # meta.json statuses of finished runs; running|diverged|failed are not


def best_mask(values: Sequence[float], rule: str | None, valid: Sequence[bool] | None = None) -> list[bool]:
  """Which of `values` (one per row) is the best under `rule` (`max`, `min` or None): only rows that are
  valid and finite compete; all False when the rule is None or fewer than two rows compete."""
  valid = [True] * len(values) if valid is None else list(valid)
  ok = [bool(v) and isinstance(x, int | float) and math.isfinite(x) for x, v in zip(values, valid)]
  competing = [x for x, v in zip(values, ok) if v]
  if rule is None or len(competing) < 2:
    return [False] * len(values)
  if rule not in ("max", "min"):
    raise UserError(choices_message("better", rule, ("max", "min", None)))
  best = max(competing) if rule == "max" else min(competing)
  return [v and x == best for x, v in zip(values, ok)]


def _decimals(std: float, fallback_value: float) -> int:
  """Decimals that show two significant digits of the std (or 4 significant digits of the value)."""
  if math.isfinite(std) and std > 0:
    return int(min(max(1 - math.floor(math.log10(std)), 0), 6))
  if math.isfinite(fallback_value) and fallback_value != 0:
    return int(min(max(3 - math.floor(math.log10(abs(fallback_value))), 0), 6))
  return 2


def format_mean_std(mean: float, std: float, n: int) -> str:
  """`81.8 ± 0.52` (one seed: the value alone; no finite value: `–`)."""
  if not math.isfinite(mean):
    return "–"
  d = _decimals(std, mean)
  if n > 1 and math.isfinite(std):
    return f"{mean:.{d}f} ± {std:.{d}f}"
  return f"{mean:.{d}f}"


def mean_std_table(table: pd.DataFrame, by: Sequence[str], metrics: Sequence[str], *,
                   better: Mapping[str, str | None] | None = None, caption: str = "",
                   names: Mapping[str, str] | None = None, invalid: Collection | None = None,
                   count_name: str = "seeds") -> Table:
  """One row per condition (distinct values of `by`), one column per metric: mean ± std over the
  condition's runs (seeds), a column `count_name` with their count, the best mean per column in bold.

  Bold goes only to valid conditions (`best_mask`): not listed in `invalid` (conditions as tuples of
  their `by` values, or the value alone for one key), no run whose `status` column (when the table has
  one) is other than `done`, a finite mean; and only when at least two conditions are valid.
  """
  better = dict(better or {})
  names = dict(names or {})
  metrics = [m for m in metrics if m in table.columns]
  agg = stats.aggregate(table, by, metrics)
  by = [b for b in by if b in table.columns]
  conditions = list(dict.fromkeys(tuple(r) for r in agg[by].itertuples(index=False))) if by else [()]
  short = [b.rsplit(".", 1)[-1] for b in by]
  short = [".".join(b.split(".")[-2:]) if short.count(n) > 1 else n for b, n in zip(by, short)]
  header = [names.get(b, n) for b, n in zip(by, short)] + [count_name] + [
      names.get(m, SHORT_NAMES.get(m, style.metric_label(m))) for m in metrics]
  invalid = {c if isinstance(c, tuple) else (c,) for c in (invalid or ())}
  rows, means, valid = [], [], []
  for cond in conditions:
    sel = agg
    for b, v in zip(by, cond):
      sel = sel[sel[b].apply(lambda x, v=v: x == v or (x != x and v != v))]
    ok = cond not in invalid
    if ok and "status" in table.columns:
      runs_of = table
      for b, v in zip(by, cond):
        runs_of = runs_of[runs_of[b].apply(lambda x, v=v: x == v or (x != x and v != v))]
      ok = bool(runs_of["status"].isin(VALID_STATUSES).all())
    valid.append(ok)
    cells, row_means, n_max = [], [], 0
    for m in metrics:
      r = sel[sel.metric == m].iloc[0]
      k = style.scale(m)
      cells.append(format_mean_std(k * r["mean"], k * r["std"], int(r["n"])))
      row_means.append(r["mean"])
      n_max = max(n_max, int(r["n"]))
    rows.append([_fmt(v) for v in cond] + [str(n_max)] + cells)
    means.append(row_means)
  bold = [[False] * len(header) for _ in rows]
  offset = len(by) + 1
  for j, m in enumerate(metrics):
    mask = best_mask([row[j] for row in means], better.get(m, default_better(m)), valid)
    for i, b in enumerate(mask):
      bold[i][offset + j] = b
  return Table(header, rows, bold, caption, "l" * len(by) + "r" * (1 + len(metrics)))


def frame_table(frame: pd.DataFrame, *, caption: str = "", scale_accuracy: bool = True) -> Table:
  """Any DataFrame as a Table (numbers to 4 significant digits, accuracies in percent)."""
  header = [str(c) for c in frame.columns]
  rows = []
  for _, r in frame.iterrows():
    rows.append([_fmt(style.scale(str(c)) * v if scale_accuracy and isinstance(v, float) else v)
                 for c, v in r.items()])
  bold = [[False] * len(header) for _ in rows]
  align = "".join("r" if pd.api.types.is_numeric_dtype(frame[c]) else "l" for c in frame.columns)
  return Table(header, rows, bold, caption, align)


def _fmt(v) -> str:
  if isinstance(v, float):
    if not math.isfinite(v):
      return "–"
    return f"{v:.4g}"
  if isinstance(v, tuple | list):
    return ",".join(map(_fmt, v))
  return str(v)


def markdown(t: Table) -> str:
  """GitHub-flavoured Markdown; best cells in bold; `|` in cells escaped; the caption in italics."""
  esc = lambda s: str(s).replace("|", r"\|")
  align = t.align or "l" + "r" * (len(t.header) - 1)
  rule = ["---:" if a == "r" else ":---:" if a == "c" else ":---" for a in align]
  lines = ["| " + " | ".join(map(esc, t.header)) + " |", "| " + " | ".join(rule) + " |"]
  for row, bold in zip(t.rows, t.bold):
    lines.append("| " + " | ".join(f"**{esc(c)}**" if b else esc(c) for c, b in zip(row, bold)) + " |")
  out = "\n".join(lines)
  return (f"{out}\n\n*{t.caption}*" if t.caption else out) + "\n"


def latex(t: Table, *, label: str = "") -> str:
  """A booktabs `table` environment (needs \\usepackage{booktabs}); best cells in \\textbf."""
  align = t.align or "l" + "r" * (len(t.header) - 1)
  lines = [r"\begin{table}[t]", r"\centering"]
  if t.caption:
    lines.append(r"\caption{" + escape_latex(t.caption) + "}")
  if label:
    lines.append(r"\label{" + escape_latex(label) + "}")
  lines += [r"\begin{tabular}{" + align + "}", r"\toprule",
            " & ".join(escape_latex(h) for h in t.header) + r" \\", r"\midrule"]
  for row, bold in zip(t.rows, t.bold):
    cells = [r"\textbf{" + escape_latex(c) + "}" if b else escape_latex(c) for c, b in zip(row, bold)]
    lines.append(" & ".join(cells) + r" \\")
  lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
  return "\n".join(lines) + "\n"
