"""The edge_of_stability, optimizers and lr_batch_ratio reports judge their configs' pre-registered criteria
as the synthetic numbers imply: code-written sweeps (sweep.json holding the config's `get_criteria`) whose
lambda_max histories and final metrics are chosen by hand; Welch and Kendall statistics against scipy."""

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from analysis import report
from analysis.studies import edge_of_stability as eos_template
from experiments.configs import edge_of_stability, lr_batch_ratio, optimizers


def _nest(flat: dict) -> dict:
  out: dict = {}
  for key, value in flat.items():
    *head, last = key.split(".")
    node = out
    for k in head:
      node = node.setdefault(k, {})
    node[last] = value
  return out


def _sweep(root: Path, study: str, criteria: list[dict],
           runs: list[tuple[dict, dict, list[dict], str]]) -> Path:
  """runs: (flat config overrides incl. seed, final metrics, metric records, status) -> a sweep directory."""
  trials = []
  for i, (over, final, records, status) in enumerate(runs):
    name = f"{i:03d}-" + "-".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in over.items())
    d = root / name
    d.mkdir(parents=True)
    cfg = _nest({"study": study} | over)
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "meta.json").write_text(json.dumps({"status": status, "seed": over.get("seed", 0)}))
    if status == "done":
      (d / "summary.json").write_text(json.dumps({"status": "done", "final": final}))
    last = max([r["step"] for r in records] + [0])
    lines = records + [{"step": last} | final]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    trials.append({"index": i, "name": name, "overrides": over, "status": status})
  (root / "sweep.json").write_text(json.dumps({
      "study": study, "variant": "quick", "common_overrides": {}, "trials": trials, "criteria": criteria,
      "criteria_registered": "2026-12-02T10:00:00+00:00"}))
  return root


def _verdicts(root: Path, out: Path) -> tuple[dict, str]:
  written = report.write_report(root, out)
  record = json.loads((out / "verdicts.json").read_text())
  found = {(v["id"], v["scope"]): v for v in record["verdicts"]}
  return found, written.markdown.read_text()


# ---------------------------------------------------------------------------------------------------
# edge_of_stability

def test_eos_quantities_count_only_a_crossing_from_below():
  steps = np.arange(8) * 10.0
  # starts at 1.7 x the threshold, catapults to 0.5, sharpens to 1.0 and hovers: reached at step 40
  q = eos_template.eos_quantities(steps, np.array([170, 50, 70, 90, 100, 105, 98, 102.0]), 100.0)
  assert q["eos/started_above"] == 1 and q["eos/reached"] == 1 and q["eos/crossing_step"] == 40
  assert q["eos/first_below_step"] == 10 and q["eos/sharpening"] == pytest.approx(100 / 50)
  assert q["eos/window_fraction"] == 1 and q["eos/start_ratio"] == pytest.approx(1.7)
  assert q["eos/above_fraction"] == pytest.approx(3 / 4)  # 100, 105, 102 at or above; 98 below
  # above at the start and never below: the fall is a catapult only, the threshold is never reached
  q = eos_template.eos_quantities(steps, np.array([170, 160, 150, 140, 130, 120, 110, 105.0]), 100.0)
  assert q["eos/reached"] == 0 and q["eos/window_fraction"] == 0 and np.isnan(q["eos/sharpening"])
  # inside the window from the start (0.96, 0.97): no measurement below 0.9 x threshold, no crossing
  q = eos_template.eos_quantities(steps[:3], np.array([96, 97, 97.0]), 100.0)
  assert q["eos/reached"] == 0 and np.isnan(q["eos/crossing_step"])
  # falls from above into the window and stays there (0.94 -> 0.95): not a crossing from below either
  q = eos_template.eos_quantities(steps[:4], np.array([300, 94, 95, 96.0]), 100.0)
  assert q["eos/reached"] == 0
  # below the window at 0.88, dips to 0.70, rises to 0.91 by the end: sharpening from the low point
  q = eos_template.eos_quantities(steps[:5], np.array([140, 88, 70, 80, 91.0]), 100.0)
  assert q["eos/reached"] == 0 and q["eos/sharpening"] == pytest.approx(91 / 70)
  # cross-entropy: hovers, then declines late: 3 of 6 after the crossing in [0.9, 1.1], 3 of 3 before it
  q = eos_template.eos_quantities(steps, np.array([20, 60, 100, 104, 99, 60, 40, 30.0]), 100.0)
  assert q["eos/window_fraction"] == pytest.approx(3 / 6) and q["eos/hover_fraction"] == 1
  assert q["eos/above_fraction"] == pytest.approx(2 / 3)  # 100, 104 of 100, 104, 99 (the decline left out)
  assert q["eos/end_ratio"] == pytest.approx(0.3)
  assert eos_template.eos_quantities(steps[:1], np.array([1.0]), 100.0) == {}


