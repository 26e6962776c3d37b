"""analysis/: the loader, seed statistics, plots, tables and reports, on run directories made here by
real training runs (a tiny MLP on synthetic data, a few steps) and curvature measured on them.

Numbers are checked against independent computations: the summary.json files read with `json`,
NumPy's mean and std, a dense Hessian eigendecomposition for lambda_max, the files written.
"""

import json
import re
import shlex
import shutil
from pathlib import Path

import helpers
import jax
import matplotlib
import numpy as np
import pytest
import scipy.stats
from jax.flatten_util import ravel_pytree

from analysis import plots, report, runs, stats, tables
from research import curvature, training
from research.core.evaluator import Evaluator

SYNTH = dict(synthetic_train=96, synthetic_test=48, image_shape=(4, 4, 1), num_classes=3, valid_size=0,
             eval_train_size=48)
NORMS = ("batch", "none", "layer")
SEEDS = (0, 1)


def tiny_config(**changes):
  return helpers.tiny_config(SYNTH, width=8, num_steps=12, eval_every=6, log_every=3,
                             **({"schedule.lr": 0.1} | changes))


_HESSIANS = {}


def _dense_hessian(graphdef, preprocess, loss_name):
  """Jitted (params, model_state, images, labels) -> dense Hessian of the mean loss (BatchNorm eval),
  one compile per model and dataset."""
  key = (graphdef, id(preprocess.__self__), loss_name)
  if key in _HESSIANS:
    return _HESSIANS[key]

  @jax.jit
  def h(params, model_state, images, labels):
    loss_fn, _ = curvature.model_functions(graphdef, model_state, bn_mode="eval", preprocess=preprocess,
                                           loss_name=loss_name)
    flat, unravel = ravel_pytree(params)
    return jax.hessian(lambda v: loss_fn(unravel(v), {"image": images, "label": labels}))(flat)

  _HESSIANS[key] = h
  return h


def dense_lambda_max(ctx) -> dict:
  """Evaluator: the exact top eigenvalue of the training-loss Hessian on the first 48 examples
  (dense jax.hessian, BatchNorm in eval mode, eigvalsh in float64)."""
  h = _dense_hessian(ctx.graphdef, ctx.dataset.preprocess, ctx.config.loss.name)(
      ctx.state.params, ctx.state.model_state, ctx.dataset.train.images[:48], ctx.dataset.train.labels[:48])
  return {"curv/lambda_max": float(np.linalg.eigvalsh(np.asarray(h, np.float64))[-1])}


LAMBDA = Evaluator("lambda_max", dense_lambda_max, every_steps=4)


def launch_of(run: Path, seed: int, norm: str) -> dict:
  """A launch record as experiments.train writes it into meta.json."""
  overrides = [f"--config.seed={seed}", f"--config.model.knobs.norm={norm}", "--config.study=bn_ablation"]
  return {"argv": ["python", "-m", "experiments.train", "--config", "experiments/configs/default.py:quick",
                   "--workdir", str(run), *overrides], "cwd": "/repo",
          "config": "experiments/configs/default.py:quick", "overrides": overrides}


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
  """Three directories: a bn_ablation folder of 6 runs (2 seeds x 3 norms, lambda_max tracked in
  training, post-hoc curvature on the seed-0 runs with and without BatchNorm), an edge_of_stability
  folder (full-batch GD at two step sizes) and a damaged copy of one run (no summary.json, a
  half-written metrics line, unreadable meta.json, a truncated curvature .npz)."""
  from experiments import measure

  root = tmp_path_factory.mktemp("studies")
  bn = root / "bn"
  for norm in NORMS:
    for seed in SEEDS:
      c = tiny_config(**{"study": "bn_ablation", "seed": seed, "model.knobs.norm": norm})
      run = bn / f"norm={norm}-seed={seed}"
      training.train_and_evaluate(c, run, evaluators=[LAMBDA], launch=launch_of(run, seed, norm))
      if seed == 0 and norm in ("batch", "none"):
        measure.measure_operator(run, what=["lambda_max", "trace", "density"], num_examples=48, chunk_size=48,
                                 num_probes=3, num_steps=12)
  eos = root / "eos"
  for lr in (0.5, 2.0):
    c = tiny_config(**{"study": "edge_of_stability", "optimizer.name": "sgd", "schedule.lr": lr,
                       "training.full_batch": True, "training.num_steps": 16})
    training.train_and_evaluate(c, eos / f"lr={lr}", evaluators=[LAMBDA])
  broken = root / "broken"
  shutil.copytree(bn / "norm=none-seed=0", broken)
  (broken / "summary.json").unlink()
  npz = next((broken / "curvature").glob("*.npz"))
  npz.write_bytes(npz.read_bytes()[:200])  # a truncated spectrum file
  with open(broken / "metrics.jsonl", "a") as f:
    f.write('{"step": 13, "train/loss": 0.5, "train/acc')  # a write cut off mid-line
  (broken / "meta.json").write_text("{not json")
  return {"bn": bn, "eos": eos, "broken": broken}


