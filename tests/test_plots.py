"""analysis/plots.py, style.py and tables.py on synthetic inputs: what a reviewer checks in a figure
(seed bands, value axes not from 0, category order as given, units of the loss that was trained,
legends with the caller's labels, the landscape centre's name) and in a table (no bold on failed rows).
Numbers are checked against NumPy / SciPy computed here."""

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scipy.stats
from matplotlib.collections import PolyCollection

from analysis import plots, style, tables
from research.core.errors import UserError


@pytest.fixture(autouse=True)
def _close_figures():
  yield
  plt.close("all")


STEPS = np.array([0.0, 100.0, 200.0, 300.0, 400.0])


def _seeds(rng, scale, n=3):
  return [(STEPS, scale * (1 + STEPS / 400) + rng.normal(0, 0.1 * scale, len(STEPS))) for _ in range(n)]


def _bands(ax):
  return [c for c in ax.collections if isinstance(c, PolyCollection)]


def test_seed_curves_draw_mean_band_seeds_and_references():
  rng = np.random.default_rng(0)
  seeds = {"lr=0.1": _seeds(rng, 10.0), "lr=0.05": _seeds(rng, 20.0, n=4)}
  fig = plots.lambda_max_curves(thresholds={"lr=0.1": 20.0, "lr=0.05": 40.0}, seeds=seeds)
  ax = fig.axes[0]
  assert len(_bands(ax)) == 2
  labels = ax.get_legend().get_texts()
  assert [t.get_text() for t in labels][:2] == ["lr=0.1", "lr=0.05"]  # the caller's labels, unchanged
  mean_line = next(line for line in ax.lines if line.get_label() == "lr=0.05")
  values = np.stack([v for _, v in seeds["lr=0.05"]])
  np.testing.assert_allclose(mean_line.get_ydata(), values.mean(axis=0))
  assert mean_line.get_marker() == "o"
  band = _bands(ax)[1].get_paths()[0].vertices[:, 1]  # min-max over seeds by default
  assert band.min() == pytest.approx(values.min()) and band.max() == pytest.approx(values.max())
  # one dashed threshold per condition in its colour, plus 7 thin seed lines
  dashed = [line for line in ax.lines if line.get_linestyle() == "--" and len(line.get_ydata())]
  assert sorted(line.get_ydata()[0] for line in dashed) == [20.0, 40.0]
  assert matplotlib.colors.same_color(dashed[0].get_color(), mean_line.get_color()) or \
      matplotlib.colors.same_color(dashed[1].get_color(), mean_line.get_color())
  assert sum(line.get_linewidth() < 1 for line in ax.lines) == 7
  assert plots.interval_text("minmax") == "min–max over seeds"


def test_seed_curves_styles_colour_by_one_factor_marker_by_the_other():
  rng = np.random.default_rng(2)
  seeds = {f"eta={e}, B={b}": _seeds(rng, 1.0, n=2) for e in (1, 2) for b in (32, 64)}
  styles = {f"eta={e}, B={b}": ((32, 64).index(b), "os"[(1, 2).index(e)]) for e in (1, 2) for b in (32, 64)}
  ax = plots.seed_curves(seeds, styles=styles).axes[0]
  mean = {line.get_label(): line for line in ax.lines if line.get_label() in seeds}
  assert matplotlib.colors.same_color(mean["eta=1, B=32"].get_color(), mean["eta=2, B=32"].get_color())
  assert not matplotlib.colors.same_color(mean["eta=1, B=32"].get_color(), mean["eta=1, B=64"].get_color())
  assert [mean[k].get_marker() for k in ("eta=1, B=64", "eta=2, B=64")] == ["o", "s"]


def test_seed_curves_one_grey_threshold_when_the_conditions_share_it():
  rng = np.random.default_rng(4)
  seeds = {"batch": _seeds(rng, 10.0), "none": _seeds(rng, 20.0)}
  ax = plots.lambda_max_curves(thresholds={"batch": 76.0, "none": 76.0}, seeds=seeds).axes[0]
  dashed = [line for line in ax.lines if line.get_linestyle() == "--" and len(line.get_ydata())]
  assert len(dashed) == 1 and dashed[0].get_ydata()[0] == 76.0
  assert matplotlib.colors.same_color(dashed[0].get_color(), "0.3")
  assert any("every condition" in t.get_text() for t in ax.texts)