def test_eos_constants_are_the_configs():
  assert (eos_template.REACH, eos_template.WINDOW) == (edge_of_stability.REACH, edge_of_stability.WINDOW)


def _history(values, every: int = 20, key: str = "curv/lambda_max", start: int = 0) -> list[dict]:
  return [{"step": start + every * i, key: float(v)} for i, v in enumerate(values)]


def test_edge_of_stability_report_verdicts(tmp_path):
  base = {"loss.name": "mse", "optimizer.name": "sgd", "training.full_batch": True,
          "curvature.every_steps": 20, "seed": 0}
  final = {"test/accuracy": 0.8, "eval_train/accuracy": 0.9}
  hover = [98, 103, 101, 97, 104, 100, 99, 102]
  runs = [
      # lr 0.02 (2/eta = 100): starts below, sharpens 50 -> 100, hovers: every criterion holds
      (base | {"schedule.lr": 0.02}, final, _history([50, 60, 75, 90, *hover]), "done"),
      # lr 0.04 (50): starts above at 80, catapults to 30 and stays: never reached from below
      (base | {"schedule.lr": 0.04}, final, _history([80, 30, 31, 30, 32, 31, 30, 31, 30, 31]), "done"),
      # lr 0.06 (33.3): starts above at 80, catapults to 15, sharpens to the threshold and hovers
      (base | {"schedule.lr": 0.06}, final, _history([80, 15, 20, 28, *[h / 3 for h in hover]]), "done"),
      # cross-entropy at 0.06 (another initialization): sharpens, hovers, then declines late as the loss -> 0
      (base | {"schedule.lr": 0.06, "loss.name": "cross_entropy", "model.knobs.initializer": "lecun_normal"},
       final,
       _history([10, 20, 30, *[h / 3 for h in hover], 28, 22, 15]), "done"),
      # heavy-ball momentum 0.9 at 0.05: threshold 3.8 / 0.05 = 76, sharpens and hovers
      # (its training loss ends at 1e-4: the fitted-training-set limitation names it)
      (base | {"schedule.lr": 0.05, "optimizer.name": "momentum", "optimizer.momentum": 0.9},
       final | {"eval_train/loss": 1e-4},
       _history([30, 50, 70, *[h * 0.76 for h in hover]]), "done"),
      # full-batch Adam at 0.002: preconditioned sharpness against 38 / 0.002 = 19000; raw lambda_max lower
      (base | {"schedule.lr": 0.002, "optimizer.name": "adam", "curvature.preconditioned": True}, final,
       _history([5000, 9000, 15000, *[h * 190 for h in hover]], key="curv/precond_lambda_max", start=20)
       + _history([1, 2, 3, 4]), "done"),
  ]
  root = _sweep(tmp_path / "eos", "edge_of_stability", edge_of_stability.get_criteria("quick"), runs)
  found, md = _verdicts(root, tmp_path / "out")
  expected = {("gd_reaches", "lr=0.02"): "holds", ("gd_sharpening", "lr=0.02"): "holds",
              ("gd_hovers", "lr=0.02"): "holds", ("gd_reaches", "lr=0.04"): "fails",
              ("gd_hovers", "lr=0.04"): "fails", ("gd_reaches", "lr=0.06"): "holds",
              ("gd_sharpening", "lr=0.06"): "holds", ("gd_hovers", "lr=0.06"): "holds",
              ("ce_reaches", "lr=0.06"): "holds", ("ce_hovers", "lr=0.06"): "holds",
              ("ce_not_above_at_end", "lr=0.06"): "holds", ("momentum_reaches", "lr=0.05"): "holds",
              ("momentum_hovers", "lr=0.05"): "holds", ("adam_reaches", "lr=0.002"): "holds",
              ("adam_hovers", "lr=0.002"): "holds"}
  for key, verdict in expected.items():
    assert found[key]["verdict"] == verdict, (key, found[key])
  assert found[("gd_sharpening", "lr=0.04")]["values"]["values"] == [pytest.approx(32 / 30)]
  results = md.split("## Results")[1].split("## Findings")[0]
  assert "lambda_max_mse" in md and "lambda_max_cross_entropy" in md
  findings = md.split("## Findings")[1]
  assert "catapult" in findings and "Lewkowycz" in findings
  assert "did not settle" not in md and "nats" not in results.split("training_curves_cross_entropy")[0]
  limitations = md.split("## Limitations")[1]
  assert "do not share one initialization" in limitations
  assert "Initialization lecun_normal and input normalization standardize: GD (full batch) at η=0.06" in md
  assert "Training loss at the end below 0.001 (GD-momentum 0.9 (full batch) at η=0.05 (mse): 1.0e-04)" in md


