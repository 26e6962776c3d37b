"""Generalization gaps with confidence intervals over examples, overall and per class.

Conventions (the project's metric names): gap/accuracy = train accuracy - test accuracy; gap/loss =
test loss - train loss; per-class gap_c = train accuracy on class c - test accuracy on class c (biased
or imbalanced data can hurt some classes far more than the average shows).

Intervals are normal (Wald) intervals over examples: mean +- z se, se = s / sqrt(n) with s the sample
standard deviation (ddof=1) of the per-example values and z the two-sided normal quantile of
`confidence`; a gap's se is sqrt(se_train^2 + se_test^2) (independent example sets). An interval of a
group with fewer than two examples is NaN. For accuracies near 0 or 1 on few examples the Wald
interval is too narrow: read it as an error bar, not an exact coverage statement.
"""

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from research.backend import xla
from research.core import losses
from research.core import mesh as mesh_lib
from research.core.errors import UserError, choices_message
from research.curvature.trace import to_jsonable
from research.measures.common import as_chunks, check_count


@functools.partial(xla.jit, static_argnums=(0, 1))
def _chunk_values(logits_fn: Callable, loss_name: str, params, chunk):
  z = logits_fn(params, chunk)
  return (losses.per_example_loss(loss_name, z, chunk["label"]),
          (jnp.argmax(z, -1) == chunk["label"]).astype(jnp.float32))


def per_example(logits_fn: Callable, params, data, *, loss_name: str = "cross_entropy") -> dict:
  """{"loss", "correct", "label"}: (n,) host arrays over the real examples of `data`."""
  if loss_name not in losses.LOSSES:
    raise UserError(choices_message("loss", loss_name, losses.LOSSES))
  chunks = as_chunks(data)

  outs = [_chunk_values(logits_fn, loss_name, params, jax.tree.map(lambda x, c=c: x[c], chunks.arrays))
          for c in range(chunks.num_chunks)]
  mask = mesh_lib.to_host(chunks.arrays["mask"]).reshape(-1) > 0
  labels = mesh_lib.to_host(chunks.arrays["label"]).reshape(-1)[mask]
  host = lambda x: mesh_lib.to_host(x).astype(np.float64)  # examples split over processes: gathered
  return {"loss": np.concatenate([host(o[0]) for o in outs])[mask],
          "correct": np.concatenate([host(o[1]) for o in outs])[mask],
          "label": labels.astype(np.int64)}