def test_seed_curves_t_interval_and_one_seed():
  rng = np.random.default_rng(1)
  seeds = {"a": _seeds(rng, 5.0, n=4), "single": _seeds(rng, 3.0, n=1)}
  fig = plots.seed_curves(seeds, band="t", level=0.9)
  ax = fig.axes[0]
  assert len(_bands(ax)) == 1  # one seed: no band
  v = np.stack([s for _, s in seeds["a"]])
  half = scipy.stats.t.ppf(0.95, 3) * v.std(axis=0, ddof=1) / 2
  y = _bands(ax)[0].get_paths()[0].vertices[:, 1]
  assert y.max() == pytest.approx(float((v.mean(axis=0) + half).max()))
  assert "90% t-interval" in plots.interval_text("t", 0.9)
  with pytest.raises(UserError, match="minmax"):
    plots.seed_curves(seeds, band="bootstrap")


def test_normalized_lambda_curves_keep_the_callers_labels():
  rng = np.random.default_rng(2)
  seeds = {"GD": _seeds(rng, 10.0), "Adam": _seeds(rng, 100.0)}
  thr = {"GD": 20.0, "Adam": 380.0}
  for fig in (plots.lambda_max_curves(thresholds=thr, seeds=seeds, normalized=True),
              plots.lambda_max_curves({k: v[0] for k, v in seeds.items()}, thr, normalized=True)):
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["GD", "Adam", "threshold"]
    note = ax.get_title(loc="left")  # above the axes: it covered curves and tick labels inside them
    assert "GD: 20" in note and "Adam: 380" in note and not ax.texts
  for fig in (plots.lambda_max_curves(thresholds=thr, seeds=seeds, normalized=True, window=(0.9, 1.1)),
              plots.lambda_max_curves({k: v[0] for k, v in seeds.items()}, thr, normalized=True,
                                      window=(0.9, 1.1))):
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == "[0.9, 1.1] × threshold"
    (span,) = [p for p in ax.patches if p.get_label() == "[0.9, 1.1] × threshold"]
    assert (span.get_y(), span.get_y() + span.get_height()) == pytest.approx((0.9, 1.1))


def test_dot_whisker_fits_the_axis_and_keeps_the_order():
  rng = np.random.default_rng(3)
  order = ["wd=1e-3", "wd=0", "wd=1e-4"]  # deliberately not sorted
  groups = {k: 90 + 0.3 * i + 0.1 * rng.standard_normal(5) for i, k in enumerate(order)}
  fig = plots.dot_whisker(groups, intervals={"wd=0": (90.1, 90.5)}, ylabel="test accuracy (%)")
  ax = fig.axes[0]
  assert [t.get_text() for t in ax.get_xticklabels()] == order
  lo, hi = ax.get_ylim()
  assert lo > 85 and hi < 95  # fitted to the data, not from 0
  assert not ax.patches  # no bars
  caps = [line for line in ax.lines if line.get_marker() == "_"]
  assert {round(float(y), 6) for line in caps for y in line.get_ydata()} >= {90.1, 90.5}  # given whiskers
  seeds = [line for line in ax.lines if line.get_marker() == "o"]
  assert sum(len(line.get_ydata()) for line in seeds) == 15


def test_dot_whisker_heavy_tailed_positive_values_on_logs():
  """Seeds spanning more than 10x: geometric mean and the t-interval of the logs on a log axis (a mean and
  t-interval of the values would run below 0)."""
  values = np.array([140.0, 6000.0, 32000.0])
  ax = plots.dot_whisker({"no skip": values}, error="t").axes[0]
  assert ax.get_yscale() == "log"
  mean = next(line for line in ax.lines if line.get_marker() == "D")
  assert mean.get_ydata()[0] == pytest.approx(np.exp(np.log(values).mean()))
  logs = np.log(values)
  half = scipy.stats.t.ppf(0.975, 2) * logs.std(ddof=1) / np.sqrt(3)
  caps = sorted(float(y) for line in ax.lines if line.get_marker() == "_" for y in line.get_ydata())
  np.testing.assert_allclose(caps, np.exp([logs.mean() - half, logs.mean() + half]), rtol=1e-9)
  narrow = plots.dot_whisker({"a": np.array([1.0, 2.0, 3.0])}, error="t").axes[0]
  assert narrow.get_yscale() == "linear"