# ---------------------------------------------------------------------------------------------------
# optimizers

def test_optimizers_report_verdicts_and_labels(tmp_path):
  lam = {"gd": [40.0, 42.0, 44.0], "sgd": [10.0, 11.0, 12.0], "momentum": [12.0, 12.5, 13.0],
         "adam": [30.0, 60.0, 90.0]}
  acc = {"gd": [0.70, 0.71, 0.72], "sgd": [0.80, 0.81, 0.82], "momentum": [0.80, 0.80, 0.81],
         "adam": [0.70, 0.85, 0.78]}
  runs = []
  for name, over in optimizers.OPTIMIZERS.items():
    for seed in range(3):
      flat = dict(over) | {"training.batch_size": 128, "seed": seed, "curvature.bn_mode": "batch",
                           "curvature.chunk_size": 512 if name == "gd" else 128}
      if name == "gd":  # seeds 0 and 1 sharpen from below to 2/eta = 40; seed 2 starts above and only falls
        values = [60, 50, 45, 44] if seed == 2 else [10, 25, 39, 41]
      else:
        values = [5, 8, 10, lam[name][seed]]
      history = _history(values, every=100)
      if name == "adam":
        history += _history([100, 300, 700], every=100, key="curv/precond_lambda_max", start=100)
      final = {"test/accuracy": acc[name][seed], "eval_train/accuracy": 1.0,
               "valid/accuracy": acc[name][seed], "curv/lambda_max": lam[name][seed],
               "gap/accuracy": 1.0 - acc[name][seed]}
      runs.append((flat, final, history, "done"))
  for seed in range(3):  # SGD at a step size of worse validation accuracy: the tuning leaves it out
    flat = optimizers.OPTIMIZERS["sgd"] | {"schedule.lr": 0.2, "training.batch_size": 128, "seed": seed}
    final = {"test/accuracy": 0.99, "valid/accuracy": 0.5, "eval_train/accuracy": 1.0}
    runs.append((flat, final, [], "done"))
  root = _sweep(tmp_path / "opt", "optimizers", optimizers.get_criteria("quick"), runs)
  found, md = _verdicts(root, tmp_path / "out")
  gd_sgd = scipy.stats.ttest_ind(np.log(lam["gd"]), np.log(lam["sgd"]), equal_var=False)
  assert found[("gd_sharper", "")]["verdict"] == "holds"
  assert found[("gd_sharper", "")]["values"]["p_value"] == pytest.approx(gd_sgd.pvalue, rel=1e-9)
  assert found[("sgd_more_accurate_than_gd", "")]["verdict"] == "holds"
  adam = scipy.stats.ttest_ind(acc["sgd"], acc["adam"], equal_var=False)
  assert adam.pvalue > 0.05 and found[("adam_less_accurate", "")]["verdict"] == "inconclusive"
  # GD seed 2 starts above 2/eta and falls: not reaching it from below, so "every" fails
  assert found[("gd_reaches_2_over_eta", "")]["verdict"] == "fails"
  assert found[("gd_reaches_2_over_eta", "")]["values"]["passing"] == 2
  assert "GD (full batch)" in md and "SGD (batch 128)" in md and "Adam (batch 128)" in md
  findings = md.split("## Findings")[1]
  assert found[("adam_less_accurate", "")]["values"]["tuned"]["a"]["chosen"] == 0.05
  assert "Adam less accurate than SGD (Wilson et al. 2017): SGD (η = 0.05, tuned) minus Adam (η = 0.001, " \
      "tuned)" in findings
  assert "SGD minus GD" not in findings and "SGD (η = 0.05) minus GD" in findings
  assert "is inconclusive with 3 vs 3 seeds" in findings
  assert "at the threshold**" not in md


