"""Post-training quantization and pruning (research.measures.compression) against hand computations,
and the compression evaluator at the end of training against a direct evaluation of the checkpoint."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research import curvature, models
from research.core.errors import UserError
from research.measures import compression
from research.measures.compression import compression_curve, prune, quantize


def _params(rng=None):
  """Two kernels (4, 3) and (3, 2) with distinct magnitudes, a bias and a norm scale."""
  rng = rng or np.random.default_rng(0)
  mags = rng.permutation(np.arange(1, 19)) / 10.0  # 18 distinct magnitudes 0.1 ... 1.8
  signs = rng.choice([-1.0, 1.0], size=18)
  w = (mags * signs).astype(np.float32)
  return {"dense": {"kernel": jnp.asarray(w[:12].reshape(4, 3)), "bias": jnp.asarray([0.01, -0.02, 0.03])},
          "head": {"kernel": jnp.asarray(w[12:].reshape(3, 2)), "bias": jnp.asarray([0.001, 0.002])},
          "norm": {"scale": jnp.asarray([0.003, 0.004], jnp.float32)}}


def test_int8_and_int4_quantization_equal_the_hand_computed_grid():
  w = jnp.asarray([[0.5, -1.27], [0.254, 0.1]], jnp.float32)
  params = {"layer": {"kernel": w, "bias": jnp.asarray([0.123456, 7.0])}}
  # per tensor: scale = 1.27 / 127 = 0.01; w / scale = 50, -127, 25.4, 10 -> 50, -127, 25, 10
  out, rec = quantize(params, 8, granularity="tensor")
  np.testing.assert_allclose(out["layer"]["kernel"], [[0.5, -1.27], [0.25, 0.1]], rtol=1e-6)
  np.testing.assert_array_equal(out["layer"]["bias"], params["layer"]["bias"])  # biases untouched
  hand_err = np.sqrt(0.004**2 / (0.5**2 + 1.27**2 + 0.254**2 + 0.1**2))
  assert rec.relative_error == pytest.approx(hand_err, rel=1e-4)
  assert rec.num_weights == 4 and rec.name == "int8" and rec.sparsity == 0.0
  # per output channel: column 0 scale 0.5 / 127 (0.254 -> 64.516 -> 65), column 1 scale 0.01
  out, _ = quantize(params, 8, granularity="channel")
  np.testing.assert_allclose(out["layer"]["kernel"], [[0.5, -1.27], [65 * 0.5 / 127, 0.1]], rtol=1e-6)
  # int4: q = 7, per tensor scale 0.1: 7, 2.4, -3.6, 0.4 -> 7, 2, -4, 0
  w4 = {"k": {"kernel": jnp.asarray([[0.7, 0.24], [-0.36, 0.04]], jnp.float32)}}
  out, rec = quantize(w4, 4, granularity="tensor")
  np.testing.assert_allclose(out["k"]["kernel"], [[0.7, 0.2], [-0.4, 0.0]], rtol=1e-6, atol=1e-7)
  assert rec.sparsity == 0.25  # 0.04 rounds to 0


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("granularity", ["channel", "tensor"])
def test_quantization_error_is_at_most_half_a_step_and_values_on_the_grid(bits, granularity):
  w = jax.random.normal(jax.random.key(bits), (5, 6, 7), jnp.float32)
  out, _ = quantize({"conv": {"kernel": w}}, bits, granularity=granularity)
  w, wq = np.asarray(w, np.float64), np.asarray(out["conv"]["kernel"], np.float64)
  q = 2 ** (bits - 1) - 1
  m = np.abs(w).max(axis=(0, 1)) if granularity == "channel" else np.abs(w).max()
  scale = m / q
  assert np.all(np.abs(wq - w) <= scale / 2 * (1 + 1e-5))
  steps = wq / scale
  np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)  # integers in [-q, q]
  assert np.abs(steps).max() <= q + 1e-4


def test_high_bits_and_zero_sparsity_are_the_identity():
  params = _params()
  same, rec = prune(params, 0.0)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(same)):
    np.testing.assert_array_equal(a, b)
  assert rec.relative_error == 0.0
  fine, rec = quantize(params, 16)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(fine)):
    np.testing.assert_allclose(b, a, atol=1.8 / 32767 / 2 * 1.0001, rtol=0)
  assert rec.relative_error < 1e-4


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.7, 1.0])
def test_global_pruning_zeroes_exactly_the_smallest_kernel_entries(sparsity):
  params = _params()
  out, rec = prune(params, sparsity, scope="global")
  n = 18
  k = round(sparsity * n)
  kernels = np.concatenate([np.asarray(params[m]["kernel"]).ravel() for m in ("dense", "head")])
  threshold = np.sort(np.abs(kernels))[k - 1] if k else -1.0  # distinct magnitudes: a clean cut
  for m in ("dense", "head"):
    w, wp = np.asarray(params[m]["kernel"]), np.asarray(out[m]["kernel"])
    np.testing.assert_array_equal(wp, np.where(np.abs(w) <= threshold, 0.0, w))
    np.testing.assert_array_equal(out[m]["bias"], params[m]["bias"])
  np.testing.assert_array_equal(out["norm"]["scale"], params["norm"]["scale"])
  assert rec.sparsity == k / n and rec.settings["num_pruned"] == k and rec.name == f"prune{sparsity:g}"
  kept = np.where(np.abs(kernels) <= threshold, 0.0, kernels)
  assert rec.relative_error == pytest.approx(np.linalg.norm(kept - kernels) / np.linalg.norm(kernels),
                                             rel=1e-6)


def test_layer_pruning_zeroes_the_smallest_entries_of_each_kernel():
  params = _params()
  out, rec = prune(params, 0.5, scope="layer")
  for m, n in (("dense", 12), ("head", 6)):
    w, wp = np.asarray(params[m]["kernel"]), np.asarray(out[m]["kernel"])
    k = round(0.5 * n)
    threshold = np.sort(np.abs(w).ravel())[k - 1]
    np.testing.assert_array_equal(wp, np.where(np.abs(w) <= threshold, 0.0, w))
    assert rec.layers[f"{m}.kernel"]["sparsity"] == k / n
  assert rec.sparsity == 9 / 18


def test_pruning_breaks_ties_to_the_exact_count():
  params = {"a": {"kernel": jnp.ones((10, 1))}}
  out, rec = prune(params, 0.3)
  assert int((np.asarray(out["a"]["kernel"]) == 0).sum()) == 3 and rec.sparsity == 0.3


def test_compression_curve_matches_a_direct_evaluation_and_chunks():
  rng = np.random.default_rng(1)
  images = rng.normal(size=(40, 2, 2, 1)).astype(np.float32)
  labels = rng.integers(0, 3, size=40).astype(np.int32)
  model = models.create("mlp", num_classes=3, input_shape=(2, 2, 1), rngs=nnx.Rngs(0), depth=1, width=16)
  graphdef, params, rest = models.split(model)
  _, logits_fn = curvature.model_functions(graphdef, rest, preprocess=lambda x: x)
  levels = compression.levels((8, 2), (0.5, 0.9))
  batch = {"image": jnp.asarray(images), "label": jnp.asarray(labels)}
  whole = compression_curve(logits_fn, params, batch, levels)
  chunks = curvature.make_chunks(images, labels, 16, shard=False)
  chunked = compression_curve(logits_fn, params, chunks, levels)

  def direct(p):
    z = np.asarray(logits_fn(p, batch), np.float64)
    logp = z - z.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    return -logp[np.arange(40), labels].mean(), (z.argmax(-1) == labels).mean()

  loss0, acc0 = direct(params)
  assert whole["baseline"]["accuracy"] == pytest.approx(acc0, abs=1e-6)
  assert whole["baseline"]["loss"] == pytest.approx(loss0, rel=1e-5)
  assert [x["name"] for x in whole["levels"]] == ["int8", "int2", "prune0.5", "prune0.9"]
  for (method, level), a, b in zip(levels, whole["levels"], chunked["levels"]):
    p, _ = compression.compress(params, method, level)
    loss, acc = direct(p)
    assert a["accuracy"] == pytest.approx(acc, abs=1e-6) and b["accuracy"] == pytest.approx(acc, abs=1e-6)
    assert a["loss"] == pytest.approx(loss, rel=1e-5) and b["loss"] == pytest.approx(loss, rel=1e-5)
    assert a["accuracy_drop"] == pytest.approx(acc0 - acc, abs=1e-6)
  assert whole["levels"][3]["record"]["sparsity"] == pytest.approx(0.9, abs=1 / 64)
  assert chunked["settings"]["num_examples"] == 40 and chunked["settings"]["chunk_size"] == 16


@pytest.mark.parametrize("call, words", [
    (lambda p: quantize(p, 1), ["bits", "2..16"]),
    (lambda p: quantize(p, 8.0), ["bits", "2..16"]),
    (lambda p: quantize(p, True), ["bits"]),
    (lambda p: quantize(p, 8, granularity="row"), ["granularity", "channel, tensor"]),
    (lambda p: prune(p, 1.5), ["sparsity", "[0, 1]"]),
    (lambda p: prune(p, -0.1), ["sparsity", "[0, 1]"]),
    (lambda p: prune(p, 0.5, scope="net"), ["scope", "global, layer"]),
    (lambda p: prune(p, 0.5, which=lambda n: False), ["no parameter selected"]),
])
def test_bad_settings_are_one_line_user_errors(call, words):
  with pytest.raises(UserError) as e:
    call(_params())
  msg = str(e.value)
  assert "\n" not in msg and all(w in msg for w in words), msg


def test_record_is_json_serializable():
  _, rec = prune(_params(), 0.5)
  assert json.loads(json.dumps(rec.to_dict()))["layers"]["head.kernel"]["num_weights"] == 6


# ---------------------------------------------------------------------------------------------------
# The evaluator at the end of training


SYNTH = dict(synthetic_train=96, synthetic_test=48, image_shape=(6, 6, 1), num_classes=3, valid_size=0,
             eval_train_size=40)


def test_compression_at_end_equals_a_direct_evaluation_of_the_final_checkpoint(tmp_path):
  import helpers

  from analysis import runs
  from research import training

  c = helpers.tiny_config(SYNTH, **{"training.num_steps": 20, "schedule.lr": 0.1, "compression.at_end": True,
                                    "compression.bits": (8, 2), "compression.sparsities": (0.5, 0.9),
                                    "compression.scope": "layer", "compression.chunk_size": 16})
  training.train_and_evaluate(c, tmp_path)
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  logged = {k: v for r in records for k, v in r.items() if k.startswith("compress/")}
  saved = json.loads((tmp_path / "compression" / "step20.json").read_text())
  assert saved["step"] == 20 and saved["splits"]["test"]["num_examples"] == 48

  _, ds, graphdef, state, step = training.load_run(tmp_path)
  assert step == 20

  def direct(params, split):
    model = nnx.merge(graphdef, params, state.model_state)
    z = np.asarray(model(ds.preprocess(split.images)), np.float64)
    return float((z.argmax(-1) == split.labels).mean())

  for s, split in (("test", ds.test), ("eval_train", ds.eval_train)):
    base = direct(state.params, split)
    assert logged[f"compress/{s}_accuracy"] == pytest.approx(base, abs=1e-6)
    for method, level, name in (("quantize", 8, "int8"), ("quantize", 2, "int2"), ("prune", 0.5, "prune0.5"),
                                ("prune", 0.9, "prune0.9")):
      p, rec = compression.compress(state.params, method, level, scope="layer")
      acc = direct(p, split)
      assert logged[f"compress/{s}_accuracy_{name}"] == pytest.approx(acc, abs=1e-6), (s, name)
      assert logged[f"compress/{s}_drop_{name}"] == pytest.approx(base - acc, abs=1e-6)
      assert logged[f"compress/sparsity_{name}"] == pytest.approx(rec.sparsity)
  assert logged["compress/sparsity_prune0.9"] == pytest.approx(0.9, abs=0.01)
  row = runs.runs_table(runs.load(tmp_path)).iloc[0]
  assert row["compress/test_drop_int2"] == pytest.approx(logged["compress/test_drop_int2"])


@pytest.mark.parametrize("changes, words", [
    ({"compression.splits": ("test", "holdout")}, ["holdout", "eval_train"]),
    ({"compression.bits": (8, 1)}, ["compression.bits", "[2, 16]", "got 1"]),
    ({"compression.sparsities": (1.2,)}, ["compression.sparsities", "[0, 1]", "got 1.2"]),
    ({"compression.scope": "net"}, ["compression.scope", "global, layer"]),
    ({"compression.bits": (), "compression.sparsities": ()}, ["at least one level"]),
    ({"compression.every": 3}, ["unknown config key", "compression.at_end"]),
])
def test_bad_compression_config_is_a_one_line_user_error(tmp_path, changes, words):
  import helpers

  from research import training

  c = helpers.tiny_config(SYNTH, **({"compression.at_end": True} | changes))
  with pytest.raises(UserError) as e:
    training.train_and_evaluate(c, tmp_path)
  msg = str(e.value)
  assert "\n" not in msg and all(w in msg for w in words), msg


def test_compression_report_states_the_rank_correlations_of_the_runs(tmp_path):
  """The compression template on three tiny runs: its Kendall tau findings equal scipy's on the numbers
  in metrics.jsonl, and it draws the drop curves and scatters."""
  import helpers
  import scipy.stats

  from analysis import report
  from research import training

  root = tmp_path / "study"
  for lr, seed in ((0.05, 0), (0.5, 0), (0.5, 1)):
    c = helpers.tiny_config(SYNTH, **{"study": "compression", "seed": seed, "schedule.lr": lr,
                                      "training.num_steps": 10, "compression.at_end": True,
                                      "compression.bits": (8, 2), "compression.sparsities": (0.5, 0.9),
                                      "curvature.at_end": True, "curvature.num_examples": 48,
                                      "curvature.trace_probes": 4})
    training.train_and_evaluate(c, root / f"lr={lr}-seed={seed}")
  written = report.write_report(root, tmp_path / "out")
  assert written.report.template == "compression"
  md = written.markdown.read_text()
  assert "Hochreiter & Schmidhuber" in md and "## Findings" in md
  names = {f.name for f in written.report.figures()}
  assert {"quantization_drop", "pruning_drop"} <= names
  last = {}
  for run in sorted(root.iterdir()):
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last[run.name] = {k: v for r in recs for k, v in r.items()}
  taus = [f.values for f in written.report.findings if "tau" in f.values and "measure" in f.values]
  assert taus
  for v in taus:
    x = [last[r][v["measure"]] for r in sorted(last)]
    y = [last[r][f"compress/test_drop_{v['level']}"] for r in sorted(last)]
    expected = scipy.stats.kendalltau(x, y).statistic
    assert v["tau"] == pytest.approx(expected, abs=1e-12) or (np.isnan(expected) and np.isnan(v["tau"]))
    assert f"{v['tau']:.2f}" in md