def _summary(run_dir: Path) -> dict:
  return json.loads((run_dir / "summary.json").read_text())


def test_loader_table_matches_the_run_files(studies):
  study = runs.load(studies["bn"])
  assert len(study.runs) == 6 and study.study == "bn_ablation" and not study.problems
  assert set(study.override_keys) == {"seed", "model.knobs.norm"} and study.group_keys == ["model.knobs.norm"]
  table = runs.runs_table(study)
  for _, row in table.iterrows():
    run_dir = Path(row["path"])
    final = _summary(run_dir)["final"]
    config = json.loads((run_dir / "config.json").read_text())
    assert row["test/accuracy"] == final["test/accuracy"] and row["gap/loss"] == final["gap/loss"]
    assert row["model.knobs.norm"] == config["model"]["knobs"]["norm"] and row["seed"] == config["seed"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert row["curv/lambda_max"] == [r for r in records if "curv/lambda_max" in r][-1]["curv/lambda_max"]
    if (run_dir / "curvature").is_dir():  # post-hoc trace from the curvature file
      rec = json.loads(next((run_dir / "curvature").glob("*.json")).read_text())
      assert row["curv/trace"] == rec["results"]["trace_hutchinson"]["estimate"]
  hist = runs.history(study)
  one = hist[(hist.run == table.run[0]) & (hist.metric == "train/loss")]
  assert one.step.tolist() == [3, 6, 9, 12]


def test_lambda_max_tracked_in_training_is_the_dense_top_eigenvalue(studies):
  """The Lanczos lambda_max of the post-hoc measurement agrees with the dense one logged at the end."""
  for run in runs.load(studies["bn"]).runs:
    if run.curvature:
      lanczos = run.curvature[0]["results"]["spectrum"]["lambda_max"]
      assert lanczos == pytest.approx(run.curve("curv/lambda_max")[1][-1], rel=2e-3)


def test_sweep_index_gives_the_overrides(studies, tmp_path):
  sweep = tmp_path / "sweep"
  trials = []
  for i, norm in enumerate(("batch", "none")):
    name = f"{i:03d}-norm={norm}"
    shutil.copytree(studies["bn"] / f"norm={norm}-seed=0", sweep / name)
    trials.append({"index": i, "name": name, "overrides": {"model.knobs.norm": norm}, "status": "done"})
  trials.append({"index": 2, "name": "002-norm=layer", "overrides": {"model.knobs.norm": "layer"},
                 "status": "pending"})
  (sweep / "sweep.json").write_text(json.dumps({"config": "experiments/configs/x.py", "study": "bn_ablation",
                                                "common_overrides": {}, "trials": trials}))
  study = runs.load(sweep)
  assert [r.name for r in study.runs] == ["000-norm=batch", "001-norm=none"]
  assert study.override_keys == ["model.knobs.norm"]
  assert [p.run for p in study.problems] == ["002-norm=layer"]


def test_seed_aggregation_matches_numpy(studies):
  table = runs.runs_table(runs.load(studies["bn"]))
  agg = stats.aggregate(table, ["model.knobs.norm"], ["test/accuracy", "curv/lambda_max"])
  for norm in NORMS:
    for metric in ("test/accuracy", "curv/lambda_max"):
      x = table.loc[table["model.knobs.norm"] == norm, metric].to_numpy()
      row = agg[(agg["model.knobs.norm"] == norm) & (agg.metric == metric)].iloc[0]
      assert row["n"] == 2 and row["mean"] == pytest.approx(np.mean(x), rel=1e-12)
      assert row["std"] == pytest.approx(np.std(x, ddof=1), rel=1e-12)
      # Student's t interval with n - 1 = 1 degree of freedom: mean +- 12.706 * std / sqrt(2).
      half = scipy.stats.t.ppf(0.975, 1) * np.std(x, ddof=1) / np.sqrt(2)
      assert row["ci_low"] == pytest.approx(np.mean(x) - half, rel=1e-9)
      assert row["ci_high"] == pytest.approx(np.mean(x) + half, rel=1e-9)


def test_kendall_tau_leaves_out_missing_pairs():
  tau, _, n = stats.kendall_tau([1, 2, 3, 4, np.nan], [2, 4, 6, 8, 1])
  assert tau == pytest.approx(1.0) and n == 4


def _labels(fig):
  axes = fig.get_axes()
  return [(a.get_xlabel(), a.get_ylabel()) for a in axes], axes


def _png_ok(path: Path):
  png = path.with_suffix(".png")
  assert png.exists() and png.stat().st_size > 5000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert path.with_suffix(".pdf").stat().st_size > 1000


def test_every_plot_writes_an_image_with_labelled_axes(studies, tmp_path):
  study = runs.load(studies["bn"])
  groups = {}
  for r in study.runs:
    groups.setdefault(r.flat_config["model.knobs.norm"], []).append(r)
  table = runs.runs_table(study)
  grid = np.linspace(-1, 1, 21)
  xx, yy = np.meshgrid(grid, grid)
  land = 0.3 + xx ** 2 + 3 * yy ** 2
  rec = next(r for r in study.runs if r.curvature).curvature[0]
  z = np.load(rec["arrays"])
  cases = {
      "curves": (lambda p: plots.training_curves(groups, path=p), [("training step", "loss (nats)"),
                                                                    ("training step", "accuracy (%)")]),
      "lmax": (lambda p: plots.lambda_max_curves(
          {k: rs[0].curve("curv/lambda_max") for k, rs in groups.items()}, {"batch": 20.0}, path=p),
               [("training step", "top Hessian eigenvalue $\\lambda_{\\max}$")]),
      "density": (lambda p: plots.spectral_density({"hessian": (z["slq_nodes"], z["slq_weights"])}, path=p),
                  [("Hessian eigenvalue", "spectral density (log scale)")]),
      "line": (lambda p: plots.loss_curve_1d(grid, {"train": land[10], "test": land[10] + 0.1}, path=p),
               [("step along the direction α", "loss (nats)")]),
      "contour": (lambda p: plots.loss_contour_2d(grid, grid, land, path=p),
                  [("direction 1, α", "direction 2, β"), ("", "loss (nats)")]),
      "surface": (lambda p: plots.loss_surface_3d(grid, grid, land, path=p), [("α", "β")]),
      "interp": (lambda p: plots.interpolation_curves(grid, {"train": land[10]}, path=p),
                 [("interpolation coefficient α (0: θ_A, 1: θ_B)", "loss (nats)")]),
      "scatter": (lambda p: plots.measure_vs_gap(table["curv/lambda_max"], table["gap/loss"],
                                                 measure_name="λ_max", path=p),
                  [("λ_max", "generalization gap, loss (nats)")]),
      "bars": (lambda p: plots.ablation_bars(table, "model.knobs.norm", ["test/accuracy", "curv/lambda_max"],
                                             path=p),
               [("norm", "test accuracy (%)"), ("norm", "top Hessian eigenvalue $\\lambda_{\\max}$")]),
      "classes": (lambda p: plots.per_class_accuracy(
          ["a", "b", "c"], {"x": np.array([[0.5, 0.7, 0.9], [0.6, 0.8, 1.0]])}, path=p),
                  [("class", "accuracy (%)")]),
      "compression": (lambda p: plots.compression_curves(np.array([0.0, 0.5, 0.9]), {"x": [0.9, 0.85, 0.4]},
                                                         {"x": 0.9}, path=p),
                      [("compression level (fraction of weights removed)", "accuracy drop (points)")]),
      "panels": (lambda p: plots.scatter_panels(
          [{"x": np.array([1.0, 2.0, 4.0]), "y": np.array([3.0, 2.0, 1.0]), "xlabel": "η/B",
            "ylabel": "λ_max", "logx": True},
           {"x": np.array([0.5, 1.0, 2.0]), "y": np.array([3.0, 2.0, 1.0]), "xlabel": "2/η",
            "ylabel": "λ_max", "reference": (np.array([0.5, 2.0]), np.array([0.5, 2.0]), "λ_max = 2/η")}],
          groups=["a", "b", "a"], path=p),
                 [("η/B", "λ_max"), ("2/η", "λ_max")]),
      "ranked": (lambda p: plots.ranked_values({"x": np.array([1.0, 50.0, 3.0]), "y": np.array([2.0, 1.0])},
                                               path=p),
                 [("rank (1 = largest)", "Hessian eigenvalue")]),
  }
  for name, (draw, expected) in cases.items():
    fig = draw(tmp_path / name)
    assert isinstance(fig, matplotlib.figure.Figure), name
    labels, axes = _labels(fig)
    assert labels == expected, name
    _png_ok(tmp_path / name)
  assert cases["surface"][0](None).get_axes()[0].get_zlabel() == "loss (nats)"
  ranked = plots.ranked_values({"x": np.array([1.0, 50.0, 3.0])}).get_axes()[0]
  assert list(ranked.lines[0].get_ydata()) == [50.0, 3.0, 1.0] and ranked.get_yscale() == "log"
  tau, _, _ = stats.kendall_tau(table["curv/lambda_max"], table["gap/loss"])
  scatter = plots.measure_vs_gap(table["curv/lambda_max"], table["gap/loss"], measure_name="λ_max")
  assert scatter.get_axes()[0].get_title(loc="left").startswith(f"Kendall τ = {tau:.2f} (n = 6")


def test_stability_thresholds():
  assert plots.stability_threshold("sgd", 0.1) == pytest.approx(20.0)
  assert plots.stability_threshold("momentum", 0.1, momentum=0.9) == pytest.approx(38.0)
  assert plots.stability_threshold("adam", 0.1, b1=0.9) == pytest.approx(380.0)
  assert plots.threshold_name("momentum") == "3.8/η" and plots.threshold_name("adam") == "38/η"


def test_latex_tables_are_balanced_and_escaped(studies):
  table = runs.runs_table(runs.load(studies["bn"]))
  table["model.knobs.norm"] = table["model.knobs.norm"].map(lambda n: f"{n}_50% & #1")
  t = tables.mean_std_table(table, ["model.knobs.norm"], ["test/accuracy", "gap/loss", "curv/lambda_max"],
                            caption="Accuracy in % of $ & {braces}")
  tex = tables.latex(t, label="tab:x")
  body = re.sub(r"\\[{}%&$#_]", "", tex)  # escaped characters are not structure
  assert body.count("{") == body.count("}")
  assert tex.count(r"\begin{") == tex.count(r"\end{") == 2
  assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
  for raw in ("_50%", " & #1", "% of $"):
    assert raw not in tex
  assert r"batch\_50\% \& \#1" in tex and r"\{braces\}" in tex
  rows = [line for line in tex.splitlines() if line.endswith(r"\\")]
  assert len(rows) == 4 and all(line.count(" & ") == 4 for line in rows)  # header + 3 conditions, 5 columns
  # the best test accuracy (highest mean) is bold, and is the highest
  accs = {n: table.loc[table["model.knobs.norm"] == n, "test/accuracy"].mean()
          for n in table["model.knobs.norm"].unique()}
  best = max(accs, key=accs.get)
  row = next(line for line in rows if line.startswith(tables.escape_latex(best)))
  assert row.split(" & ")[2].startswith(r"\textbf{")
  md = tables.markdown(t)
  assert md.count("**") >= 2 and len(md.splitlines()[0].split("|")) == 7


def _report_checks(written: report.Written):
  md = written.markdown.read_text()
  html = written.html.read_text()
  figs = written.report.figures()
  assert figs
  for f in figs:
    assert f.path.exists() and f.path.stat().st_size > 5000 and f.path.with_suffix(".pdf").exists()
    rel = f.path.relative_to(written.markdown.parent).as_posix()
    assert f"![Figure {f.number}]({rel})" in md and f"Figure {f.number}. {f.caption}" in md
  linked = re.findall(r"!\[Figure \d+\]\(([^)]+)\)", md)
  assert len(linked) == len(figs) and all((written.markdown.parent / p).exists() for p in linked)
  assert html.count("data:image/png;base64,") == len(figs) and "<img" in html and 'src="figures/' not in html
  for section in ("Setup", "Results", "Findings", "Comparison with the published result", "Limitations",
                  "Reproduce", "Missing or unreadable"):
    assert f"\n## {section}\n" in md
  for f in written.report.findings:
    assert f.text in md
  return md


def test_bn_ablation_report_states_the_numbers_of_the_runs(studies, tmp_path):
  written = report.write_report(studies["bn"], tmp_path / "out")
  assert written.report.template == "bn_ablation"
  md = _report_checks(written)
  names = {f.name for f in written.report.figures()}
  assert {"training_curves", "lambda_max", "spectral_density", "ablation", "per_class_accuracy"} <= names
  # Independent numbers: read every run's files directly.
  by_norm = {}
  for d in sorted(studies["bn"].iterdir()):
    cfg = json.loads((d / "config.json").read_text())
    recs = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    by_norm.setdefault(cfg["model"]["knobs"]["norm"], []).append(
        {"test/accuracy": _summary(d)["final"]["test/accuracy"],
         "curv/lambda_max": [r["curv/lambda_max"] for r in recs if "curv/lambda_max" in r][-1]})
  checked = 0
  for f in written.report.findings:
    v = f.values
    if v.get("metric") == "curv/lambda_max":
      x = [r["curv/lambda_max"] for r in by_norm[v["norm"]]]
      y = [r["curv/lambda_max"] for r in by_norm["batch"]]
      a, b = scipy.stats.gmean(x), scipy.stats.gmean(y)  # ratio of geometric means, Welch on the logs
      assert v["ratio"] == pytest.approx(a / b, rel=1e-12) and v["n"] == 2
      ci = scipy.stats.ttest_ind(np.log(x), np.log(y), equal_var=False).confidence_interval(0.95)
      assert v["ci"] == pytest.approx((np.exp(ci.low), np.exp(ci.high)), rel=1e-9)
      assert v["interval"]["method"] == "welch-log" and v["interval"]["n"] == [2, 2]
      assert f"{a / b:.2f}x" in f.text and "2 vs 2 seeds" in f.text and "95% Welch interval" in f.text
      if v["norm"] == "none":  # the comparison's verdict follows the interval, not the point estimate
        lo, hi = np.exp(ci.low), np.exp(ci.high)
        said = ("shows it" if lo > 1 else "contradicts it" if hi < 1 else "is inconclusive with 2 vs 2 seeds")
        line = re.search(r"λ_max at the end without / with BatchNorm = [0-9.]+x; [^\n]*", md).group(0)
        assert said in line
      checked += 1
    if v.get("metric") == "test/accuracy":  # with BatchNorm minus without
      x = [r["test/accuracy"] for r in by_norm["batch"]]
      y = [r["test/accuracy"] for r in by_norm[v["norm"]]]
      a, b = np.mean(x), np.mean(y)
      assert v["difference"] == pytest.approx(a - b, abs=1e-12)
      res = scipy.stats.ttest_ind(x, y, equal_var=False)
      assert v["interval"]["p_value"] == pytest.approx(res.pvalue, rel=1e-9)
      assert f"{100 * (a - b):+.2f} points" in f.text and f"{100 * a:.2f}%" in f.text
      checked += 1
  assert checked == 4  # lambda_max ratio and accuracy difference, for none and layer
  assert "Santurkar" in md and "Ghorbani" in md
  reproduce = md.split("## Reproduce")[1].split("## Missing or unreadable")[0]
  for d in sorted(studies["bn"].iterdir()):
    assert shlex.join(json.loads((d / "meta.json").read_text())["launch"]["argv"]) in reproduce
  assert "python -m experiments.measure --workdir" in reproduce and "--num_examples=48" in reproduce
  tex = (tmp_path / "out" / "tables" / "summary.tex").read_text()
  assert tex.startswith(r"\begin{table}")


def test_reproduce_shows_recorded_commands_only(studies, tmp_path):
  """Runs without a launch record (the edge-of-stability runs) are said to be unrecorded, never guessed."""
  written = report.write_report(studies["eos"], tmp_path / "out")
  md = written.markdown.read_text()
  reproduce = md.split("## Reproduce")[1].split("## Missing or unreadable")[0]
  assert "experiments.train" not in reproduce and "the training command is not recorded" in reproduce
  missing = md.split("## Missing or unreadable")[1]
  assert "`launch` missing: the command that trained the run is not recorded" in missing


def test_measure_command_reproduces_the_record(studies, tmp_path):
  """The report's `experiments.measure` command for a post-hoc record, run on a copy of the run, gives
  the same settings (SLQ probes and steps, tolerance, examples) and the same lambda_max, trace and
  density nodes."""
  from experiments import measure

  source = studies["bn"] / "norm=batch-seed=0"
  run_dir = tmp_path / "copy"
  shutil.copytree(source, run_dir)
  old = json.loads(next((source / "curvature").glob("*_hessian_train.json")).read_text())
  md = report.write_report(source, tmp_path / "out").markdown.read_text()
  cmd = next(line for line in md.splitlines() if line.startswith("python -m experiments.measure"))
  assert shlex.split(cmd) == old["launch"]["argv"]
  argv = [str(run_dir) if a == str(source) else a.replace(f"={source}", f"={run_dir}")
          for a in shlex.split(cmd)[3:]]  # after "python -m experiments.measure"
  before = {p.name: p.read_bytes() for p in (run_dir / "curvature").iterdir()}
  assert measure.main(argv) == 0
  written = sorted(set(p.name for p in (run_dir / "curvature").iterdir()) - set(before))
  assert [Path(n).suffix for n in written] == [".json", ".npz"]  # beside the old, not over it
  assert all((run_dir / "curvature" / n).read_bytes() == b for n, b in before.items())
  new = json.loads((run_dir / "curvature" / written[0]).read_text())
  assert new["operator"] == old["operator"]
  for key in ("num_probes", "num_steps", "num_products"):
    assert new["results"]["density"][key] == old["results"]["density"][key]
  assert new["results"]["top"]["tol"] == old["results"]["top"]["tol"]
  np.testing.assert_allclose(new["results"]["spectrum"]["lambda_max"],
                             old["results"]["spectrum"]["lambda_max"], rtol=1e-5)
  np.testing.assert_allclose(new["results"]["trace_hutchinson"]["estimate"],
                             old["results"]["trace_hutchinson"]["estimate"], rtol=1e-5)
  old_npz = next((source / "curvature").glob("*_hessian_train.npz"))
  with np.load(run_dir / "curvature" / written[1]) as f_new, np.load(old_npz) as f_old:
    np.testing.assert_allclose(f_new["slq_nodes"], f_old["slq_nodes"], rtol=1e-4, atol=1e-6)


def test_edge_of_stability_report(studies, tmp_path):
  written = report.write_report(studies["eos"], tmp_path / "out")
  assert written.report.template == "edge_of_stability"
  md = _report_checks(written)
  assert "Cohen et al." in md and "2/η" in md
  for f in written.report.findings:
    if "end ratio mean" not in f.values:
      continue
    lr = float(f.values["condition"].split("=")[1])
    recs = [json.loads(line) for line in
            (studies["eos"] / f"lr={lr}" / "metrics.jsonl").read_text().splitlines()]
    last = [r["curv/lambda_max"] for r in recs if "curv/lambda_max" in r][-1]
    assert f.values["threshold"] == pytest.approx(2 / lr)
    assert f.values["end ratio mean"] == pytest.approx(last * lr / 2, rel=1e-12)


def npz_name(run_dir: Path) -> str:
  return next((run_dir / "curvature").glob("*.npz")).name


def test_damaged_run_still_gets_a_report_naming_what_is_missing(studies, tmp_path):
  written = report.write_report(studies["broken"], tmp_path / "out")
  assert written.report.template == "generic"
  md = _report_checks(written)
  missing = md.split("## Missing or unreadable")[1]
  assert "summary.json`: missing" in missing
  lines = (studies["broken"] / "metrics.jsonl").read_text().splitlines()
  assert f"metrics.jsonl`: last line (line {len(lines)}) is half-written; skipped" in missing
  assert "meta.json`: unreadable" in missing
  assert f"`curvature/{npz_name(studies['broken'])}`: unreadable" in missing
  assert "spectral_density" not in {f.name for f in written.report.figures()}
  # the final metrics come from the last evaluation record instead
  recs = [json.loads(line) for line in (studies["broken"] / "metrics.jsonl").read_text().splitlines()[:-1]]
  acc = [r["test/accuracy"] for r in recs if "test/accuracy" in r][-1]
  assert f"test accuracy {100 * acc:.2f}%" in md


def test_unknown_study_and_empty_dir(studies, tmp_path):
  run = tmp_path / "r"
  shutil.copytree(studies["bn"] / "norm=none-seed=0", run)
  cfg = json.loads((run / "config.json").read_text())
  cfg["study"] = "no_such_study"
  (run / "config.json").write_text(json.dumps(cfg))
  written = report.write_report(run, tmp_path / "out")
  assert written.report.template == "generic" and "No report template for study `no_such_study`" in \
      written.markdown.read_text()
  empty = tmp_path / "empty"
  empty.mkdir()
  written = report.write_report(empty, tmp_path / "out2")
  assert "no run directory found" in written.markdown.read_text()
  assert report.main([str(tmp_path / "nope")]) == 2


def _write_run(d: Path, config: dict, summary: dict, metrics: list[dict]) -> None:
  """A run directory in the format of research/core/rundir (config, meta, summary, metrics)."""
  d.mkdir(parents=True)
  (d / "config.json").write_text(json.dumps(config))
  (d / "meta.json").write_text(json.dumps({"status": summary["status"], "seed": config["seed"]}))
  if summary["status"] == "done":
    (d / "summary.json").write_text(json.dumps(summary))
  (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))


