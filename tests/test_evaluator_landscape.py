"""The end-of-training landscape evaluator and the batch-size study's post-sweep interpolation, against
direct evaluations of the final checkpoints (research.training.load_run) and closed forms."""

import json

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import curvature, landscape, training
from research.core.errors import UserError
from research.evaluators import landscape as tracking

SYNTH = dict(synthetic_train=96, synthetic_test=48, image_shape=(4, 4, 1), num_classes=3, valid_size=0,
             eval_train_size=48)


def tiny_config(**changes):
  return helpers.tiny_config(SYNTH, num_steps=20, eval_every=10, **({"schedule.lr": 0.1} | changes))


def _direct_loss(loss_fn, params, split, n):
  batch = {"image": jnp.asarray(split.images[:n]), "label": jnp.asarray(split.labels[:n])}
  return float(loss_fn(params, batch))


def test_end_of_training_scan_matches_the_final_checkpoint(tmp_path):
  """The grid's centre is the checkpoint's loss on the subset, an off-centre point is the loss at
  params + a d1 + b d2 with the directions redrawn from the recorded seed, and the land/ metrics are
  those of the saved grid."""
  c = tiny_config(**{"landscape.at_end": True, "landscape.kind": "2d", "landscape.num_points": 5,
                     "landscape.span": 0.5, "landscape.num_examples": 40, "landscape.chunk_size": 16,
                     "landscape.seed": 3})
  training.train_and_evaluate(c, tmp_path)
  saved = landscape.ScanResult.load(tmp_path / "landscape" / "step20_2d")
  assert (tmp_path / "landscape" / "step20_2d.json").exists()
  assert [a.tolist() for a in saved.axes] == [[-0.5, -0.25, 0.0, 0.25, 0.5]] * 2
  assert sorted(saved.values) == ["eval_train", "test"]
  assert saved.values["test"]["loss"].shape == (5, 5) and saved.values["test"]["accuracy"].shape == (5, 5)
  assert saved.info["step"] == 20 and saved.info["bn_mode"] == "eval"

  _, ds, graphdef, state, step = training.load_run(tmp_path)
  assert step == 20
  loss_fn, _ = curvature.model_functions(graphdef, state.model_state, preprocess=ds.preprocess)
  dirs = landscape.random_directions(state.params, 3, 2, normalization="filter")
  moved = jax.tree.map(lambda w, d1, d2: w - 0.5 * d1 + 0.25 * d2, state.params, dirs[0].tree, dirs[1].tree)
  for name in ("eval_train", "test"):
    split = getattr(ds, name)
    centre = _direct_loss(loss_fn, state.params, split, 40)
    np.testing.assert_allclose(saved.values[name]["loss"][2, 2], centre, rtol=1e-5)
    np.testing.assert_allclose(saved.values[name]["loss"][0, 3], _direct_loss(loss_fn, moved, split, 40),
                               rtol=1e-5)

  record = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()][-1]
  loss = saved.values["test"]["loss"]
  assert record["land/loss_test"] == pytest.approx(loss[2, 2])
  ends = (loss[0, 2] + loss[4, 2] + loss[2, 0] + loss[2, 4]) / 4
  assert record["land/rise_test"] == pytest.approx(ends - loss[2, 2])
  assert 0.0 <= record["land/nonconvex_test"] <= 1.0
  from analysis import runs

  row = runs.runs_table(runs.load(tmp_path)).iloc[0]
  assert row["land/rise_test"] == pytest.approx(record["land/rise_test"])


def test_nonconvex_fraction_closed_forms():
  """0 for a convex bowl (also tilted and stretched), 1 for a saddle, the share of the concave part of
  a 1-D quartic double well."""
  a = np.linspace(-1.0, 1.0, 21)
  x, y = np.meshgrid(a, a, indexing="ij")
  assert tracking.nonconvex_fraction(3 * x ** 2 + 0.5 * y ** 2 + x * y + x, (a, a)) == 0.0
  assert tracking.nonconvex_fraction(x ** 2 - 2 * y ** 2, (a, a)) == 1.0
  # f = t^4 - t^2: f'' = 12 t^2 - 2 < 0 for |t| < 1/sqrt(6); the second difference adds h^2 (exactly).
  t = np.linspace(-1.0, 1.0, 201)
  h = t[1] - t[0]
  inner = t[1:-1]
  second = 12 * inner ** 2 - 2 + h ** 2
  expected = np.mean(second < -0.01 * np.abs(second).max())
  assert tracking.nonconvex_fraction(t ** 4 - t ** 2, (t,)) == pytest.approx(expected)
  assert 0.3 < expected < 0.45


