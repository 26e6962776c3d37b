"""Reports of the hessian_spectrum, label_noise, compression, reparameterization and
generalization_measures studies on synthetic sweeps: sweep.json holds the config's own `get_criteria`, and
the report's verdicts are the ones the synthetic numbers imply (worked out by hand in each test)."""

import json
from pathlib import Path

import numpy as np

from analysis import report
from experiments.configs import (
  compression,
  generalization_measures,
  hessian_spectrum,
  label_noise,
  reparameterization,
)
from research.core import criteria as criteria_lib


def _nest(flat: dict) -> dict:
  out: dict = {}
  for key, value in flat.items():
    *parts, name = key.split(".")
    d = out
    for p in parts:
      d = d.setdefault(p, {})
    d[name] = value
  return out


def _sweep(root: Path, study: str, module, trials: list[dict]) -> Path:
  """trials: {"overrides": {...}, "config": {flat extra config}, "final": {...}, "history": [...],
  "files": {relative path: dict (json) or np arrays (npz)}}; sweep.json with module.get_criteria()."""
  index = []
  for i, t in enumerate(trials):
    ov = t["overrides"]
    name = f"{i:03d}-" + "-".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in ov.items())
    d = root / name.replace("/", "_").replace(" ", "")
    d.mkdir(parents=True)
    flat = {"study": study, "data.name": "fashion_mnist", "loss.name": "cross_entropy",
            "optimizer.name": "momentum", "training.num_steps": 400} | t.get("config", {}) | ov
    (d / "config.json").write_text(json.dumps(_nest(flat)))
    meta = {"status": "done", "seed": ov.get("seed", 0), "git": "abc123def4567"}
    (d / "meta.json").write_text(json.dumps(meta))
    (d / "summary.json").write_text(json.dumps({"status": "done", "final": t["final"]}))
    history = t.get("history", []) + [{"step": flat["training.num_steps"]} | t["final"]]
    (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in history))
    for rel, content in t.get("files", {}).items():
      f = d / rel
      f.parent.mkdir(parents=True, exist_ok=True)
      if rel.endswith(".npz"):
        np.savez(f, **content)
      else:
        f.write_text(json.dumps(content))
    index.append({"index": i, "name": d.name, "overrides": ov, "status": "done",
                  "started": "2026-12-02T10:00:00+00:00", "ended": "2026-12-02T10:01:00+00:00"})
  specs = [c.to_dict() for c in criteria_lib.parse(module.get_criteria("quick"))]
  (root / "sweep.json").write_text(json.dumps({
      "study": study, "variant": "quick", "common_overrides": {}, "trials": index, "criteria": specs,
      "criteria_registered": "2026-12-02T09:59:00+00:00"}))
  return root


def _verdicts(root: Path) -> dict[tuple[str, str], str]:
  written = report.write_report(root)
  assert written.report.template != "generic", written.report.template
  record = json.loads((root / "report" / "verdicts.json").read_text())
  return {(v["id"], v["scope"]): v["verdict"] for v in record["verdicts"]}, written


# ---------------------------------------------------------------------------------------------------
# hessian_spectrum

def _spectrum_trial(norm: str, lr: float, classes: tuple, seed: int, top: np.ndarray) -> dict:
  top = np.sort(np.asarray(top, np.float64))[::-1]
  ov = {"model.knobs.norm": norm, "seed": seed}
  if lr == 0:
    ov |= hessian_spectrum.INIT
  if classes != hessian_spectrum.ALL_CLASSES:
    ov["data.options.classes"] = list(classes)
  step = 1 if lr == 0 else 400
  record = {"operator": {"operator": "hessian", "step": step, "bn_mode": "batch", "ghost_batch_size": 128,
                         "num_examples": 512, "split": "train"},
            "results": {"top": {"values": top.tolist(), "residual_norms": [1e-3] * len(top)},
                        "spectrum": {"lambda_max": float(top[0])},
                        "gradient": {"top_subspace_fraction": 0.8}, "density": {"num_steps": 8}}}
  nodes = np.concatenate([top[:3], np.linspace(0.0, top[-1], 5)])[None]
  return {"overrides": ov,
          "config": {"schedule.lr": hessian_spectrum.LR, "data.options.classes": list(classes),
                     "training.num_steps": step},
          "final": {"test/accuracy": 0.85, "curv/lambda_max": float(top[0]),
                    "curv/lambda_1_over_lambda_k": float(top[0] / top[-1])},
          "files": {f"curvature/step{step}_hessian_train.json": record,
                    f"curvature/step{step}_hessian_train.npz": {"slq_nodes": nodes,
                                                                "slq_weights": np.full_like(nodes, 1 / 8)}}}