def test_lr_batch_ratio_report_fits_the_exponents_of_the_runs(tmp_path):
  """A code-written lr x batch sweep whose final lambda_max is exactly 3 eta^-1 B^0.5 (the curvature
  schedule zipped with the batch size, one run still running): the template's fit recovers the exponents,
  its Kendall tau is scipy's over the finished runs, the labels leave out the curvature schedule."""
  import scipy.stats

  root = tmp_path / "sweep"
  trials, rows = [], []
  for i, (lr, b) in enumerate([(lr, b) for lr in (0.025, 0.05, 0.1) for b in (32, 64, 128)] + [(0.2, 32)]):
    lam = 3.0 / lr * b ** 0.5 if i < 9 else 1e4
    acc = 0.8 + 10 * lr / b
    name = f"{i:03d}-lr={lr}-batch_size={b}"
    over = {"schedule.lr": lr, "training.batch_size": b, "curvature.every_steps": 20480 // b}
    cfg = {"study": "lr_batch_ratio", "seed": 0, "schedule": {"lr": lr}, "training": {"batch_size": b},
           "curvature": {"every_steps": 20480 // b}, "optimizer": {"name": "sgd"}}
    final = {"test/accuracy": acc, "gap/accuracy": 0.05, "gap/loss": 0.1}
    status = "done" if i < 9 else "running"
    _write_run(root / name, cfg, {"status": status, "final": final, "batch_size": b, "total_steps": 640},
               [{"step": 0, "curv/lambda_max": 2 * lam}, {"step": 640, "curv/lambda_max": lam} | final])
    trials.append({"index": i, "name": name, "overrides": over, "status": status})
    if i < 9:
      rows.append((lr / b, lam, acc))
  (root / "sweep.json").write_text(json.dumps({"study": "lr_batch_ratio", "common_overrides": {},
                                               "trials": trials}))
  study = runs.load(root)
  assert study.label_keys == ["schedule.lr", "training.batch_size"]
  assert "curvature.every_steps" in study.group_keys
  written = report.write_report(root, tmp_path / "out")
  assert written.report.template == "lr_batch_ratio"
  found = {}
  for f in written.report.findings:
    found.setdefault(f.values.get("metric") or ("fit" if "fit" in f.values else f.text[:12]), f)
  ratio, lam, acc = map(np.asarray, zip(*rows))
  tau = scipy.stats.kendalltau(ratio, lam).statistic
  v = found["curv/lambda_max"].values
  assert v["n"] == 9 and v["tau"] == pytest.approx(tau, abs=1e-12)
  assert f"{tau:.2f}" in found["curv/lambda_max"].text
  assert v["max"] == pytest.approx(lam.max(), rel=1e-12)  # the running run's 1e4 is left out
  fit = found["fit"].values["fit"]
  assert fit["b"] == pytest.approx(-1.0, abs=1e-9) and fit["c"] == pytest.approx(0.5, abs=1e-9)
  assert fit["se sum"] < 1e-6 and "η^-1.00 B^0.50" in found["fit"].text
  frac = lam * np.repeat([0.025, 0.05, 0.1], 3) / 2  # lambda_max / (2 / eta)
  bound = next(f for f in written.report.findings if "frac min" in f.values).values
  assert bound["frac min"] == pytest.approx(frac.min()) and bound["frac max"] == pytest.approx(frac.max())
  md = written.markdown.read_text()
  assert "every_steps=" not in md.split("## Results")[1].split("## Findings")[0]  # labels without it
  assert "lambda_vs_ratio" in {f.name for f in written.report.figures()}


def test_top_k_gap_counts_the_eigenvalues_above_the_largest_ratio():
  from analysis.studies import hessian_spectrum

  assert hessian_spectrum.largest_gap([0.9, 10.0, 8.0, 9.0, 1.0, 0.8]) == 3  # 8 / 1 is the largest ratio
  assert hessian_spectrum.largest_gap([5.0, 4.0, -1.0, 0.5]) == 2  # non-positive values are left out
  assert hessian_spectrum.largest_gap([3.0, 2.0]) is None


def test_figure_names_keep_their_tails(tmp_path):
  """Metric names with dots (sharp/x@alpha=0.1 and @alpha=0.5) give distinct figure files."""
  from analysis.results import Context

  ctx = Context(runs.Study(tmp_path, [], None, [], []), None, tmp_path, [])

  def draw(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".png").write_bytes(b"png")

  a = ctx.figure("gap_vs_sharp/x@alpha=0.1", draw, "a")
  b = ctx.figure("gap_vs_sharp/x@alpha=0.5", draw, "b")
  assert a.path != b.path and a.path.exists() and b.path.exists()


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_report_never_executes_a_file_the_run_names(studies, tmp_path, where):
  """A run whose config.json names a Python file as its study (a `../` or absolute path): the report runs
  nothing (the file would write a marker), exits 0 and names the study as unknown."""
  import subprocess
  import sys

  marker = tmp_path / "marker"
  evil = tmp_path / "evil.py"
  evil.write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
                  "def get_config(arg=None):\n  pass\n")
  run = tmp_path / "a" / "b" / "run"
  shutil.copytree(studies["bn"] / "norm=none-seed=0", run)
  study = "../../evil" if where == "relative" else str(evil.with_suffix(""))
  config = json.loads((run / "config.json").read_text()) | {"study": study}
  (run / "config.json").write_text(json.dumps(config))
  root = Path(report.__file__).resolve().parents[1]
  result = subprocess.run([sys.executable, "-m", "analysis.report", str(run), "--out", str(tmp_path / "out")],
                          cwd=root, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert not marker.exists()
  md = (tmp_path / "out" / "report.md").read_text()
  assert f"No report template for study `{study}`" in md


def test_missing_and_mistyped_fields_are_reported_not_fatal(studies, tmp_path):
  """summary.json without total_steps, a run without meta.json, a metric that is a string: the report is
  written and names each in Missing or unreadable."""
  root = tmp_path / "runs"
  for name in ("a", "b", "c"):
    shutil.copytree(studies["bn"] / "norm=batch-seed=0", root / name)
  summary = json.loads((root / "a" / "summary.json").read_text())
  del summary["total_steps"]
  (root / "a" / "summary.json").write_text(json.dumps(summary))
  (root / "b" / "meta.json").unlink()
  lines = (root / "c" / "metrics.jsonl").read_text().splitlines()
  i = next(i for i, line in enumerate(lines) if "/loss" in line)
  first = json.loads(lines[i])
  loss = next(k for k in first if k.endswith("/loss"))
  lines[i] = json.dumps(first | {loss: "abc"})
  (root / "c" / "metrics.jsonl").write_text("\n".join(lines) + "\n")
  summary_c = json.loads((root / "c" / "summary.json").read_text())
  summary_c["final"]["test/accuracy"] = "high"
  summary_c["total_steps"] = "twelve"
  (root / "c" / "summary.json").write_text(json.dumps(summary_c))
  assert report.main([str(root), "--out", str(tmp_path / "out")]) == 0
  md = (tmp_path / "out" / "report.md").read_text()
  missing = md.split("## Missing or unreadable")[1]
  assert "`a`: `summary.json`: `total_steps` missing" in missing
  assert "`b`: `meta.json`: missing" in missing
  assert f"`c`: `metrics.jsonl`: `{loss}` unreadable (the string 'abc' at step {first['step']}" in missing
  assert "`c`: `summary.json`: `test/accuracy` unreadable (the string 'high'" in missing
  assert "`c`: `summary.json`: `total_steps` unreadable (str 'twelve', expected a number)" in missing
  assert "# b: not recorded (meta.json missing or unreadable)" in md.split("## Reproduce")[1]


@pytest.mark.parametrize("flat, expected", [
    ({"model.name": "simple_cnn"}, False),  # the family's default: no normalization
    ({"model.name": "mlp", "model.knobs.norm": "layer"}, False),
    ({"model.name": "simple_cnn", "model.knobs.norm": "batch"}, True),
    ({"model.name": "resnet56"}, True),  # the ResNets and VGGs default to BatchNorm
    ({"model.name": "vgg11", "model.knobs.norm": "none"}, False),
    ({"model.name": "wide_resnet"}, True),
])
def test_one_rule_says_whether_a_run_has_batchnorm(flat, expected):
  run = runs.Run(Path("r"), "r", {}, flat, None, None, [], [], [])
  assert run.has_batchnorm is expected


def test_the_batchnorm_rule_agrees_with_every_model_default():
  from research.models import registry
  for name in registry.available():
    default = registry.knobs(name).get("norm", "none")
    run = runs.Run(Path("r"), "r", {}, {"model.name": name}, None, None, [], [], [])
    assert run.has_batchnorm is (default == "batch"), name
