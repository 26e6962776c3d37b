"""Post-training compression of a params pytree, and the accuracy it costs: a flat minimum should
tolerate the weight noise that compression adds (Hochreiter & Schmidhuber 1997, "Flat minima", Neural
Computation 9(1): a flat minimum needs fewer bits to describe its weights).

- `quantize(params, bits)`: symmetric uniform round-to-nearest fake quantization (the dequantized
  floats): w' = scale * clip(round(w / scale), -q, q), q = 2^(bits-1) - 1, scale = max|w| / q per
  output channel (the last axis of a kernel: (in, out) dense, (kh, kw, in, out) conv) or per tensor.
  Every |w' - w| <= scale / 2.
- `prune(params, sparsity)`: magnitude pruning: the round(sparsity * n) entries of smallest |w| set to
  0, n counted over all selected kernels (`scope="global"`) or within each (`"layer"`); ties are
  broken by position (a stable sort), so exactly that many entries are chosen.
- `compression_curve(logits_fn, params, data, levels)`: loss and accuracy at each level, streamed
  over data chunks like the other measures (`common.mean_over`).

Only kernels are compressed by default (`which=is_kernel`); biases and normalization scales are left
as they are. Both functions return the new params and a `CompressionRecord`. Written here because no
library in the stack fake-quantizes or prunes an arbitrary Flax NNX params pytree with these exact
rules on the host.
"""

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from research.core import losses
from research.core.errors import UserError, choices_message
from research.curvature import operators
from research.measures.common import as_chunks, check_choice, data_settings, mean_over

GRANULARITIES = ("channel", "tensor")
SCOPES = ("global", "layer")
METHODS = ("none", "quantize", "prune")
MIN_BITS, MAX_BITS = 2, 16


def is_kernel(name: str) -> bool:
  """True for a kernel leaf (`dense.kernel`, `convs.0.kernel.value`), not for biases or norm scales."""
  return "kernel" in name.split(".")[-2:]


@dataclasses.dataclass(frozen=True)
class CompressionRecord:
  """What one compression did to the selected weights.

  method: quantize | prune | none; level: bits or target sparsity; num_weights: selected entries;
  sparsity: fraction of them that are exactly 0 afterwards; relative_error: ||w' - w|| / ||w|| over
  them (float64); layers: per selected leaf {name: {"num_weights", "sparsity", "relative_error"}}.
  """
  method: str
  level: float
  settings: dict
  num_weights: int
  sparsity: float
  relative_error: float
  layers: dict

  @property
  def name(self) -> str:
    return level_name(self.method, self.level)

  def to_dict(self) -> dict:
    return {"name": self.name, "method": self.method, "level": self.level, "settings": self.settings,
            "num_weights": self.num_weights, "sparsity": self.sparsity,
            "relative_error": self.relative_error, "layers": self.layers}


def level_name(method: str, level) -> str:
  """`int8` (quantize, 8 bits), `prune0.9` (prune to sparsity 0.9), `none`: metric-name suffixes."""
  if method == "quantize":
    return f"int{int(level)}"
  if method == "prune":
    return f"prune{float(level):g}"
  return "none"


def check_bits(bits) -> int:
  ok = isinstance(bits, (int, np.integer)) and not isinstance(bits, bool) and MIN_BITS <= bits <= MAX_BITS
  if not ok:
    raise UserError(choices_message("bits", bits, [f"an integer {MIN_BITS}..{MAX_BITS}"]))
  return int(bits)


def check_sparsity(sparsity) -> float:
  ok = (isinstance(sparsity, (int, float, np.integer, np.floating)) and not isinstance(sparsity, bool)
        and np.isfinite(sparsity) and 0.0 <= sparsity <= 1.0)
  if not ok:
    raise UserError(choices_message("sparsity", sparsity, ["a number in [0, 1]"]))
  return float(sparsity)


def _leaves(params, which: Callable[[str], bool] | None):
  """(leaves, treedef, names, keep): every leaf of params and which ones `which` selects."""
  which = is_kernel if which is None else which
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  names = [operators.path_name(p) for p, _ in flat]
  keep = [bool(which(n)) for n in names]
  if not any(keep):
    raise UserError(f"no parameter selected for compression; parameter names look like {names[0]!r}")
  return [leaf for _, leaf in flat], treedef, names, keep


