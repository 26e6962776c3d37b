"""Report template of the edge-of-stability study (experiments/configs/edge_of_stability.py): lambda_max
over training against the stability threshold 2/eta (and its momentum and Adam analogues) per step size,
compared with Cohen et al. 2021."""

import numpy as np
import pandas as pd

from analysis import stats, tables, wording
from analysis.document import Finding, Section, TableBlock, distinct, num
from analysis.results import (
  Context,
  Template,
  generic_findings,
  lambda_max_history,
  standard_results,
  threshold_of,
)

TITLE = "Edge of stability"

def _lr_key(ctx: Context) -> str | None:
  lrs = [k for k in ctx.keys if k.rsplit(".", 1)[-1] in ("lr", "learning_rate")]
  return lrs[0] if lrs else None


def _eos_applies(ctx: Context) -> str | None:
  if not any(len(lambda_max_history(r)[0]) > 1 for r in ctx.study.runs):
    return "no run has λ_max measured at two or more steps (`curv/lambda_max` in metrics.jsonl)"
  return None


def _eos_results(ctx: Context):
  key = _lr_key(ctx)
  groups = ctx.groups()
  blocks = standard_results(ctx, bar_key=key)
  findings = []
  rows = []
  for label, rs in groups.items():
    ratios_end, ratios_max, hover = [], [], []
    t, tname = threshold_of(rs[0])
    if t is None:
      continue
    for r in rs:
      s, v = lambda_max_history(r)
      if len(s) < 2:
        continue
      ratio = v / t
      ratios_end.append(ratio[-1])
      ratios_max.append(np.nanmax(ratio))
      crossed = np.flatnonzero(ratio >= 0.9)
      if len(crossed) and crossed[0] < len(ratio) - 1:
        hover.append(float(np.median(ratio[crossed[0]:])))
    if not ratios_end:
      continue
    iv = stats.mean_interval(ratios_end)
    d = {"mean": iv.estimate, "ci_low": iv.lo, "ci_high": iv.hi, "n": iv.n[0]}
    reached = sum(m >= 0.9 for m in ratios_max)
    text = (f"{label}: λ_max ended at {d['mean']:.2f} of {tname} = {num(t)} "
            f"({wording.interval_text(iv, fmt=lambda x: f'{x:.2f}')}); it reached 90% of the threshold "
            f"in {reached} of {len(ratios_max)} run(s)")
    if hover:
      text += f", and after first reaching it hovered at a median {np.mean(hover):.2f} of the threshold"
    findings.append(Finding(text + ".", {
        "condition": label, "threshold": t, "end ratio mean": d["mean"],
        "end ratio ci": (d["ci_low"], d["ci_high"]), "interval": iv.as_dict(), "n": d["n"],
        "reached": reached,
        "hover": float(np.mean(hover)) if hover else None}))
    rows.append({"condition": label, "threshold": t, "λ_max / threshold (end)": d["mean"],
                 "max λ_max / threshold": float(np.mean(ratios_max)), "seeds": d["n"]})
  if rows:
    blocks.insert(1, TableBlock("stability", tables.frame_table(pd.DataFrame(rows), caption=(
        "λ_max relative to the stability threshold of each condition's optimizer and step size (means over "
        "seeds)."))))
  return [Section("Results", blocks)], findings + generic_findings(ctx)


def _eos_comparison(ctx: Context, findings: list[Finding]) -> list:
  full = distinct(r.flat_config.get("training.full_batch") for r in ctx.study.runs)
  out = ["Cohen et al. (2021, ICLR, \"Gradient descent on neural networks typically occurs at the edge of "
         "stability\") find that under full-batch gradient descent λ_max rises during training (progressive "
         "sharpening) until it reaches 2/η and then hovers just above it while the loss keeps falling "
         "non-monotonically. With minibatch SGD λ_max typically settles below 2/η, lower for smaller batches "
         "(Jastrzębski et al. 2020)."]
  items = []
  for f in findings:
    v = f.values
    if "end ratio mean" not in v:
      continue
    hover = v.get("hover")
    if full == [True]:
      ok = hover is not None and 0.8 <= hover <= 1.3
      items.append(f"{v['condition']}: " + ("hovered near the threshold, as Cohen et al. report" if ok else
                   "did not settle at the threshold within this run") + ".")
    else:
      j = wording.judge(stats.Interval.from_dict(v["interval"]), "<", threshold=1.0,
                        fmt=lambda x: f"{x:.2f}")
      items.append(f"{v['condition']} (minibatch): λ_max ended at {v['end ratio mean']:.2f} of the "
                   f"threshold; below it, as expected for SGD: this {j.text}.")
  return out + ([items] if items else ["No condition has a stability threshold (unknown optimizer)."])


def _eos_limitations(ctx: Context) -> list[str]:
  out = ["λ_max is measured at discrete steps: oscillations between measurements are not seen."]
  if any(r.flat_config.get("optimizer.name") in ("adam", "adamw") for r in ctx.study.runs):
    out.append("For Adam the 38/η threshold applies to the preconditioned Hessian; the λ_max shown is of the "
               "raw Hessian, so Adam's curves are not directly comparable with their thresholds.")
  return out


TEMPLATE = Template(
    "edge_of_stability", TITLE,
    "Does λ_max rise to the stability threshold 2/η (and its momentum and Adam "
    "analogues) and stay there, for each step size?", _eos_applies, _eos_results, _eos_comparison,
    _eos_limitations)
