"""Orbax checkpoints of the train state, named and verified, for exact resume.

A step `checkpoints/<step>/` holds two Orbax items: `state/`, the train state as a nested dict of plain
arrays keyed by their paths in the state (`params.blocks.0.conv1.kernel`, `opt_state.0.1.count`; typed
PRNG keys as their raw data), written by Orbax's standard handler; and `checksums/checksums.json`, the
SHA-256 of each array's bytes, written by process 0 only (Orbax's JSON handler, `rundir.is_writer()`).
Both are in Orbax's temporary folder until the step is complete and renamed, so a kill during a save
leaves the previous checkpoint intact and never a step without its checksums.

Restoring matches arrays by name against the live state (shapes, dtypes, shardings): a missing, extra or
reshaped array is a one-line `UserError` naming it. Every array is then checked against its checksum;
a garbled or unreadable file is one line naming the step and the array and offering the previous step.
We hash ourselves because Orbax 0.12 checks no array data (its only CRC covers the zarr shard index).

Checkpoints of the old flat format (a list of arrays, `default/`) are refused with the remedy; convert
them with `python -m experiments.convert_checkpoints RUN_DIR` (`convert_flat`).
"""

import hashlib
import json
import logging
import re
import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from research.core import rundir
from research.core.errors import UserError

STATE, CHECKSUMS = "state", "checksums"
CHECKSUMS_FILE = "checksums.json"
FLAT_ITEM = "default"  # the old format's single item: {"leaves": [...]}