def _mean_se(x: np.ndarray) -> tuple[float, float]:
  if len(x) == 0:
    return float("nan"), float("nan")
  se = float(np.std(x, ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")
  return float(np.mean(x)), se


@dataclasses.dataclass(frozen=True)
class SplitSummary:
  """Means and standard errors over one split's examples; per-class arrays are (num_classes,)."""
  num_examples: int
  loss: float
  loss_se: float
  accuracy: float
  accuracy_se: float
  class_count: np.ndarray
  class_accuracy: np.ndarray
  class_accuracy_se: np.ndarray


def summarize(values: dict, num_classes: int) -> SplitSummary:
  """Means and standard errors of `per_example` output, overall and per class."""
  num_classes = check_count("num_classes", num_classes)
  if len(values["label"]) and (values["label"].min() < 0 or values["label"].max() >= num_classes):
    raise UserError(f"labels must lie in [0, {num_classes}), got {values['label'].min()}.."
                    f"{values['label'].max()}")
  loss, loss_se = _mean_se(values["loss"])
  acc, acc_se = _mean_se(values["correct"])
  per = [_mean_se(values["correct"][values["label"] == c]) for c in range(num_classes)]
  counts = np.bincount(values["label"], minlength=num_classes)[:num_classes]
  return SplitSummary(len(values["loss"]), loss, loss_se, acc, acc_se, counts,
                      np.array([p[0] for p in per]), np.array([p[1] for p in per]))


@dataclasses.dataclass(frozen=True)
class GapReport:
  """Train and test summaries, the gaps and their confidence intervals ((..., 2) arrays: low, high)."""
  train: SplitSummary
  test: SplitSummary
  confidence: float
  settings: dict

  @property
  def z(self) -> float:
    return float(scipy.stats.norm.ppf(0.5 + self.confidence / 2))

  def _interval(self, value, se):
    value, se = np.asarray(value, np.float64), np.asarray(se, np.float64)
    return np.stack([value - self.z * se, value + self.z * se], -1)

  @property
  def accuracy_gap(self) -> float:
    return self.train.accuracy - self.test.accuracy

  @property
  def loss_gap(self) -> float:
    return self.test.loss - self.train.loss

  @property
  def class_accuracy_gap(self) -> np.ndarray:
    return self.train.class_accuracy - self.test.class_accuracy

  def intervals(self) -> dict:
    """{"accuracy_gap", "loss_gap", "class_accuracy_gap", "train/accuracy", "test/accuracy",
    "train/class_accuracy", "test/class_accuracy", ...}: (low, high) per quantity."""
    t, s = self.train, self.test
    out = {"accuracy_gap": self._interval(self.accuracy_gap, np.hypot(t.accuracy_se, s.accuracy_se)),
           "loss_gap": self._interval(self.loss_gap, np.hypot(t.loss_se, s.loss_se)),
           "class_accuracy_gap": self._interval(self.class_accuracy_gap,
                                                np.hypot(t.class_accuracy_se, s.class_accuracy_se))}
    for name, split in (("train", t), ("test", s)):
      out[f"{name}/accuracy"] = self._interval(split.accuracy, split.accuracy_se)
      out[f"{name}/loss"] = self._interval(split.loss, split.loss_se)
      out[f"{name}/class_accuracy"] = self._interval(split.class_accuracy, split.class_accuracy_se)
    return out

  def metrics(self, train_prefix: str = "eval_train") -> dict:
    """Flat metric names as in metrics.jsonl: `eval_train/accuracy`, `test/class_accuracy` (list),
    `gap/accuracy`, `gap/loss`, `gap/class_accuracy` (list), and `*_ci` intervals."""
    out = {}
    for prefix, split in ((train_prefix, self.train), ("test", self.test)):
      out |= {f"{prefix}/loss": split.loss, f"{prefix}/accuracy": split.accuracy,
              f"{prefix}/class_accuracy": split.class_accuracy}
    out |= {"gap/accuracy": self.accuracy_gap, "gap/loss": self.loss_gap,
            "gap/class_accuracy": self.class_accuracy_gap}
    iv = self.intervals()
    for quantity in ("accuracy", "loss", "class_accuracy"):
      out[f"gap/{quantity}_ci"] = iv[f"{quantity}_gap"]
      out[f"{train_prefix}/{quantity}_ci"] = iv[f"train/{quantity}"]
      out[f"test/{quantity}_ci"] = iv[f"test/{quantity}"]
    return to_jsonable(out)

  def to_dict(self) -> dict:
    return to_jsonable({"train": dataclasses.asdict(self.train), "test": dataclasses.asdict(self.test),
                        "confidence": self.confidence, "settings": self.settings,
                        "intervals": self.intervals()})


def generalization_gap(logits_fn: Callable, params, train, test, *, num_classes: int,
                       loss_name: str = "cross_entropy", confidence: float = 0.95,
                       info: dict | None = None) -> GapReport:
  """Train/test loss and accuracy, overall and per class, their gaps and Wald intervals (module
  docstring). train, test: batch dicts or Chunks (e.g. the eval_train subset and the test split)."""
  if not 0 < confidence < 1:
    raise UserError(f"confidence must be in (0, 1), got {confidence!r}")
  train_v = per_example(logits_fn, params, train, loss_name=loss_name)
  test_v = per_example(logits_fn, params, test, loss_name=loss_name)
  settings = {"loss": loss_name, "num_classes": num_classes, "interval": "wald"} | (info or {})
  return GapReport(summarize(train_v, num_classes), summarize(test_v, num_classes), confidence, settings)