def test_ablation_dots_order_units_and_no_pooling_of_losses():
  rng = np.random.default_rng(4)
  table = pd.DataFrame({"optimizer.name": ["sgd"] * 3 + ["adam"] * 3 + ["momentum"] * 3,
                        "loss.name": ["mse"] * 9, "test/accuracy": 0.9 + 0.005 * rng.standard_normal(9),
                        "test/loss": 0.1 + 0.01 * rng.random(9)})
  order = ["sgd", "momentum", "adam"]
  fig = plots.ablation_bars(table, "optimizer.name", ["test/accuracy", "test/loss"], order=order, error="ci",
                            loss_name="mse")
  acc, loss = fig.axes[:2]
  assert [t.get_text() for t in acc.get_xticklabels()] == order
  assert acc.get_ylim()[0] > 80 and acc.get_ylabel() == "test accuracy (%)"
  assert style.loss_unit("mse") in loss.get_ylabel() and "nats" not in loss.get_ylabel()
  means = [line.get_ydata()[0] for line in acc.lines if line.get_marker() == "D"]
  np.testing.assert_allclose(means, [100 * table.loc[table["optimizer.name"] == o, "test/accuracy"].mean()
                                     for o in order])
  mixed = table.assign(**{"loss.name": ["mse", "cross_entropy"] * 4 + ["mse"]})
  with pytest.raises(UserError, match="loss.name"):
    plots.ablation_bars(mixed, "optimizer.name", ["test/accuracy"])
  fig = plots.ablation_bars(mixed, ["optimizer.name", "loss.name"], ["test/accuracy"])  # grouped: allowed
  assert "sgd, mse" in [t.get_text() for t in fig.axes[0].get_xticklabels()]


def test_a_condition_without_the_metric_takes_no_slot_and_the_others_keep_their_colours():
  table = pd.DataFrame({"opt": ["a"] * 2 + ["b"] * 2 + ["c"] * 2,
                        "test/accuracy": [0.80, 0.82, 0.70, 0.72, 0.75, 0.77],
                        "curv/lambda_max": [10.0, 12.0, np.nan, np.nan, 20.0, 22.0]})
  fig = plots.ablation_bars(table, "opt", ["test/accuracy", "curv/lambda_max"], error="t")
  acc, lam = fig.axes[:2]
  assert [t.get_text() for t in acc.get_xticklabels()] == ["a", "b", "c"]
  assert [t.get_text() for t in lam.get_xticklabels()] == ["a", "c"]
  colour = lambda ax: [line.get_color() for line in ax.lines if line.get_marker() == "D"]
  assert colour(lam) == [colour(acc)[0], colour(acc)[2]]
  np.testing.assert_allclose([line.get_ydata()[0] for line in lam.lines if line.get_marker() == "D"],
                             [11.0, 21.0])


def test_loss_units_and_optimizer_labels():
  assert style.loss_unit("cross_entropy") == "nats"
  assert "½‖z − y‖²" in style.loss_unit("mse")
  with pytest.raises(UserError, match="cross_entropy"):
    style.loss_unit("hinge")
  assert style.metric_label("test/loss") == "test loss (nats)"
  assert style.metric_label("gap/loss", "mse") == f"generalization gap, loss ({style.loss_unit('mse')})"
  assert style.metric_label("test/accuracy", "mse") == "test accuracy (%)"
  base = {"optimizer.momentum": 0.9, "training.batch_size": 128, "training.full_batch": False,
          "optimizer.sam.rho": 0.0}
  label = lambda name, **more: style.optimizer_label(base | {"optimizer.name": name} | more)
  full = {"training.full_batch": True}
  assert label("sgd", **full) == "GD (full batch)"
  assert label("sgd") == "SGD (batch 128)"
  assert label("momentum") == "SGD-momentum 0.9 (batch 128)"
  assert label("momentum", **full) == "GD-momentum 0.9 (full batch)"
  assert label("adam") == "Adam (batch 128)"
  assert label("momentum", **{"optimizer.sam.rho": 0.05}) == "SGD-momentum 0.9 + SAM ρ=0.05 (batch 128)"
  assert style.optimizer_label({"optimizer.name": "adam"}) == "Adam"  # batch not recorded: not guessed
  assert style.split_label("train", full_batch=True) == "train (full batch)"