def _is_key(x) -> bool:
  return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _part(entry) -> str:
  for attr in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey / FlattenedIndexKey
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def named_leaves(state) -> dict[str, object]:
  """{dotted path: leaf} of a pytree in its leaf order; nnx.Variable's `.value` is left out of the name."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    parts = [_part(e) for e in path]
    if parts and parts[-1] == "value" and isinstance(path[-1], jax.tree_util.GetAttrKey):
      parts = parts[:-1]
    if any("." in p or not p for p in parts):
      raise ValueError(f"state path {parts} has a part with a '.' or an empty part")
    name = ".".join(parts)
    if name in out:
      raise ValueError(f"two arrays of the state have the name {name}")
    out[name] = leaf
  return out


def _nest(flat: dict[str, object]) -> dict:
  tree: dict = {}
  for name, value in flat.items():
    *parents, last = name.split(".")
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[last] = value
  return tree


def _flatten(tree, prefix: str = "") -> dict[str, object]:
  if not isinstance(tree, dict):
    return {prefix[:-1]: tree}
  out = {}
  for k, v in tree.items():
    out |= _flatten(v, f"{prefix}{k}.")
  return out


def _host(x) -> np.ndarray:
  """The whole array on the host (replicated arrays: this process's copy)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    x = x.addressable_data(0)  # parameters are replicated (STYLE.md 7)
  return np.asarray(x)


def checksum(x) -> str:
  """SHA-256 (hex) of an array's bytes in C order."""
  a = np.ascontiguousarray(_host(x))
  return hashlib.sha256(a.reshape(-1).view(np.uint8)).hexdigest()


def _plain(x):
  return jax.random.key_data(x) if _is_key(x) else x


def _drop_event_loop_noise() -> None:
  """Silences Orbax's read-failure noise, and only it, from `sys.unraisablehook`.

  When one read of an Orbax restore fails (a truncated file), Orbax's `run_sync` stops waiting and closes
  its event loop; TensorStore then completes the other reads and its callbacks call
  `loop.call_soon_threadsafe` on the closed loop, which prints one traceback per read (up to 16) through
  `sys.unraisablehook`, after `restore` has raised; when several arrays are garbled, the reads left
  unfinished are closed at exit and each prints Orbax's "Encountered error while reading array index"
  (with a TensorStore spec of some 100 lines), silenced too. They carry nothing beyond the error Orbax raised,
  which we report as one line. Installed once; every other unraisable exception goes to the old hook."""
  previous = sys.unraisablehook
  if getattr(previous, "_drops_event_loop_noise", False):
    return

  def hook(unraisable):
    e = unraisable.exc_value
    if isinstance(e, RuntimeError) and str(e) == "Event loop is closed":
      return
    # the other reads' coroutines, closed unfinished at exit: Orbax re-raises each one's read error there
    if str(e).startswith("Encountered error while reading array index"):
      return
    previous(unraisable)

  hook._drops_event_loop_noise = True
  sys.unraisablehook = hook
  logging.getLogger("asyncio").addFilter(_drop_unretrieved_read)


def _drop_unretrieved_read(record: logging.LogRecord) -> bool:
  """False (drop) for asyncio's "Task exception was never retrieved" about one of Orbax's array reads
  (`async_deserialize`): when a restore fails, the reads it stopped waiting for are collected later and
  asyncio logs each one's error, a TensorStore spec of some 100 lines, after `restore` has raised the error
  we report as one line. Every other asyncio record passes."""
  text = record.getMessage()
  return not ("Task exception was never retrieved" in text and "async_deserialize" in text)


def _registry():
  registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
  registry.add(STATE, ocp.args.StandardSave)
  registry.add(STATE, ocp.args.StandardRestore)
  json_handler = ocp.handlers.JsonCheckpointHandler(filename=CHECKSUMS_FILE)  # primary process only
  registry.add(CHECKSUMS, ocp.args.JsonSave, json_handler)
  registry.add(CHECKSUMS, ocp.args.JsonRestore, json_handler)
  return registry


class Checkpointer:
  """`save(step, state)`, `restore(template, step)` of a run's `checkpoints/` folder (keeps `keep`)."""


  def __init__(self, directory: Path, *, keep: int = 2):
    self.directory = Path(directory).absolute()
    self.keep = keep
    self.manager = self._open()

  def _open(self) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=self.keep, create=True),
        handler_registry=_registry())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state) -> None:
    """Saves `state` (asynchronously: arrays are copied to the host, files written in the background)."""
    named = {k: _plain(v) for k, v in named_leaves(state).items()}
    sums = {k: checksum(v) for k, v in named.items()} if rundir.is_writer() else {}
    self.manager.save(int(step), args=ocp.args.Composite(**{
        STATE: ocp.args.StandardSave(_nest(named)),
        CHECKSUMS: ocp.args.JsonSave({"algorithm": "sha256", "arrays": sums})}))

  def _corrupt(self, step: int, what: str) -> UserError:
    earlier = [s for s in self.manager.all_steps() if s < step]
    where = f"{self.directory.name}/{step}"
    hint = (f"the previous checkpoint is step {max(earlier)}: delete {where} to resume from it" if earlier
            else f"there is no earlier checkpoint: delete {where} to start over")
    return UserError(f"checkpoint step {step} in {self.directory} is corrupt ({what}); {hint}")

  def _check_format(self, step: int, template) -> None:
    path = self.directory / str(step)
    if (path / FLAT_ITEM).is_dir() and not (path / STATE).exists():
      raise UserError(f"checkpoint step {step} in {self.directory} is in the old flat format (arrays "
                      "without names): convert it with `python -m experiments.convert_checkpoints "
                      f"{self.directory.parent}` or re-train")

  def _saved_arrays(self, step: int) -> dict[str, object]:
    """{name: metadata with .shape and .dtype} of the arrays saved at `step`."""
    try:
      meta = self.manager.item_metadata(step)[STATE]
      return _flatten(dict(meta) if meta is not None else None)
    except Exception as e:  # noqa: BLE001 - unreadable metadata means an unusable checkpoint
      raise self._corrupt(step, f"unreadable array metadata: {_first_line(e)}") from None

  def restore(self, template, step: int | None = None):
    """The state saved at `step` (default: the latest), with the structure, PRNG key types and shardings
    of `template` (this run's state); arrays are matched by name and verified against their checksums."""
    step = self.latest_step() if step is None else step
    if step is None or step not in self.manager.all_steps():
      raise UserError(f"no checkpoint at step {step} in {self.directory}")
    self._check_format(step, template)
    wanted = named_leaves(template)
    saved = self._saved_arrays(step)
    missing, extra = sorted(wanted.keys() - saved.keys()), sorted(saved.keys() - wanted.keys())
    if missing or extra:
      what = (f"has no array {missing[0]}, which this run's state has" if missing
              else f"has an array {extra[0]} that this run's state lacks")
      more = len(missing) + len(extra) - 1
      more = f" ({more} more differ)" if more else ""
      raise UserError(f"checkpoint step {step} in {self.directory} {what}{more} (another model or "
                      "optimizer? use its workdir, or another one)")
    abstract = {}
    for name, leaf in wanted.items():
      plain = jax.eval_shape(jax.random.key_data, leaf) if _is_key(leaf) else leaf
      shape, dtype = tuple(plain.shape), np.dtype(plain.dtype)
      if tuple(saved[name].shape) != shape or np.dtype(saved[name].dtype) != dtype:
        raise UserError(f"checkpoint step {step} in {self.directory}: array {name} is "
                        f"{tuple(saved[name].shape)} {np.dtype(saved[name].dtype)}, this run's state has "
                        f"{shape} {dtype} (another model? use its workdir, or another one)")
      sharding = getattr(leaf, "sharding", None)
      if _is_key(leaf) and sharding is not None:
        sharding = jax.random.key_data(leaf).sharding
      abstract[name] = jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
    sums = self._checksums(step)
    _drop_event_loop_noise()
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(**{
          STATE: ocp.args.StandardRestore(_nest(abstract))}))[STATE]
    except Exception as e:  # noqa: BLE001 - any failure here means an unusable checkpoint
      raise self._corrupt(step, _unreadable(e)) from None
    restored = _flatten(restored)
    for name in wanted:
      if sums.get(name) != checksum(restored[name]):
        raise self._corrupt(step, f"array {name}: checksum mismatch")
    leaves = []
    for name, leaf in wanted.items():
      x = restored[name]
      if _is_key(leaf):
        x = jax.random.wrap_key_data(jnp.asarray(x), impl=jax.random.key_impl(leaf))
      elif not isinstance(x, jax.Array):
        x = jnp.asarray(x)
      leaves.append(x)
    return jax.tree.unflatten(jax.tree.structure(template), leaves)

  def _checksums(self, step: int) -> dict[str, str]:
    path = self.directory / str(step) / CHECKSUMS / CHECKSUMS_FILE
    try:
      sums = json.loads(path.read_text())["arrays"]
      assert isinstance(sums, dict)
      return sums
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as e:
      raise self._corrupt(step, f"{CHECKSUMS}/{CHECKSUMS_FILE} unreadable: {_first_line(e)}") from None

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _unreadable(e: BaseException) -> str:
  """What a failed Orbax restore could not read: the array (TensorStore names its OCDBT key) and why."""
  chain = []
  while e is not None and len(chain) < 8:
    chain.append(str(e))
    e = e.__cause__ or e.__context__
  for text in reversed(chain):  # innermost first: TensorStore's own message
    read = re.search(r'Error reading "([^"/]+)/[^"]*" in [^"]*"[^"]*": (.+)', text)
    if read:
      return f"array {read.group(1)}: unreadable: {read.group(2).splitlines()[0]}"
  for text in chain:
    path = re.search(r"'path': '([^'/]+)/'", text)
    if path:
      return f"array {path.group(1)}: unreadable"
  return f"unreadable: {chain[0].splitlines()[0] if chain[0] else 'unknown error'}"