def test_bad_landscape_settings_are_named():
  c = tiny_config(**{"landscape.at_end": True, "landscape.kind": "3d"})
  with pytest.raises(UserError, match="landscape.kind") as e:
    tracking.build(c)
  assert "1d, 2d" in str(e.value) and "\n" not in str(e.value)
  with pytest.raises(UserError, match="odd"):
    tracking.build(tiny_config(**{"landscape.at_end": True, "landscape.num_points": 4}))
  with pytest.raises(UserError, match="landscape.splits"):
    tracking.build(tiny_config(**{"landscape.at_end": True, "landscape.splits": ("tests",)}))
  assert tracking.build(tiny_config()) is None  # off by default


def test_batch_size_post_sweep_interpolates_small_to_large_batch(tmp_path):
  """The batch_size study's post step pairs the smallest- and largest-batch runs of a seed; the curve's
  endpoints are each run's own loss and accuracy on the same examples (load_run + direct evaluation)."""
  from experiments.configs import batch_size
  from research.sweeps import index as index_lib

  overrides = [{"training.batch_size": 16, "seed": 0}, {"training.batch_size": 48, "seed": 0}]
  common = {"study": "batch_size", "landscape.at_end": True, "landscape.kind": "1d",
            "landscape.num_points": 7}
  index = index_lib.new_index(config="tiny.py", config_path="tiny.py", variant="quick", study="batch_size",
                              common={}, overrides=overrides)
  for trial, o in zip(index["trials"], overrides):
    training.train_and_evaluate(tiny_config(**(common | o)), tmp_path / trial["name"])
  index_lib.write(tmp_path, index)
  small, large = (t["name"] for t in index["trials"])
  assert batch_size.interpolation_pairs(tmp_path) == [(small, large)]
  (npz,) = batch_size.post_sweep(tmp_path, "quick")
  assert npz == tmp_path / "interpolation" / f"{small}__{large}.npz"
  curve = landscape.ScanResult.load(npz)
  ts = curve.axes[0]
  assert ts[0] == -1.0 and ts[-1] == 2.0 and len(ts) == 31
  assert curve.info["bn_mode"] == "eval" and curve.info["batch_size_b"] == 48
  for t, run in ((0.0, small), (1.0, large)):
    _, ds, graphdef, state, _ = training.load_run(tmp_path / run)
    loss_fn, logits_fn = curvature.model_functions(graphdef, state.model_state, preprocess=ds.preprocess)
    i = int(np.flatnonzero(np.isclose(ts, t))[0])
    for name in ("eval_train", "test"):
      split = getattr(ds, name)
      direct = _direct_loss(loss_fn, state.params, split, 48)
      np.testing.assert_allclose(curve.values[name]["loss"][i], direct, rtol=1e-5)
      logits = logits_fn(state.params, {"image": jnp.asarray(split.images[:48])})
      accuracy = float(np.mean(np.argmax(np.asarray(logits), -1) == split.labels[:48]))
      assert curve.values[name]["accuracy"][i] == pytest.approx(accuracy)
  assert curve.info["barriers"]["test"]["loss"]["start"] == pytest.approx(curve.values["test"]["loss"][10])

  # The study's report: its template, the interpolation figures and the rises beyond each end.
  from analysis import report

  written = report.write_report(tmp_path, tmp_path / "report")
  assert written.report.template == "batch_size"
  names = {f.name for f in written.report.figures()}
  assert {"interpolation_loss", "interpolation_accuracy", "landscape_1d"} <= names
  loss = curve.values["eval_train"]["loss"]
  (rises,) = [f.values for f in written.report.findings if f.values.get("split") == "eval_train"]
  assert rises["rise small side"] == pytest.approx(loss[0] - loss[10])
  assert rises["rise large side"] == pytest.approx(loss[-1] - loss[20])
  assert "Keskar" in written.markdown.read_text()


def test_loss_contours_share_one_colour_scale(tmp_path):
  """Two panels, one colour bar spanning both panels' losses, axis labels on the outer axes."""
  from analysis import plots

  grid = np.linspace(-1.0, 1.0, 11)
  xx, yy = np.meshgrid(grid, grid)
  panels = {"flat": (grid, grid, 0.5 + xx ** 2 + yy ** 2),
            "sharp": (grid, grid, 0.5 + 40 * xx ** 2 + yy ** 2)}
  fig = plots.loss_contours(panels, path=tmp_path / "contours")
  a, b, bar = fig.get_axes()
  assert (a.get_xlabel(), a.get_ylabel(), b.get_xlabel(), b.get_ylabel()) == ("α", "β", "α", "")
  assert (a.get_title(), b.get_title()) == ("flat", "sharp")
  assert bar.get_ylabel() == "loss (nats), log scale"  # 0.5 .. 41.5 spans more than 20x
  low, high = bar.get_ylim()
  assert low == pytest.approx(0.5) and high == pytest.approx(41.5)
  assert (tmp_path / "contours.png").stat().st_size > 0 and (tmp_path / "contours.pdf").exists()