def _outliers(c: int, big: float, seed: int, at: int | None = None) -> np.ndarray:
  """20 eigenvalues: `at` (default c) outliers near `big`, then a bulk near 2 (largest gap after `at`)."""
  at = c if at is None else at
  out = [big * (1 - 0.02 * i) * (1 + 0.01 * seed) for i in range(at)]
  return np.asarray(out + [2.0 * (1 - 0.01 * j) for j in range(20 - at)])


def test_hessian_spectrum_verdicts(tmp_path):
  full = hessian_spectrum.ALL_CLASSES
  trials = []
  for seed in (0, 1):
    flat = 1.0 + 0.01 * seed - 0.005 * np.arange(20)  # at initialization: no gap, lambda_1/lambda_20 ~ 1.1
    trials += [_spectrum_trial("batch", 0.0, full, seed, flat),
               _spectrum_trial("none", 0.0, full, seed, flat),
               _spectrum_trial("batch", 0.05, full, seed, 1.5 * flat),  # BatchNorm: no outliers
               _spectrum_trial("none", 0.05, full, seed, _outliers(10, 50.0, seed)),
               _spectrum_trial("none", 0.05, (0, 1, 2), seed, _outliers(3, 30.0, seed, at=2)),  # C - 1: holds
               _spectrum_trial("none", 0.05, (0, 1, 2, 3, 4), seed, _outliers(5, 40.0, seed, at=3 + seed))]
  verdicts, written = _verdicts(_sweep(tmp_path / "hs", "hessian_spectrum", hessian_spectrum, trials))
  # gap positions minus C: C=3: -1, -1 (holds); C=5: -2, -1 (one run outside {-1, 0}: fails); C=10: 0, 0
  assert verdicts[("outliers_C", "classes=[0, 1, 2]")] == "holds"
  assert verdicts[("outliers_C", "classes=[0, 1, 2, 3, 4]")] == "fails"
  assert verdicts[("outliers_C", f"classes={list(full)}")] == "holds"
  # lambda_1/lambda_20: trained none ~50/1.6 vs init ~1.1 and trained batch ~1.1: ratios >> 1, 2 vs 2 seeds
  assert verdicts[("outliers_emerge", "")] == "holds"
  assert verdicts[("batchnorm_suppresses", "")] == "holds"
  assert verdicts[("batchnorm_lambda_max", "")] == "holds"
  md = written.markdown.read_text()
  assert "outlier count" not in md.lower() and "SLQ rule" not in md
  assert "ghost batches of 128" in md
  # the gap profile, computed from the runs: C = 5's largest ratio after 3 and 4 (outliers 40 x 0.98^i
  # then a bulk from 2): 40 * 0.96 / 2 = 19.2 (seed 0, after 3) and 40 * 1.01 * 0.94 / 2 = 18.99 (seed 1)
  assert "Gap profile" in md
  assert ("C = 5 (2 runs): the largest ratio among the top 10 was 19.09 (18.99–19.20), after eigenvalue "
          "3, 4") in md


# ---------------------------------------------------------------------------------------------------
# label_noise

def test_label_noise_verdicts(tmp_path):
  trials = []
  key = "data.options.label_noise"
  for noise in label_noise.NOISE["quick"]:
    for seed in (0, 1, 2):
      # test accuracy peaks at step 200 then falls by 10 * noise points (+-0.5 by seed); clean: no fall
      peak = 0.85 - 0.2 * noise + 0.002 * seed
      drop = 0.1 * noise + 0.001 * seed
      history = [{"step": s, "test/accuracy": a}
                 for s, a in ((100, peak - 0.05), (200, peak), (300, peak - drop))]
      fit = 1.0 if noise < 0.4 else 0.97  # the 0.4 runs do not reach 99% on their noisy labels
      trials.append({"overrides": {key: noise, "seed": seed}, "history": history,
                     "config": {"training.num_steps": 400},
                     "final": {"test/accuracy": peak - drop, "eval_train/accuracy": fit,
                               "curv/lambda_max": 10.0 * (1 + noise) + seed,
                               "sharp/epsilon_sharpness": 10.0 * (1 + noise) + seed}})
  verdicts, written = _verdicts(_sweep(tmp_path / "ln", "label_noise", label_noise, trials))
  assert verdicts[("memorization", "label_noise=0")] == "holds"
  assert verdicts[("memorization", "label_noise=0.2")] == "holds"
  assert verdicts[("memorization", "label_noise=0.4")] == "fails"
  # 9 runs, test accuracy strictly decreasing in noise across levels (ties only within a level): tau < 0,
  # significant at the Bonferroni level of the 3 tests
  assert verdicts[("test_accuracy_falls", "")] == "holds"
  # peak drops: noise 0.4: 0.04, 0.041, 0.042; clean: 0, 0.001, 0.002: the (Bonferroni) Welch interval of
  # +0.04 lies above 0
  assert verdicts[("peak_then_fall", "")] == "holds"
  assert verdicts[("sharpness_rises", "")] == "holds"
  md = written.markdown.read_text()
  assert "memorization showed" not in md


