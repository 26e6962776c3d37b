"""The measures evaluator (research/evaluators/measures.py) on a tiny MLP run: its records equal direct calls
of the library functions on the loaded final checkpoint, its rescaled copies compute the same function,
distance from init is zero when training does not move the weights, bad settings are one-line errors."""

import json

import helpers
import jax
import numpy as np
import pytest

from research import curvature, training
from research.core.errors import UserError
from research.evaluators import measures as tracking
from research.measures import (
  average_sharpness,
  norm_measures,
  output_margin,
  rescale_relu_layers,
  worst_case_sharpness,
)

SYNTH = dict(synthetic_train=96, synthetic_test=48, image_shape=(6, 6, 1), num_classes=3, valid_size=0,
             eval_train_size=48)
NAMES = "worst_case,worst_case_adaptive,average_adaptive,margin,norms,path_norm,lambda_max,num_params"


def _config(**changes):
  base = {"training.num_steps": 20, "measures.at_end": True, "measures.names": NAMES,
          "measures.num_examples": 64, "measures.chunk_size": 40, "measures.steps": 10,
          "measures.average_pairs": 4, "measures.rescale_alphas": "0.1,10",
          "measures.rescale_layers": "hidden.0,head", "measures.lambda_max_tol": 1e-5}
  return helpers.tiny_config(SYNTH, **(base | changes))


def test_records_equal_direct_calls_on_the_final_checkpoint(tmp_path):
  training.train_and_evaluate(_config(), tmp_path)
  last = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()][-1]
  record = json.loads((tmp_path / "measures" / "step20.json").read_text())
  assert record["step"] == 20 and record["settings"]["num_examples"] == 64
  assert [m["measure"] for m in record["measurements"]] == NAMES.split(",")

  _, ds, graphdef, state, step = training.load_run(tmp_path)
  assert step == 20
  loss_fn, logits_fn = curvature.model_functions(graphdef, state.model_state, preprocess=ds.preprocess)
  chunks = curvature.make_chunks(ds.train.images[:64], ds.train.labels[:64], 40)
  key = jax.random.fold_in(jax.random.key(0), 20)
  k = lambda name: jax.random.fold_in(key, tracking.MEASURES.index(name))
  direct = worst_case_sharpness(loss_fn, state.params, chunks, k("worst_case"), rho=0.05, steps=10)
  assert last["sharp/worst_case_l2"] == pytest.approx(direct.value, rel=1e-5)
  # The default 10 restarts: every restart's value in the record, best minus median in the metrics.
  assert last["sharp/worst_case_l2_restart_spread"] == pytest.approx(direct.details["restart_spread"],
                                                                     rel=1e-4, abs=1e-9)
  saved = record["measurements"][0]["records"][0]["details"]
  assert len(saved["restart_values"]) == record["settings"]["restarts"] == 10
  assert max(saved["restart_values"]) == pytest.approx(last["sharp/worst_case_l2"], rel=1e-12)
  direct = worst_case_sharpness(loss_fn, state.params, chunks, k("worst_case_adaptive"), rho=0.5,
                                adaptive=True, steps=10)
  assert last["sharp/worst_case_adaptive_l2"] == pytest.approx(direct.value, rel=1e-5)
  direct = average_sharpness(loss_fn, state.params, chunks, k("average_adaptive"), sigma=0.1,
                             adaptive=True, num_pairs=4)
  assert last["sharp/average_adaptive"] == pytest.approx(direct.value, rel=1e-5)
  assert last["sharp/average_adaptive_se"] == pytest.approx(direct.std_error, rel=1e-5)
  margin = output_margin(logits_fn, state.params, chunks)
  assert last["sharp/output_margin"] == pytest.approx(margin.value, rel=1e-5)
  assert last["sharp/log_prod_of_fro"] == pytest.approx(norm_measures(state.params)["log_prod_of_fro"],
                                                        rel=1e-6)
  # Path norm by hand: depth-1 ReLU MLP, sum_k [W2^2 (W1^2 1 + b1^2) + b2^2]_k.
  w1, b1 = (np.asarray(state.params["hidden"][0][n][...], np.float64) for n in ("kernel", "bias"))
  w2, b2 = (np.asarray(state.params["head"][n][...], np.float64) for n in ("kernel", "bias"))
  by_hand = ((w1**2).sum(0) + b1**2) @ w2**2 + b2**2
  assert last["sharp/path_norm"] == pytest.approx(by_hand.sum(), rel=1e-5)
  assert last["sharp/num_params"] == 36 * 16 + 16 + 16 * 3 + 3
  # lambda_max against the dense Hessian of the same probe set.
  from jax.flatten_util import ravel_pytree
  flat, unravel = ravel_pytree(state.params)
  raw_loss, _ = curvature.model_functions(graphdef, state.model_state, preprocess=lambda x: x)
  batch = {"image": ds.preprocess(ds.train.images[:64]), "label": ds.train.labels[:64]}
  dense = np.asarray(jax.hessian(lambda w: raw_loss(unravel(w), batch))(flat), np.float64)
  assert last["sharp/lambda_max"] == pytest.approx(np.linalg.eigvalsh(0.5 * (dense + dense.T))[-1], rel=1e-3)

  # Rescaled copies: the same function, the same adaptive measures, other plain ones.
  for alpha in (0.1, 10.0):
    tag = f"@alpha={alpha:g}"
    assert last[f"sharp/max_output_change{tag}"] < 1e-4
    assert last[f"sharp/average_adaptive{tag}"] == pytest.approx(last["sharp/average_adaptive"], rel=1e-3)
    assert last[f"sharp/path_norm{tag}"] == pytest.approx(last["sharp/path_norm"], rel=1e-4)
    ratio = last[f"sharp/lambda_max{tag}"] / last["sharp/lambda_max"]
    assert max(ratio, 1 / ratio) > 10, (alpha, ratio)
    q = rescale_relu_layers(state.params, "hidden.0", "head", alpha)
    direct = worst_case_sharpness(loss_fn, q, chunks, k("worst_case"), rho=0.05, steps=10)
    assert last[f"sharp/worst_case_l2{tag}"] == pytest.approx(direct.value, rel=1e-4)
  assert [r["alpha"] for r in record["rescaled"]] == [0.1, 10.0]
  assert record["rescaled"][0]["layers"] == ["hidden.0", "head"]


