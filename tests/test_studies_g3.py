"""The reports of the batch_size, sam, skip_connections and depth_width studies on synthetic sweeps: the
criteria are the configs' own (`get_criteria`, written to sweep.json as a sweep records them), the runs'
numbers are made up so that each verdict is known in advance, and the report must reach it (and its
text must agree with it)."""

import json
from pathlib import Path

import numpy as np
import scipy.stats

from analysis import report
from experiments.configs import batch_size, depth_width, sam, skip_connections
from research.core import criteria


def _nested(flat: dict) -> dict:
  out: dict = {}
  for key, value in flat.items():
    node = out
    *parents, last = key.split(".")
    for p in parents:
      node = node.setdefault(p, {})
    node[last] = value
  return out


def _write_sweep(root: Path, study: str, trials: list[dict], specs: list[dict]) -> Path:
  """trials: {"overrides": {...}, "config": {dotted key: value}, "final": {...}, "history": [{...}]}."""
  index = []
  for i, t in enumerate(trials):
    name = f"{i:03d}-" + "-".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in t["overrides"].items())
    d = root / name
    d.mkdir(parents=True)
    flat = {"study": study, "loss.name": "cross_entropy"} | t.get("config", {}) | t["overrides"]
    (d / "config.json").write_text(json.dumps(_nested(flat)))
    seed = t["overrides"].get("seed", 0)
    (d / "meta.json").write_text(json.dumps({"status": "done", "seed": seed, "git": "abc123def4567"}))
    (d / "summary.json").write_text(json.dumps({"status": "done", "final": t["final"]}))
    history = t.get("history", [])
    last = max([h["step"] for h in history] + [100])
    lines = history + [{"step": last} | t["final"]]
    (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    index.append({"index": i, "name": name, "overrides": t["overrides"], "status": "done",
                  "started": "2026-12-02T10:00:00+00:00", "ended": "2026-12-02T10:01:00+00:00"})
  (root / "sweep.json").write_text(json.dumps({
      "study": study, "variant": "quick", "common_overrides": {}, "trials": index,
      "criteria": [c.to_dict() for c in criteria.parse(specs)],
      "criteria_registered": "2026-12-02T09:59:00+00:00"}))
  return root


def _verdicts(root: Path) -> tuple[dict, str]:
  written = report.write_report(root)
  record = json.loads((root / "report" / "verdicts.json").read_text())
  out: dict = {}
  for v in record["verdicts"]:
    out[v["id"] + (f" [{v['scope']}]" if v["scope"] else "")] = v["verdict"]
  return out, written.markdown.read_text()


def _curve(values: list[float], every: int = 5) -> list[dict]:
  return [{"step": every * i, "curv/lambda_max": v} for i, v in enumerate(values)]


# ----------------------------------------------------------------------------------------------------
# batch_size


def _batch_size_sweep(root: Path, large_train_loss: list[float]) -> Path:
  small, large = batch_size.BATCH_SIZES["quick"]
  trials = []
  for b in (small, large):
    for seed in range(3):
      big = b == large
      final = {"test/accuracy": (0.85 if big else 0.89) + 0.002 * seed,
               "eval_train/accuracy": 0.995, "gap/accuracy": 0.1,
               "gap/loss": (0.5 if big else 0.3) + 0.01 * seed,
               "eval_train/loss": large_train_loss[seed] if big else 0.010 + 0.001 * seed,
               "sharp/epsilon_sharpness": (30.0 if big else 10.0) + seed,
               "curv/lambda_max": (80.0 if big else 40.0) + 2 * seed}
      trials.append({"overrides": {"training.batch_size": b, "curvature.every_steps": 4 if big else 16,
                                   "seed": seed},
                     "config": {"optimizer.name": "adam"}, "final": final,
                     "history": _curve([5.0, 20.0, final["curv/lambda_max"]])})
  _write_sweep(root, "batch_size", trials, batch_size.get_criteria("quick"))
  ts = batch_size.INTERPOLATION_TS
  names = sorted(p.name for p in root.iterdir() if p.is_dir())
  for seed in range(3):
    s_name = next(n for n in names if f"batch_size={small}-" in n and n.endswith(f"seed={seed}"))
    l_name = next(n for n in names if f"batch_size={large}-" in n and n.endswith(f"seed={seed}"))
    # a parabola around t = 0 of curvature 1 and around t = 1 of curvature 4 + 0.2 seed: steeper beyond
    # the large-batch end; the rise difference per seed is (4 + 0.2 seed) - 1
    loss = np.where(ts < 0.5, 0.01 + ts ** 2, 0.01 + (4.0 + 0.2 * seed) * (ts - 1) ** 2)
    d = root / "interpolation"
    d.mkdir(exist_ok=True)
    info = {"seed_a": seed, "batch_size_a": small, "batch_size_b": large}
    arrays = {"eval_train/loss": loss, "eval_train/accuracy": 1 - loss}
    np.savez(d / f"{s_name}__{l_name}.npz", axis_0=ts, **arrays, info=np.asarray(json.dumps(info)))
  return root


def test_batch_size_report_judges_keskar_at_a_matched_training_loss(tmp_path):
  root = _batch_size_sweep(tmp_path / "matched", [0.011, 0.010, 0.012])
  verdicts, md = _verdicts(root)
  assert verdicts == {"epsilon_sharpness": "holds", "lambda_max": "holds", "test_accuracy": "holds",
                      "matched_training_loss": "holds", "interpolation": "holds"}
  assert "at a matched training loss, as Keskar" in md and "The large batch under-fit" not in md
  assert ("Loss gap (test minus training loss), batch 256 minus 64: +0.2 nats (0.51 against 0.31); larger "
          "with the large batch, Keskar et al.'s direction in loss terms: this shows it") in md
  assert "nats" in md


def test_batch_size_report_says_the_large_batch_under_fit(tmp_path):
  root = _batch_size_sweep(tmp_path / "underfit", [0.30, 0.32, 0.31])
  verdicts, md = _verdicts(root)
  assert verdicts["matched_training_loss"] == "fails"
  assert "The large batch under-fit" in md


# ----------------------------------------------------------------------------------------------------
# sam


def test_sam_report_judges_each_loss_on_its_own(tmp_path):
  """Cross-entropy runs where SAM is flatter and more accurate, MSE runs where it is the opposite: pooled,
  the two would cancel; judged per loss, each gets its own verdict, and the figure keeps them apart."""
  trials = []
  sign = {"cross_entropy": 1.0, "mse": -1.0}
  for loss in ("cross_entropy", "mse"):
    for method, over in sam.METHODS.items():
      for seed in range(3):
        better = {"sgd": 0.0, "sam": 1.0, "asam": 2.0}[method] * sign[loss]
        final = {"test/accuracy": 0.80 + 0.02 * better + 0.001 * seed, "gap/accuracy": 0.05,
                 "curv/lambda_max": 40.0 * 1.5 ** -better + seed,
                 "curv/lambda_1_over_lambda_k": 6.0 * 1.5 ** -better + 0.1 * seed,
                 "sharp/worst_case_l2": 0.5 * 1.5 ** -better + 0.01 * seed}
        trials.append({"overrides": over | {"loss.name": loss, "seed": seed},
                       "config": {"optimizer.name": "momentum", "optimizer.momentum": 0.9,
                                  "training.batch_size": 128, "curvature.k": 5, "curvature.bn_mode": "batch",
                                  "curvature.chunk_size": 128},
                       "final": final, "history": _curve([5.0, 30.0, final["curv/lambda_max"]])})
  root = _write_sweep(tmp_path / "sam", "sam", trials, sam.get_criteria("quick"))
  verdicts, md = _verdicts(root)
  for cid in ("sam_lambda_max", "sam_top_ratio", "sam_worst_case", "sam_test_accuracy", "asam_test_accuracy"):
    assert verdicts[f"{cid} [loss.name=cross_entropy]"] == "holds", cid
    assert verdicts[f"{cid} [loss.name=mse]"] == "fails", cid
  assert (root / "report" / "figures" / "methods.png").exists()
  assert "sam, mse: SGD-momentum 0.9 + SAM ρ=0.05 (batch 128)" in md
  assert "λ_1/λ_5" in md


# ----------------------------------------------------------------------------------------------------
# skip_connections


def _skip_sweep(root: Path, seeds: int) -> Path:
  trials = []
  for depth in skip_connections.DEPTHS["quick"]:
    for skip in (True, False):
      for seed in range(seeds):
        deep = depth == max(skip_connections.DEPTHS["quick"])
        chaotic = deep and not skip
        final = {"test/accuracy": (0.60 if chaotic else 0.88) + 0.005 * seed,
                 "eval_train/accuracy": 0.36 if chaotic else 0.995,
                 "curv/lambda_max": 50.0 + seed, "curv/lambda_min": -(20.0 if chaotic else 1.0) - 0.5 * seed,
                 "land/nonconvex_eval_train": (0.4 if chaotic else 0.02) + 0.01 * seed}
        overrides = {"model.name": f"resnet{depth}", "model.knobs.skip": skip, "seed": seed}
        trials.append({"overrides": overrides, "final": final,
                       "config": {"curvature.bn_mode": "batch", "curvature.chunk_size": 64,
                                  "optimizer.name": "momentum", "training.batch_size": 64},
                       "history": _curve([100.0, 70.0, final["curv/lambda_max"]])})
  _write_sweep(root, "skip_connections", trials, skip_connections.get_criteria("quick"))
  xs = np.linspace(-1, 1, 5)
  for d in (p for p in root.iterdir() if p.is_dir()):
    (d / "landscape").mkdir()
    loss = 0.1 + xs[:, None] ** 2 + xs[None, :] ** 2
    info = {"bn_mode": "eval", "splits": {"eval_train": {"num_examples": 256}}}
    np.savez(d / "landscape" / "step100_2d.npz", axis_0=xs, axis_1=xs, **{"eval_train/loss": loss},
             info=np.asarray(json.dumps(info)))
  return root


def test_skip_connections_report_needs_seeds_and_a_fitted_network_for_a_minimum(tmp_path):
  verdicts, md = _verdicts(_skip_sweep(tmp_path / "three", 3))
  assert verdicts == {"nonconvexity_ratio": "holds", "landscape_nonconvex": "holds", "test_accuracy": "holds"}
  # the deepest network without skips reaches 36% training accuracy: its landscape centre is not a minimum
  deep = max(skip_connections.DEPTHS["quick"])
  assert f"not called a minimum: resnet{deep}, no skips (36.0%)" in md
  assert "ghost batches of 64 examples" in md
  verdicts, md = _verdicts(_skip_sweep(tmp_path / "one", 1))
  assert set(verdicts.values()) == {"inconclusive"}
  assert "inconclusive with 1 vs 1 seeds" in md and "One seed per network" in md


# ----------------------------------------------------------------------------------------------------
# depth_width


def test_depth_width_report_matches_its_criteria(tmp_path):
  """Deeper, narrower MLPs end sharper and slightly less accurate (within the 1-point match for the
  shallowest vs deepest: 0.5 points): every criterion holds, and the comparison says so with the same
  intervals."""
  trials = []
  for depth in depth_width.MLP_DEPTHS:
    width = depth_width.mlp_width(depth)
    for seed in range(3):
      final = {"test/accuracy": 0.880 - 0.0007 * depth + 0.001 * seed, "gap/accuracy": 0.05,
               "curv/lambda_max": 10.0 * depth + seed}
      trials.append({"overrides": {"model.knobs.depth": depth, "model.knobs.width": width, "seed": seed},
                     "config": {"model.name": "mlp", "optimizer.name": "momentum"}, "final": final,
                     "history": _curve([1.0, 5.0, final["curv/lambda_max"]])})
  root = _write_sweep(tmp_path / "dw", "depth_width", trials, depth_width.get_criteria("quick"))
  verdicts, md = _verdicts(root)
  assert verdicts == {"shallow_wide_accuracy": "holds", "deep_narrow_sharper": "holds"}
  assert "no criterion claims one" in md  # width follows depth: no separate width claim
  assert ("the shallow wide network at least as accurate (less than 1 point below, or better): this shows "
          "it") in md
  # lambda_max rises with depth in every seed: the trend over all depths is stated with its tau
  n = 3 * len(depth_width.MLP_DEPTHS)
  tau = scipy.stats.kendalltau(np.repeat(depth_width.MLP_DEPTHS, 3),
                               [10.0 * d + s for d in depth_width.MLP_DEPTHS for s in range(3)]).statistic
  assert f"Kendall's τ between depth and λ_max over the {n} runs: {tau:+.2f}" in md
  assert "is part of a trend with depth" in md