def _record(method, level, settings, old: list, new: list, names: list) -> CompressionRecord:
  layers, err2, ref2, zeros, total = {}, 0.0, 0.0, 0, 0
  for name, a, b in zip(names, old, new):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    e2, r2, z = float(np.sum((b - a) ** 2)), float(np.sum(a ** 2)), int(np.sum(b == 0))
    layers[name] = {"num_weights": int(a.size), "sparsity": z / max(a.size, 1),
                    "relative_error": float(np.sqrt(e2 / r2)) if r2 > 0 else 0.0}
    err2, ref2, zeros, total = err2 + e2, ref2 + r2, zeros + z, total + int(a.size)
  return CompressionRecord(method, level, settings, total, zeros / max(total, 1),
                           float(np.sqrt(err2 / ref2)) if ref2 > 0 else 0.0, layers)


def quantization_scale(w: jax.Array, bits: int, granularity: str = "channel") -> jax.Array:
  """max|w| / (2^(bits-1) - 1): shape (out,) per output channel (last axis), () per tensor; 1 where
  the channel is all zeros (it stays zero)."""
  q = 2 ** (bits - 1) - 1
  if granularity == "channel" and w.ndim >= 2:
    m = jnp.max(jnp.abs(w), axis=tuple(range(w.ndim - 1)))
  else:
    m = jnp.max(jnp.abs(w))
  return jnp.where(m > 0, m / q, jnp.ones_like(m))


def fake_quantize(w: jax.Array, bits: int, granularity: str = "channel") -> jax.Array:
  """scale * clip(round(w / scale), -q, q) in w's dtype (round half to even)."""
  q = 2 ** (bits - 1) - 1
  scale = quantization_scale(w, bits, granularity)
  return (jnp.clip(jnp.round(w / scale), -q, q) * scale).astype(w.dtype)


def quantize(params, bits: int, *, granularity: str = "channel",
             which: Callable[[str], bool] | None = None):
  """(params with every selected leaf fake-quantized to `bits`, CompressionRecord); see the module
  docstring. `which(name) -> bool` on dotted parameter names (default: kernels)."""
  bits = check_bits(bits)
  check_choice("granularity", granularity, GRANULARITIES)
  leaves, treedef, names, keep = _leaves(params, which)
  new = [fake_quantize(jnp.asarray(x), bits, granularity) if k else x for x, k in zip(leaves, keep)]
  record = _record("quantize", bits, {"granularity": granularity},
                   [x for x, k in zip(leaves, keep) if k], [x for x, k in zip(new, keep) if k],
                   [n for n, k in zip(names, keep) if k])
  return jax.tree_util.tree_unflatten(treedef, new), record


def _prune_mask(magnitudes: np.ndarray, count: int) -> np.ndarray:
  """(n,) bool: True for the `count` smallest entries (ties by position)."""
  mask = np.zeros(magnitudes.shape, bool)
  mask[np.argsort(magnitudes, kind="stable")[:count]] = True
  return mask


def prune(params, sparsity: float, *, scope: str = "global", which: Callable[[str], bool] | None = None):
  """(params with the round(sparsity * n) smallest-|w| selected entries set to 0, CompressionRecord);
  n over all selected leaves (`global`) or per leaf (`layer`)."""
  sparsity = check_sparsity(sparsity)
  check_choice("scope", scope, SCOPES)
  leaves, treedef, names, keep = _leaves(params, which)
  chosen = [np.asarray(x) for x, k in zip(leaves, keep) if k]
  if scope == "global":
    mags = np.concatenate([np.abs(x).reshape(-1).astype(np.float64) for x in chosen])
    mask = _prune_mask(mags, int(round(sparsity * mags.size)))
    sizes = np.cumsum([0] + [x.size for x in chosen])
    masks = [mask[a:b].reshape(x.shape) for a, b, x in zip(sizes[:-1], sizes[1:], chosen)]
  else:
    masks = [_prune_mask(np.abs(x).reshape(-1).astype(np.float64), int(round(sparsity * x.size)))
             .reshape(x.shape) for x in chosen]
  pruned = [jnp.asarray(np.where(m, np.zeros((), x.dtype), x)) for x, m in zip(chosen, masks)]
  it = iter(pruned)
  new = [next(it) if k else x for x, k in zip(leaves, keep)]
  record = _record("prune", sparsity, {"scope": scope, "num_pruned": int(sum(m.sum() for m in masks))},
                   chosen, pruned, [n for n, k in zip(names, keep) if k])
  return jax.tree_util.tree_unflatten(treedef, new), record