# ---------------------------------------------------------------------------------------------------
# compression

def test_compression_verdicts_rank_the_drop_against_measured_flatness(tmp_path):
  """lambda_max orders the int4 drops exactly (tau = 1 over 8 runs, p < 0.05: holds); the trace is
  unrelated to them (inconclusive); the prune0.9 drops fall with lambda_max (tau = -1: fails)."""
  trials = []
  lams = [5.0, 7.0, 9.0, 11.0, 13.0, 15.0, 17.0, 19.0]
  traces = [50.0, 10.0, 40.0, 30.0, 20.0, 60.0, 35.0, 45.0]  # no order with the drops
  for i, (lam, tr) in enumerate(zip(lams, traces)):
    lr, rho = ((0.01, 0.0), (0.03, 0.0), (0.1, 0.0), (0.1, 0.05))[i // 2]
    final = {"test/accuracy": 0.85, "curv/lambda_max": lam, "curv/trace": tr, "compress/test_accuracy": 0.85}
    for level, drop in (("int8", 0.0), ("int4", 0.01 * lam), ("prune0.9", 0.3 - 0.01 * lam)):
      final |= {f"compress/test_drop_{level}": drop, f"compress/test_accuracy_{level}": 0.85 - drop}
    trials.append({"overrides": {"schedule.lr": lr, "optimizer.sam.rho": rho, "seed": i % 2},
                   "config": {"optimizer.name": "sgd", "training.num_steps": 2000}, "final": final})
  verdicts, written = _verdicts(_sweep(tmp_path / "cp", "compression", compression, trials))
  assert verdicts[("quantize_lambda_max", "")] == "holds"
  assert verdicts[("quantize_trace", "")] == "inconclusive"
  assert verdicts[("prune_lambda_max", "")] == "fails"
  assert ("prune_trace", "") in verdicts
  assert "level chosen from the drops" in written.markdown.read_text()


# ---------------------------------------------------------------------------------------------------
# reparameterization

def _reparam_trial(norm: str, seed: int, adaptive_change: float) -> dict:
  alphas = (0.1, 0.5, 2.0, 10.0)
  lam = {1.0: 10.0, 0.1: 1000.0, 0.5: 40.0, 2.0: 10.0, 10.0: 10.0}  # max / min = 100
  final = {"test/accuracy": 0.88, "sharp/lambda_max": lam[1.0], "sharp/average_adaptive": 0.2,
           "sharp/path_norm": 5.0}
  for a in alphas:
    tag = f"@alpha={a:g}"
    final |= {f"sharp/lambda_max{tag}": lam[a], f"sharp/path_norm{tag}": 5.0,
              f"sharp/average_adaptive{tag}": 0.2 * (1 + (adaptive_change if a == 10.0 else 1e-6)),
              f"sharp/max_output_change{tag}": 1e-6}
  kind, layers = reparameterization.CONDITIONS[norm]
  record = {"measurements": [], "rescaled": [{"alpha": a, "max_output_change": 1e-6, "max_abs_logit": 12.0,
                                              "measurements": []} for a in alphas]}
  return {"overrides": {"model.knobs.norm": norm, "measures.rescale_kind": kind,
                        "measures.rescale_layers": layers, "seed": seed},
          "config": {"model.name": "mlp", "training.num_steps": 1500}, "final": final,
          "files": {"measures/step1500.json": record}}


def test_reparameterization_verdicts(tmp_path):
  trials = [_reparam_trial("none", s, 1e-5) for s in (0, 1)]
  trials += [_reparam_trial("batch", s, 0.01) for s in (0, 1)]
  verdicts, written = _verdicts(_sweep(tmp_path / "rp", "reparameterization", reparameterization, trials))
  # relative logit change 1e-6 / 12 < 1e-4 everywhere
  assert verdicts[("function_unchanged", "norm=none")] == "holds"
  assert verdicts[("function_unchanged", "norm=batch")] == "holds"
  assert verdicts[("lambda_max_changes", "")] == "holds"  # range 100 > 10 in both runs without normalization
  assert verdicts[("adaptive_invariant", "norm=none")] == "holds"  # 1e-5 < 1e-3
  assert verdicts[("adaptive_invariant", "norm=batch")] == "fails"  # 1e-2 at alpha = 10
  assert verdicts[("path_norm_invariant", "")] == "holds"
  md = written.markdown.read_text()
  assert "judged by the pre-registered criteria" in md and "| observed |" not in md


# ---------------------------------------------------------------------------------------------------
# generalization_measures

def test_generalization_measures_verdicts(tmp_path):
  """16 runs of the quick grid: the accuracy gap grows with the run index; magnitude-aware flatness
  follows it exactly (tau_b = 1: holds), plain flatness falls with it (tau_b = -1: fails), adaptive
  worst-case sharpness alternates (|tau_b| small: inconclusive, its interval wider than the band)."""
  grid = generalization_measures.QUICK_GRID
  keys = list(grid)
  trials = []
  for i in range(16):
    ov = {k: grid[k][(i >> (3 - j)) & 1] for j, k in enumerate(keys)}
    gap = 0.01 * (i + 1)
    adaptive = 1.0 + (0.5 if i % 2 else 0.0) + 0.001 * (i % 4 == 0)
    final = {"test/accuracy": 0.9 - gap, "eval_train/accuracy": 0.9, "gap/accuracy": gap, "gap/loss": gap,
             "sharp/pacbayes_mag_flatness": 10.0 + i, "sharp/pacbayes_flatness": 50.0 - i,
             "sharp/worst_case_adaptive_l2": adaptive, "sharp/lambda_max": 5.0 + (i % 3)}
    trials.append({"overrides": ov, "config": {"model.name": "mlp", "training.num_steps": 300},
                   "final": final})
  verdicts, written = _verdicts(_sweep(tmp_path / "gm", "generalization_measures", generalization_measures,
                                       trials))
  assert verdicts[("pacbayes_mag_flatness", "")] == "holds"
  assert verdicts[("pacbayes_flatness", "")] == "fails"
  # |tau_b| small, but the 95% Fisher-z interval of tau over 16 runs (about +-0.36 wide) cannot fit in
  # the +-0.3 band: "no correlation" is not shown by a large p-value, it stays inconclusive
  assert verdicts[("adaptive_sharpness_no_correlation", "")] == "inconclusive"
  md = written.markdown.read_text()
  assert "contradicts it" in md  # the comparison's words follow the same tau_b and p as the verdicts
  # the summary by batch size pools grid points of one seed each: counted and captioned as runs, not seeds
  assert "| batch_size | runs |" in md and "over runs (the value alone for one run)" in md
  assert "| batch_size | seeds |" not in md


# ---------------------------------------------------------------------------------------------------
# generic

def test_generic_report_says_it_has_no_criteria_and_shows_no_outlier_count(tmp_path):
  """Runs of no study, from before the SLQ outlier rule was dropped (their records and metrics carry
  `curv/num_outliers`): the report opens by saying no criteria are recorded and never shows the count."""
  root = tmp_path / "g"
  for seed in (0, 1):
    final = {"test/accuracy": 0.8 + 0.01 * seed, "curv/lambda_max": 3.0, "curv/num_outliers": 27}
    record = {"operator": {"operator": "hessian", "step": 10, "bn_mode": "eval"},
              "results": {"spectrum": {"lambda_max": 3.0}, "density": {"outliers": {"count": 27}}}}
    d = root / f"run{seed}"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"seed": seed, "study": "", "loss": {"name": "cross_entropy"}}))
    (d / "meta.json").write_text(json.dumps({"status": "done", "seed": seed}))
    (d / "summary.json").write_text(json.dumps({"status": "done", "final": final}))
    (d / "metrics.jsonl").write_text(json.dumps({"step": 0, "curv/num_outliers": 25, "curv/lambda_max": 1.0})
                                     + "\n" + json.dumps({"step": 10} | final) + "\n")
    (d / "curvature").mkdir()
    (d / "curvature" / "step10_hessian_train.json").write_text(json.dumps(record))
  written = report.write_report(root)
  md = written.markdown.read_text()
  assert written.report.template == "generic"
  assert md[md.index("## "):].startswith("## Verdicts") and "No pre-registered criteria" in md
  assert "outlier" not in md.lower()