def test_per_pixel_standardization_reaches_the_measured_loss(tmp_path):
  """data.options.normalization = standardize_pixel: lambda_max of the evaluator equals the dense Hessian's
  on inputs standardized by hand with the training split's per-pixel mean and std (numpy float64)."""
  c = _config(**{"training.num_steps": 4, "eval.every_steps": 4, "measures.names": "lambda_max",
                 "measures.rescale_alphas": ""})
  c.data.options.normalization = "standardize_pixel"
  training.train_and_evaluate(c, tmp_path)
  last = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()][-1]
  _, ds, graphdef, state, _ = training.load_run(tmp_path)
  train = ds.train.images.astype(np.float64) / 255.0
  images = (ds.train.images[:64] / 255.0 - train.mean(0)) / np.maximum(train.std(0), 1 / 255)
  from jax.flatten_util import ravel_pytree
  flat, unravel = ravel_pytree(state.params)
  raw_loss, _ = curvature.model_functions(graphdef, state.model_state, preprocess=lambda x: x)
  batch = {"image": np.asarray(images, np.float32), "label": ds.train.labels[:64]}
  dense = np.asarray(jax.hessian(lambda w: raw_loss(unravel(w), batch))(flat), np.float64)
  assert last["sharp/lambda_max"] == pytest.approx(np.linalg.eigvalsh(0.5 * (dense + dense.T))[-1], rel=1e-3)


def test_distance_from_init_is_zero_when_the_weights_do_not_move(tmp_path):
  c = _config(**{"training.num_steps": 2, "eval.every_steps": 2, "schedule.lr": 0.0,
                 "measures.names": "norms,pac_bayes", "measures.rescale_alphas": "",
                 "measures.pac_bayes_depth": 3})
  training.train_and_evaluate(c, tmp_path)
  last = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()][-1]
  assert last["sharp/distance_from_init"] == 0.0 and last["sharp/fro_dist"] == 0.0
  sigma = last["sharp/pac_bayes_sigma"]
  assert last["sharp/pacbayes_init"] == pytest.approx(np.log(96 / sigma) + 10, rel=1e-6)


@pytest.mark.parametrize("changes, words", [
    ({"measures.names": "worst_case,sharpest"}, ["'sharpest'", "valid choices", "worst_case_adaptive"]),
    ({"measures.split": "test"}, ["measures.split", "eval_train"]),
    ({"measures.rescale_alphas": "0.1,-2", "measures.rescale_layers": "hidden.0,head"}, ["positive"]),
    ({"measures.rescale_alphas": "10", "measures.rescale_layers": "hidden.0"}, ["rescale_layers"]),
    ({"measures.average_rho": 0.01}, ["'measures.average_rho' was renamed", "'measures.average_sigma'"]),
    ({"measures.average_adaptive_rho": 0.1}, ["renamed", "'measures.average_adaptive_sigma'"]),
])
def test_bad_settings_are_one_line_errors(tmp_path, changes, words):
  with pytest.raises(UserError) as e:
    training.train_and_evaluate(_config(**changes), tmp_path)
  message = str(e.value)
  assert "\n" not in message and all(w in message for w in words), message


def test_a_bad_layer_name_lists_the_layers(tmp_path):
  c = _config(**{"training.num_steps": 2, "eval.every_steps": 2, "measures.names": "num_params",
                 "measures.rescale_layers": "hidden.0,tail"})
  with pytest.raises(UserError, match="valid choices: head, hidden.0"):
    training.train_and_evaluate(c, tmp_path)