def compress(params, method: str, level, *, granularity: str = "channel", scope: str = "global",
             which: Callable[[str], bool] | None = None):
  """`quantize` or `prune` by name; `none` returns params unchanged with an empty record."""
  check_choice("compression method", method, METHODS)
  if method == "quantize":
    return quantize(params, level, granularity=granularity, which=which)
  if method == "prune":
    return prune(params, level, scope=scope, which=which)
  leaves, _, names, keep = _leaves(params, which)
  chosen = [x for x, k in zip(leaves, keep) if k]
  return params, _record("none", 0, {}, chosen, chosen, [n for n, k in zip(names, keep) if k])


def levels(bits: Sequence[int] = (), sparsities: Sequence[float] = ()) -> list[tuple[str, float]]:
  """[("quantize", b) for bits] + [("prune", s) for sparsities], each checked."""
  return ([("quantize", check_bits(b)) for b in bits]
          + [("prune", check_sparsity(s)) for s in sparsities])


def _chunk_metrics(logits_fn: Callable, loss_name: str, params, chunk) -> dict:
  """Masked means of the loss and the 0/1 accuracy over one chunk (for `mean_over`)."""
  z = logits_fn(params, chunk)
  mask = chunk["mask"].astype(jnp.float32)
  denom = jnp.maximum(mask.sum(), 1.0)
  per = losses.per_example_loss(loss_name, z, chunk["label"])
  correct = (jnp.argmax(z, -1) == chunk["label"]).astype(jnp.float32)
  return {"loss": (per * mask).sum() / denom, "accuracy": (correct * mask).sum() / denom}


def evaluate(logits_fn: Callable, params, data, *, loss_name: str = "cross_entropy") -> dict:
  """{"loss", "accuracy"}: exact means over the real examples of `data` (batch dict or Chunks)."""
  check_choice("loss", loss_name, losses.LOSSES)
  chunks = as_chunks(data)
  out = mean_over(_chunk_metrics, logits_fn, loss_name)(params, chunks)
  return {k: float(v) for k, v in out.items()}


def compression_curve(logits_fn: Callable, params, data, compression_levels: Sequence[tuple[str, float]], *,
                      loss_name: str = "cross_entropy", granularity: str = "channel", scope: str = "global",
                      which: Callable[[str], bool] | None = None) -> dict:
  """Loss and accuracy of `params` and of each compressed copy on `data`.

  compression_levels: (method, level) pairs (`levels(bits, sparsities)`). Returns {"baseline":
  {"loss", "accuracy"}, "levels": [{"name", "loss", "accuracy", "accuracy_drop" (baseline -
  compressed, a fraction), "loss_increase", "record": CompressionRecord.to_dict()}], "settings"}.
  """
  chunks = as_chunks(data)
  base = evaluate(logits_fn, params, chunks, loss_name=loss_name)
  out = []
  for method, level in compression_levels:
    compressed, record = compress(params, method, level, granularity=granularity, scope=scope, which=which)
    m = evaluate(logits_fn, compressed, chunks, loss_name=loss_name)
    out.append({"name": record.name, "loss": m["loss"], "accuracy": m["accuracy"],
                "accuracy_drop": base["accuracy"] - m["accuracy"], "loss_increase": m["loss"] - base["loss"],
                "record": record.to_dict()})
  settings = data_settings(chunks, loss_name=loss_name, granularity=granularity, scope=scope)
  return {"baseline": base, "levels": out, "settings": settings}
