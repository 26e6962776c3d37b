"""The BatchNorm ablation's report on a synthetic sweep of main runs and a step-size sweep: the sweep's
runs stay out of the main comparison, the largest step size at which every run trained is found per norm,
and the pre-registered step-size criterion is judged on the sweep's runs."""

import json
from pathlib import Path

from analysis import report
from experiments.configs import bn_ablation


def _run(root: Path, name: str, norm: str, seed: int, lr: float, steps: int, acc100: float,
         status: str = "done") -> dict:
  tracked = steps == bn_ablation.QUICK_STEPS
  d = root / name
  d.mkdir(parents=True)
  cfg = {"study": "bn_ablation", "seed": seed, "model": {"name": "simple_cnn", "knobs": {"norm": norm}},
         "schedule": {"lr": lr}, "optimizer": {"name": "momentum", "momentum": 0.9},
         "training": {"num_steps": steps, "batch_size": 128},
         "curvature": {"every_steps": 20 if tracked else 0, "bn_mode": "batch", "chunk_size": 128},
         "smoothness": {"every_steps": 20 if tracked else 0}}
  final = {"eval_train/accuracy": acc100 if not tracked else 0.9, "test/accuracy": 0.84 + 0.001 * seed,
           "gap/accuracy": 0.05}
  history = [{"step": 100, "eval_train/accuracy": acc100}]
  if tracked:
    history = [{"step": s, "curv/lambda_max": 10.0 + seed + (norm == "none"),
                "smooth/beta": 5.0 + seed} for s in range(0, steps + 1, 20)] + history
    final |= {"curv/lambda_max": 11.0 + seed}
  (d / "config.json").write_text(json.dumps(cfg))
  (d / "meta.json").write_text(json.dumps({"status": status, "seed": seed, "git": "abc123def4567"}))
  (d / "summary.json").write_text(json.dumps({"status": status, "final": final}))
  (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in history + [{"step": steps} | final]))
  overrides = {"model.knobs.norm": norm, "seed": seed}
  if not tracked:
    overrides |= {"curvature.every_steps": 0, "smoothness.every_steps": 0, "schedule.lr": lr,
                  "training.num_steps": steps}
  return {"name": name, "overrides": overrides, "status": status}


def test_step_size_sweep_is_reported_apart_from_the_main_runs(tmp_path):
  root = tmp_path / "bn_ablation-quick"
  trials = []
  main = {"batch": (0.86, 0.87, 0.85), "none": (0.85, 0.86, 0.84)}
  for norm, accs in main.items():
    for seed, acc in enumerate(accs):
      trials.append(_run(root, f"{len(trials):03d}-norm={norm}-seed={seed}", norm, seed, 0.05, 300, acc))
  sweep = {("batch", 0.2): (0.68, 0.66, 0.70), ("batch", 0.4): (0.2,), ("none", 0.2): (0.1, 0.1, 0.1),
           ("none", 0.4): (0.1,)}
  for (norm, lr), accs in sweep.items():
    for seed, acc in enumerate(accs):
      name = f"{len(trials):03d}-norm={norm}-seed={seed}-lr={lr}"
      trials.append(_run(root, name, norm, seed, lr, 100, acc))
  for i, t in enumerate(trials):
    t.update(index=i, started="2026-12-02T10:00:00+00:00", ended="2026-12-02T10:01:00+00:00")
  specs = [c for c in bn_ablation.get_criteria("quick") if c["id"] in ("larger_stable_lr", "lambda_max")]
  (root / "sweep.json").write_text(json.dumps({
      "study": "bn_ablation", "variant": "quick", "common_overrides": {}, "trials": trials,
      "criteria": specs, "criteria_registered": "2026-12-02T09:59:00+00:00"}))
  report.write_report(root)
  text = (root / "report" / "report.md").read_text()
  verdicts = {v["id"]: v for v in json.loads((root / "report" / "verdicts.json").read_text())["verdicts"]}
  # the step-size criterion: +57 points at 0.2 with 3 vs 3 seeds (none's seeds all at chance)
  assert verdicts["larger_stable_lr"]["verdict"] == "holds"
  assert abs(verdicts["larger_stable_lr"]["values"]["estimate"] - (0.68 - 0.1)) < 1e-9
  assert "norm=batch: the largest step size of the grid at which every run trained is η = 0.2 (the next, " \
         "0.4, did not)" in text
  assert "norm=none: the largest step size of the grid at which every run trained is η = 0.05 (the next, " \
         "0.2, did not)" in text
  assert (root / "report" / "figures" / "step_size_sweep.png").exists()
  # the main comparison has the main runs only: one row per norm with 3 seeds, no lr column
  results = text.split("## Results")[1]
  assert "| batch | 3 |" in results and "| none | 3 |" in results and "0.2" not in results.split("\n\n")[1]