def _first_line(e: BaseException) -> str:
  return str(e).splitlines()[0] if str(e) else type(e).__name__


def _read_flat(step_dir: Path) -> list[np.ndarray]:
  """The arrays of an old flat checkpoint step, as NumPy, in the state's leaf order."""
  checkpointer = ocp.PyTreeCheckpointer()
  path = step_dir / FLAT_ITEM
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                          checkpointer.metadata(path).item_metadata.tree)
  return list(checkpointer.restore(path, restore_args=as_numpy)["leaves"])


def convert_flat(directory: Path, template) -> list[int]:
  """Rewrites the old flat checkpoints of `directory` in the named format; returns the steps converted.

  The flat list is the state's leaves in `jax.tree.leaves` order (typed PRNG keys as raw data), so
  `template` (this run's state at step 0) gives every array its name, shape and dtype. The new steps
  are written next to the old ones and swapped in at the end; the old folder is kept as
  `<directory>.flat` (delete it once the run resumes)."""
  directory = Path(directory).absolute()
  steps = sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and (p / FLAT_ITEM).is_dir())
  if not steps:
    return []
  names = list(named_leaves(template))
  leaves = jax.tree.leaves(template)
  staging = directory.with_name(directory.name + ".converting")
  shutil.rmtree(staging, ignore_errors=True)
  out = Checkpointer(staging, keep=len(steps))
  for step in steps:
    try:
      flat = _read_flat(directory / str(step))
    except Exception as e:  # noqa: BLE001 - a damaged old step cannot be converted
      raise UserError(f"cannot read old checkpoint step {step} in {directory}: {_first_line(e)}") from None
    if len(flat) != len(leaves):
      raise UserError(f"old checkpoint step {step} in {directory} has {len(flat)} arrays, this run's state "
                      f"has {len(leaves)}: it belongs to another model or optimizer")
    arrays = []
    for name, x, leaf in zip(names, flat, leaves, strict=True):
      plain = jax.eval_shape(jax.random.key_data, leaf) if _is_key(leaf) else leaf
      if tuple(x.shape) != tuple(plain.shape) or x.dtype != plain.dtype:
        raise UserError(f"old checkpoint step {step} in {directory}: array {len(arrays)} is {x.shape} "
                        f"{x.dtype}, this run's {name} is {tuple(plain.shape)} {plain.dtype}")
      arrays.append(jax.random.wrap_key_data(jnp.asarray(x), impl=jax.random.key_impl(leaf)) if _is_key(leaf)
                    else x)
    out.save(step, jax.tree.unflatten(jax.tree.structure(template), arrays))
  out.close()
  backup = directory.with_name(directory.name + ".flat")
  directory.rename(backup)
  staging.rename(directory)
  return steps