def test_loss_axes_take_the_unit_of_the_loss():
  grid = np.linspace(-1, 1, 11)
  land = 0.3 + grid[None, :] ** 2 + grid[:, None] ** 2
  unit = style.loss_unit("mse")
  assert unit in plots.loss_curve_1d(grid, {"train": land[5]}, loss_name="mse").axes[0].get_ylabel()
  assert unit in plots.interpolation_curves(grid, {"train": land[5]}, loss_name="mse").axes[0].get_ylabel()
  assert unit in plots.loss_surface_3d(grid, grid, land, loss_name="mse").axes[0].get_zlabel()
  assert unit in plots.loss_contour_2d(grid, grid, land, loss_name="mse").axes[1].get_ylabel()  # colour bar
  assert unit in plots.measure_vs_gap([1.0, 2.0, 3.0], [0.1, 0.2, 0.25], measure_name="m",
                                      loss_name="mse").axes[0].get_ylabel()


def test_measure_vs_gap_says_when_tau_is_pooled_and_lists_only_drawn_groups():
  lam = np.array([11.0, 13.0, 22.0, 13.0, 27.0, 28.0, np.nan, np.nan])
  gap = np.array([0.41, 0.38, 0.39, 0.15, 0.18, 0.23, 0.12, 0.13])
  groups = ["batch"] * 3 + ["none"] * 3 + ["layer"] * 2  # layer: no lambda_max
  ax = plots.measure_vs_gap(lam, gap, measure_name="λ_max", groups=groups).axes[0]
  tau = scipy.stats.kendalltau(lam[:6], gap[:6])
  title = ax.get_title(loc="left")
  assert title.startswith(f"Kendall τ = {tau.statistic:.2f} (n = 6, pooled over 2 conditions")
  assert [t.get_text() for t in ax.get_legend().get_texts()] == ["batch", "none"]
  one = plots.measure_vs_gap(lam[:3], gap[:3], measure_name="λ_max", groups=groups[:3]).axes[0]
  assert "pooled" not in one.get_title(loc="left")


def test_landscape_centre_is_trained_parameters_unless_at_minimum():
  grid = np.linspace(-1, 1, 11)
  land = 0.3 + grid[None, :] ** 2 + grid[:, None] ** 2
  legend = lambda fig: [t.get_text() for leg in [*fig.legends, *(a.get_legend() for a in fig.axes)]
                        if leg is not None for t in leg.get_texts()]
  assert "trained parameters" in legend(plots.loss_contour_2d(grid, grid, land))
  assert "minimum" in legend(plots.loss_contour_2d(grid, grid, land, at_minimum=True))
  assert "minimum" not in legend(plots.loss_contours({"a": (grid, grid, land)}))
  assert "trained parameters" in legend(plots.loss_contours({"a": (grid, grid, land)}))
  assert "trained parameters" in legend(plots.loss_curve_1d(grid, {"train": land[5]}))