# ---------------------------------------------------------------------------------------------------
# lr_batch_ratio

def test_lr_batch_ratio_criteria_rank_by_the_derived_ratio(tmp_path):
  runs, rows = [], []
  for i, (lr, b) in enumerate([(lr, b) for lr in lr_batch_ratio.LRS for b in (32, 64, 128)] + [(0.2, 32)]):
    lam = 3.0 / lr * b ** 0.5 if i < 9 else 1.0  # a running run's last value must not count
    acc = 0.8 + 10 * lr / b + (0.01 if b == 64 else 0.0)
    flat = {"schedule.lr": lr, "training.batch_size": b, "curvature.every_steps": 2048 // b,
            "curvature.chunk_size": b, "curvature.bn_mode": "batch", "optimizer.name": "sgd", "seed": 0,
            "data.options.num_train": 4096, "model.knobs.norm": "batch"}
    final = {"test/accuracy": acc, "gap/accuracy": 0.05, "gap/loss": 0.1, "curv/lambda_max": lam}
    status = "done" if i < 9 else "running"
    runs.append((flat, final, _history([2 * lam, lam], every=40960 // b), status))
    if i < 9:
      rows.append((lr / b, lam, acc))
  root = _sweep(tmp_path / "lrb", "lr_batch_ratio", lr_batch_ratio.get_criteria("quick"), runs)
  found, md = _verdicts(root, tmp_path / "out")
  ratio, lam, acc = map(np.asarray, zip(*rows))
  for cid, y, sign in (("sharpness_falls_with_ratio", lam, -1), ("accuracy_rises_with_ratio", acc, 1)):
    ref = scipy.stats.kendalltau(ratio, y)
    v = found[(cid, "")]
    assert v["values"]["n"] == 9 and v["values"]["tau"] == pytest.approx(ref.statistic, abs=1e-12)
    assert v["values"]["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    expected = (("holds" if np.sign(ref.statistic) == sign else "fails") if ref.pvalue < 0.05
                else "inconclusive")
    assert v["verdict"] == expected
  assert found[("accuracy_rises_with_ratio", "")]["verdict"] == "holds"
  comparison = md.split("## Comparison")[1]
  assert "± " not in comparison.split("Dependence through")[1].split("t-interval")[0]
  assert "batch statistics over ghost batches" in md


def test_optimizers_template_compares_the_configs_groups():
  from analysis.studies import optimizers as template

  assert template.GROUPS == {"GD": optimizers.GROUPS["gd"], "SGD": optimizers.GROUPS["sgd"],
                             "Adam": optimizers.GROUPS["adam"]}
  by_id = {c["id"]: c for c in optimizers.get_criteria("quick")}
  for cid, a, b, metric, compare, expected, _ in template.COMPARISONS:
    c = by_id[cid]  # the fallback groups (sweeps without recorded criteria) are the criteria's, lr aside
    assert (c["quantity"], c["compare"], c["expected"]) == (metric, compare, expected)
    for side, name in (("a", a), ("b", b)):
      assert {k: v for k, v in c[side].items() if k != "schedule.lr"} == template.GROUPS[name]
