"""One figure style for every plot: Okabe-Ito colours, readable fonts, PNG + PDF output.

The palette is Okabe & Ito's (2008, "Color universal design"), distinguishable with the common forms of
colour blindness; yellow comes last because it is faint on white. Line styles cycle too, so lines stay
apart in greyscale print. Axis labels name units: accuracy in percent, loss in the unit of the loss that
was trained (`loss_unit`: nats for cross-entropy; the squared error 1/2 ||z - y||^2 of logits z and one-hot
y for mse, research/core/losses.py). `optimizer_label` names a run's optimizer and batch regime from its
flat config (full-batch GD is never called minibatch SGD).
"""

import contextlib
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; analysis never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from cycler import cycler  # noqa: E402

from research.core.errors import UserError, choices_message  # noqa: E402

OKABE_ITO = {
    "blue": "#0072B2", "vermillion": "#D55E00", "bluish_green": "#009E73", "orange": "#E69F00",
    "reddish_purple": "#CC79A7", "sky_blue": "#56B4E9", "black": "#000000", "yellow": "#F0E442",
}
# Beyond Okabe & Ito's eight: two colours of Paul Tol's "muted" scheme, for sweeps of 9-10 conditions.
PALETTE = list(OKABE_ITO.values()) + ["#882255", "#44AA99"]
LINESTYLES = ["-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 1)), (0, (8, 2))]
WIDTH = 5.5  # inches: one column of a two-column figure at about 10 pt type
HEIGHT = 3.4
DPI = 160

RC = {
    "figure.figsize": (WIDTH, HEIGHT), "figure.dpi": 100, "savefig.dpi": DPI, "savefig.bbox": "tight",
    "savefig.pad_inches": 0.05, "font.size": 9.5, "axes.titlesize": 10, "axes.labelsize": 9.5,
    "xtick.labelsize": 8.5, "ytick.labelsize": 8.5, "legend.fontsize": 8, "legend.frameon": False,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
    "grid.linewidth": 0.6, "lines.linewidth": 1.6, "lines.markersize": 4.5,
    "axes.prop_cycle": cycler(color=PALETTE[:len(LINESTYLES)]) + cycler(linestyle=LINESTYLES),
    "pdf.fonttype": 42, "ps.fonttype": 42, "image.cmap": "viridis", "axes.titlelocation": "left",
}

# Human labels with units for metric names of the run directory.
_SPLITS = {"train": "train (batch)", "eval_train": "train", "valid": "validation", "test": "test"}
_QUANTITIES = {
    "accuracy": "accuracy (%)", "lr": "learning rate", "grad_norm": "gradient norm",
    "param_norm": "parameter norm", "update_norm": "update norm",
    "lambda_max": "top Hessian eigenvalue $\\lambda_{\\max}$", "trace": "Hessian trace",
    "num_outliers": "outlier eigenvalues", "lambda_min": "lowest Hessian eigenvalue $\\lambda_{\\min}$",
    "lambda_ratio": "$|\\lambda_{\\min} / \\lambda_{\\max}|$",
}


def color(i: int) -> str:
  return PALETTE[i % len(PALETTE)]


def linestyle(i: int):
  return LINESTYLES[i % len(LINESTYLES)]


@contextlib.contextmanager
def context():
  """Matplotlib settings of this style for the duration of a `with` block."""
  with plt.rc_context(RC):
    yield


def figure(ncols: int = 1, nrows: int = 1, *, width: float | None = None, height: float | None = None,
           **kwargs):
  """(fig, axes) in this style; the default size is one panel of WIDTH x HEIGHT per column/row."""
  with context():
    w = width or (WIDTH if ncols == 1 else min(3.6 * ncols, 11.0))
    h = height or (HEIGHT if nrows == 1 else 2.8 * nrows)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w, h), layout="constrained", **kwargs)
  return fig, axes