def test_spectral_density_marks_top_k_with_residuals_and_states_resolution():
  rng = np.random.default_rng(5)
  nodes = np.sort(rng.normal(0, 1, (2, 20)), axis=1)
  nodes[:, -1] += 30
  weights = rng.dirichlet(np.ones(20), 2)
  fig = plots.spectral_density({"net": (nodes, weights)}, top={"net": [31.0, 2.5]},
                               residuals={"net": [0.2, 0.4]})
  ax = fig.axes[0]
  assert [t.get_text() for t in ax.get_legend().get_texts()] == ["net", "top Lanczos eigenvalues"]
  tri = next(line for line in ax.lines if line.get_marker() == "^")
  np.testing.assert_allclose(tri.get_xdata(), [31.0, 2.5])
  assert any(len(c.get_segments()) == 2 for c in ax.collections if hasattr(c, "get_segments"))  # whiskers
  text = plots.spectral_density_caption({"net": (nodes, weights)}, top={"net": [31.0, 2.5]},
                                        residuals={"net": [0.2, 0.4]})
  sigma = (nodes.max() - nodes.min()) / 200
  assert "20 Lanczos steps, 2 probe vectors" in text and f"σ = {sigma:.3g}" in text and "top 2" in text
  plain = plots.spectral_density({"net": (nodes, weights)})  # no top-k: density only, label as given
  assert [t.get_text() for t in plain.axes[0].get_legend().get_texts()] == ["net"]
  assert "outlier" not in plots.spectral_density_caption({"net": (nodes, weights)})


def test_training_curves_name_full_batch_and_the_loss_unit():
  class Run:
    def __init__(self, seed):
      self.s = np.array([0.0, 10.0, 20.0])
      self.v = {"train/loss": np.array([2.0, 1.0, 0.5]) + seed, "test/accuracy": np.array([0.3, 0.5, 0.6])}

    def curve(self, metric):
      return (self.s, self.v[metric]) if metric in self.v else (np.zeros(0), np.zeros(0))

  fig = plots.training_curves({"GD": [Run(0), Run(0.1)]}, loss_name="mse", full_batch=True)
  assert style.loss_unit("mse") in fig.axes[0].get_ylabel()
  assert "train (full batch)" in [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
  assert len(_bands(fig.axes[0])) == 1


def test_table_bold_skips_failed_rows_and_needs_two_valid():
  table = pd.DataFrame({"cond": ["a", "a", "b", "b", "c", "c"], "seed": [0, 1] * 3,
                        "status": ["done", "done", "diverged", "done", "done", "done"],
                        "test/accuracy": [0.80, 0.82, 0.99, 0.98, 0.70, 0.71],
                        "test/loss": [0.5, 0.6, 0.1, 0.1, np.nan, np.nan]})
  t = tables.mean_std_table(table, ["cond"], ["test/accuracy", "test/loss"])
  col = t.header.index("test acc. (%)")
  assert [b[col] for b in t.bold] == [True, False, False]  # b has the best mean but a diverged seed
  lcol = t.header.index("test loss")
  assert not any(b[lcol] for b in t.bold)  # one valid finite row left: nothing bold
  t = tables.mean_std_table(table.assign(status="done"), ["cond"], ["test/accuracy"], invalid=["b"])
  assert [b[col] for b in t.bold] == [True, False, False]
  assert "**" not in tables.markdown(t).splitlines()[3]  # row b
  assert tables.best_mask([1.0, np.inf, 3.0], "max", [True, True, False]) == [False, False, False]
  assert tables.best_mask([1.0, 2.0, 3.0], "min") == [True, False, False]
  assert tables.best_mask([1.0, 2.0], None) == [False, False]


def test_per_class_accuracy_is_dots_in_the_given_class_order():
  names = ["shirt", "bag", "coat"]
  acc = np.array([[0.65, 0.97, 0.82], [0.66, 0.96, 0.80]])
  ax = plots.per_class_accuracy(names, {"a": acc, "b": acc - 0.02}).axes[0]
  assert not ax.patches and ax.get_ylim()[0] > 50
  assert [t.get_text() for t in ax.get_xticklabels()] == names
  means = next(line for line in ax.lines if line.get_marker() == "D")
  np.testing.assert_allclose(means.get_ydata(), 100 * acc.mean(axis=0))
  # whiskers: the min-max over seeds, never past 100% (a mean + std of 99% and 100% would be)
  top = plots.per_class_accuracy(["x"], {"a": np.array([[0.99], [1.0]])}).axes[0]
  whisker = next(c for c in top.collections if len(c.get_segments()))
  np.testing.assert_allclose(sorted(whisker.get_segments()[0][:, 1]), [99.0, 100.0])