def save(fig, path: str | Path, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
  """Writes `path` with each suffix in `formats` (PNG for reports, PDF for papers); closes the figure.

  Returns the written paths, PNG first.
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  out = []
  with context():
    for fmt in formats:
      p = path.with_suffix(f".{fmt}")
      fig.savefig(p)
      out.append(p)
  plt.close(fig)
  return out


def metric_label(metric: str, loss_name: str = "cross_entropy") -> str:
  """`test/accuracy` -> `test accuracy (%)`; unknown names are returned readable as they are. Losses
  (and loss gaps, rises) carry `loss_unit(loss_name)`."""
  unit = loss_unit(loss_name)
  split, _, quantity = metric.partition("/")
  if not quantity:
    return loss_label(loss_name) if metric == "loss" else _QUANTITIES.get(metric, metric.replace("_", " "))
  if split == "gap":
    return {"accuracy": "generalization gap, accuracy (points)",
            "loss": f"generalization gap, loss ({unit})"}.get(quantity, f"gap {quantity}")
  if split == "land":  # research/landscape/tracking.py: land/<what>_<split>
    what, _, where = quantity.partition("_")
    where = _SPLITS.get(where, where)
    return {"loss": f"landscape centre loss, {where} ({unit})",
            "accuracy": f"landscape centre accuracy, {where}",
            "rise": f"loss rise at ±span, {where} ({unit})",
            "nonconvex": f"non-convex share, {where}",
            "seconds": "landscape scan time (s)"}.get(what, quantity.replace("_", " "))
  if split in ("curv", "sharp"):
    return _QUANTITIES.get(quantity, quantity.replace("_", " "))
  q = loss_label(loss_name) if quantity == "loss" else _QUANTITIES.get(quantity, quantity.replace("_", " "))
  return f"{_SPLITS.get(split, split)} {q}"


LOSS_UNITS = {"cross_entropy": "nats", "mse": "squared error ½‖z − y‖²"}


def loss_unit(loss_name: str = "cross_entropy") -> str:
  """The unit of a loss value for axis labels: `nats` for cross_entropy; for mse the quantity itself,
  1/2 ||z - y||^2 summed over classes (z logits, y one-hot; research/core/losses.py), which has no unit."""
  if loss_name not in LOSS_UNITS:
    raise UserError(choices_message("loss", loss_name, tuple(LOSS_UNITS)))
  return LOSS_UNITS[loss_name]


def loss_label(loss_name: str = "cross_entropy", what: str = "loss") -> str:
  """`loss (nats)` / `loss (squared error ½‖z − y‖²)`: an axis label for a loss value."""
  return f"{what} ({loss_unit(loss_name)})"


_OPTIMIZER_NAMES = {"sgd": "SGD", "momentum": "SGD-momentum", "nesterov": "SGD-Nesterov", "adam": "Adam",
                    "adamw": "AdamW", "rmsprop": "RMSprop", "adagrad": "Adagrad", "lion": "Lion",
                    "lars": "LARS", "lamb": "LAMB"}


def optimizer_label(flat_config: Mapping) -> str:
  """`GD (full batch)`, `SGD (batch 128)`, `SGD-momentum 0.9 (batch 128)`, `Adam (batch 128)`,
  `SGD-momentum 0.9 + SAM ρ=0.05 (batch 128)` from a run's flat config (config.json with dotted keys:
  optimizer.name, optimizer.momentum, optimizer.sam.rho/adaptive, training.full_batch,
  training.batch_size). With `training.full_batch` SGD is `GD` and momentum `GD-momentum`; a key that is
  missing is left out of the label, never guessed."""
  name = flat_config.get("optimizer.name")
  full = bool(flat_config.get("training.full_batch", False))
  text = _OPTIMIZER_NAMES.get(name, str(name)) if name is not None else "optimizer (not recorded)"
  if full and name in ("sgd", "momentum", "nesterov"):
    text = "GD" + text[len("SGD"):]
  momentum = flat_config.get("optimizer.momentum")
  if name in ("momentum", "nesterov", "lars") and momentum is not None:
    text += f" {momentum:g}"
  rho = flat_config.get("optimizer.sam.rho")
  if isinstance(rho, int | float) and rho > 0:
    text += f" + {'ASAM' if flat_config.get('optimizer.sam.adaptive') else 'SAM'} ρ={rho:g}"
  if full:
    return f"{text} (full batch)"
  batch = flat_config.get("training.batch_size")
  return f"{text} (batch {batch})" if batch is not None else text


def split_label(split: str, *, full_batch: bool = False) -> str:
  """Legend name of a metric split: `train` is the running value of the training steps' batches, so
  `train (minibatch)`, or `train (full batch)` for full-batch runs; `eval_train` is the fixed training
  subset evaluated like test."""
  if split == "train":
    return "train (full batch)" if full_batch else "train (minibatch)"
  return {"eval_train": "train (full eval)", "valid": "validation", "test": "test"}.get(split, split)


def capitalized(text: str) -> str:
  """First letter upper-cased only if it is ASCII (`λ_max` stays `λ_max`, not `Λ_max`); the rest as is
  (`str.capitalize` would lower "Hessian")."""
  return text[0].upper() + text[1:] if text[:1].isascii() else text


def plain(label: str) -> str:
  """A figure label as plain text (for captions): mathtext λ_max back to `λ_max`."""
  return label.replace("$\\lambda_{\\max}$", "λ_max")


def scale(metric: str) -> float:
  """Factor for display: accuracies (and accuracy gaps) in percent."""
  return 100.0 if metric.endswith("accuracy") else 1.0
