"""Named, verified checkpoints: round trip by name, arrays matched by name whatever the leaf order, garbled
and truncated files and old flat checkpoints as one-line errors, the converter, and the train CLI.

Checksums are recomputed here with `hashlib` on NumPy bytes, independent of the module's own helper;
corruption is made by flipping or cutting bytes of the files Orbax wrote.
"""

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import struct

from research import training
from research.core.errors import UserError
from research.training import checkpoints, loop
from research.training import state as state_lib

ROOT = Path(__file__).resolve().parents[1]
SYNTH = dict(synthetic_train=96, synthetic_test=48, image_shape=(6, 6, 1), num_classes=3, valid_size=0,
             eval_train_size=48)


def _state(seed: int = 0, **changes):
  """A tiny train state (MLP with dropout: a typed PRNG key in the state, momentum in the optimizer)
  whose arrays hold random values drawn from `seed`."""
  c = helpers.tiny_config(SYNTH, **({"model.knobs.dropout": 0.25, "model.knobs.width": 64} | changes))
  ds = loop._load_data(c)
  state = loop.build_state(c, ds, 20, 3)[1]
  rng = np.random.default_rng(seed)
  randomize = lambda x: (x if checkpoints._is_key(x) or x.ndim == 0
                         else jnp.asarray(rng.standard_normal(x.shape).astype(x.dtype)))
  return jax.tree.map(randomize, state)


def _as_numpy(x):
  return np.asarray(jax.random.key_data(x) if checkpoints._is_key(x) else x)


def _assert_same(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    assert checkpoints._is_key(x) == checkpoints._is_key(y)
    np.testing.assert_array_equal(_as_numpy(x), _as_numpy(y))


def _saved(tmp_path, steps=(10, 20), state=None):
  state = _state() if state is None else state
  ckpt = checkpoints.Checkpointer(tmp_path / "checkpoints")
  for s in steps:
    ckpt.save(s, state)
  ckpt.close()
  return state


def _largest_file(step_dir: Path) -> Path:
  """The largest array-data file of a step (OCDBT's `d/` folders): not `_sharding` or other metadata
  that a restore by name does not read, which can be larger when the data is split over files."""
  return max((p for p in (step_dir / checkpoints.STATE).rglob("*") if p.is_file() and p.parent.name == "d"),
             key=lambda p: p.stat().st_size)


def test_round_trip_by_name_with_independent_checksums(tmp_path):
  state = _saved(tmp_path)
  ckpt = checkpoints.Checkpointer(tmp_path / "checkpoints")
  restored = ckpt.restore(_state(seed=1), 20)
  ckpt.close()
  _assert_same(restored, state)
  sums = json.loads((tmp_path / "checkpoints/20/checksums/checksums.json").read_text())["arrays"]
  names = list(checkpoints.named_leaves(state))
  assert "params.hidden.0.kernel" in names and "model_state.dropout.rngs.key" in names
  assert sorted(sums) == sorted(names)
  for name, leaf in checkpoints.named_leaves(state).items():
    assert sums[name] == hashlib.sha256(np.ascontiguousarray(_as_numpy(leaf)).tobytes()).hexdigest()


@struct.dataclass
class _Before:
  kernel: jax.Array
  trace: jax.Array


@struct.dataclass
class _After:  # a library upgrade that reorders two same-shape fields
  trace: jax.Array
  kernel: jax.Array


def test_restore_matches_by_name_not_leaf_order(tmp_path):
  a, b = np.arange(6.0, dtype=np.float32).reshape(2, 3), -np.arange(6.0, dtype=np.float32).reshape(2, 3)
  ckpt = checkpoints.Checkpointer(tmp_path)
  ckpt.save(1, _Before(kernel=jnp.asarray(a), trace=jnp.asarray(b)))
  ckpt.wait()
  zeros = jnp.zeros((2, 3), jnp.float32)
  restored = ckpt.restore(_After(trace=zeros, kernel=zeros), 1)
  ckpt.close()
  np.testing.assert_array_equal(restored.kernel, a)
  np.testing.assert_array_equal(restored.trace, b)
  # The old flat format keeps only the order: the same two checkpoints would load swapped.
  swapped = state_lib.from_leaves(_After(trace=zeros, kernel=zeros), [a, b])
  np.testing.assert_array_equal(swapped.trace, a)


def test_arrays_swapped_in_the_saved_tree_fail_their_checksums(tmp_path):
  state = _saved(tmp_path, steps=(10,))
  tree = checkpoints.named_leaves(state)
  one, two = "params.head.kernel", "opt_state.0.0.trace.head.kernel"  # same shape (64, 3)
  tree[one], tree[two] = tree[two], tree[one]
  tree = checkpoints._nest({k: checkpoints._plain(v) for k, v in tree.items()})
  step_dir = tmp_path / "checkpoints/10"
  (step_dir / checkpoints.STATE).rename(tmp_path / "original")
  writer = ocp.StandardCheckpointer()
  writer.save(step_dir / checkpoints.STATE, tree)
  writer.wait_until_finished()
  ckpt = checkpoints.Checkpointer(tmp_path / "checkpoints")
  with pytest.raises(UserError) as e:
    ckpt.restore(_state(seed=1), 10)
  assert str(e.value) == (f"checkpoint step 10 in {tmp_path / 'checkpoints'} is corrupt (array "
                          "params.head.kernel: checksum mismatch); there is no earlier "
                          "checkpoint: delete checkpoints/10 to start over")


def test_missing_extra_and_reshaped_arrays_are_named(tmp_path):
  _saved(tmp_path, steps=(10,))
  ckpt = checkpoints.Checkpointer(tmp_path / "checkpoints")
  wider = _state(**{"model.knobs.width": 8})
  deeper = _state(**{"model.knobs.depth": 2})
  no_momentum = _state(**{"optimizer.name": "sgd"})
  where = f"checkpoint step 10 in {tmp_path / 'checkpoints'}"
  for template, message in [
      (wider, f"{where}: array params.head.kernel is (64, 3) float32, this run's state has (8, 3) float32"),
      (deeper, f"{where} has no array opt_state.0.0.trace.hidden.1.bias, which this run's state has (3 more "
               "differ)"),
      (no_momentum, f"{where} has an array opt_state.0.0.trace.head.bias that this run's state lacks")]:
    with pytest.raises(UserError) as e:
      ckpt.restore(template, 10)
    assert str(e.value).startswith(message) and "\n" not in str(e.value), str(e.value)
  ckpt.close()


def test_garbled_bytes_name_step_and_array_and_offer_the_previous_step(tmp_path):
  _saved(tmp_path)
  target = _largest_file(tmp_path / "checkpoints/20")
  data = bytearray(target.read_bytes())
  for i in range(len(data) // 2, len(data) // 2 + 8):
    data[i] ^= 0xFF
  target.write_bytes(bytes(data))
  ckpt = checkpoints.Checkpointer(tmp_path / "checkpoints")
  with pytest.raises(UserError) as e:
    ckpt.restore(_state(), 20)
  message = str(e.value)
  prefix = f"checkpoint step 20 in {tmp_path / 'checkpoints'} is corrupt (array "
  suffix = "); the previous checkpoint is step 10: delete checkpoints/20 to resume from it"
  assert message.startswith(prefix) and message.endswith(suffix) and "\n" not in message, message
  name, reason = message[len(prefix):-len(suffix)].split(": ", 1)
  assert name in checkpoints.named_leaves(_state()) and reason in ("checksum mismatch", "unreadable"), message
  _assert_same(ckpt.restore(_state(seed=1), 10), _state())  # the previous step is intact
  ckpt.close()


def test_truncated_file_is_one_line_without_event_loop_noise(tmp_path, capfd):
  _saved(tmp_path)
  target = _largest_file(tmp_path / "checkpoints/20")
  target.write_bytes(target.read_bytes()[:100])
  ckpt = checkpoints.Checkpointer(tmp_path / "checkpoints")
  with pytest.raises(UserError) as e:
    ckpt.restore(_state(), 20)
  ckpt.close()
  time.sleep(1.0)  # TensorStore's late callbacks, if any, arrive after the restore raised
  message = str(e.value)
  assert "is corrupt (array " in message and ": unreadable" in message and "\n" not in message, message
  assert message.endswith("the previous checkpoint is step 10: delete checkpoints/20 to resume from it")
  err = capfd.readouterr().err
  assert "Event loop is closed" not in err and "Traceback" not in err, err[-2000:]


def _save_flat(directory: Path, state, step: int) -> None:
  """A checkpoint in the old format: the state's leaves as one flat list, Orbax's default item."""
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=True))
  manager.save(step, args=ocp.args.StandardSave({"leaves": state_lib.to_leaves(state)}))
  manager.wait_until_finished()
  manager.close()


def test_old_flat_checkpoint_is_refused_then_converted(tmp_path):
  state = _state()
  for step in (10, 20):
    _save_flat(tmp_path / "checkpoints", state, step)
  ckpt = checkpoints.Checkpointer(tmp_path / "checkpoints")
  with pytest.raises(UserError) as e:
    ckpt.restore(_state(seed=1), 20)
  ckpt.close()
  assert str(e.value) == (f"checkpoint step 20 in {tmp_path / 'checkpoints'} is in the old flat format "
                          "(arrays without names): convert it with "
                          f"`python -m experiments.convert_checkpoints {tmp_path}` or re-train")
  assert checkpoints.convert_flat(tmp_path / "checkpoints", _state(seed=1)) == [10, 20]
  assert (tmp_path / "checkpoints.flat/20/default").is_dir()
  ckpt = checkpoints.Checkpointer(tmp_path / "checkpoints")
  for step in (10, 20):
    _assert_same(ckpt.restore(_state(seed=2), step), state)
  ckpt.close()


def _train(workdir: Path, *extra):
  args = [sys.executable, "-m", "experiments.train", "--config", "experiments/configs/default.py:quick",
          "--workdir", str(workdir), "--config.data.name=synthetic", "--config.model.name=mlp",
          "--config.progress=none", *[f"--config.data.options.{k}={v}" for k, v in SYNTH.items()],
          "--config.data.options.num_train=None", "--config.training.batch_size=32",
          "--config.model.knobs.width=16", "--config.training.num_steps=20", "--config.eval.batch_size=48",
          "--config.eval.every_steps=10", *extra]
  return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def _garble(step_dir: Path) -> None:
  """Inverts the middle half of the checkpoint's largest file. (8 inverted bytes were not always caught:
  a flip inside a zstd block's raw literals decodes without error, as the frames carry no checksum.)"""
  target = _largest_file(step_dir)
  data = bytearray(target.read_bytes())
  for i in range(len(data) // 4, 3 * len(data) // 4):
    data[i] ^= 0xFF
  target.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
  """A finished 20-step run of `experiments.train` (checkpoints at steps 10 and 20)."""
  workdir = tmp_path_factory.mktemp("trained") / "run"
  out = _train(workdir)
  assert out.returncode == 0, out.stderr[-2000:]
  return workdir


def test_train_cli_on_a_garbled_checkpoint_is_one_error_line(trained_run, tmp_path):
  """An interrupted run (status `running`, as after a kill) whose latest checkpoint is garbled: exit 2 and
  stderr exactly one `error:` line; `load_run` (what `experiments.measure` restores through) refuses it
  the same way."""
  workdir = tmp_path / "run"
  shutil.copytree(trained_run, workdir)
  _garble(workdir / "checkpoints/20")
  meta = json.loads((workdir / "meta.json").read_text()) | {"status": "running"}
  (workdir / "meta.json").write_text(json.dumps(meta))
  out = _train(workdir)
  assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr[-2000:]
  assert out.stderr.startswith(f"error: checkpoint step 20 in {workdir / 'checkpoints'} is corrupt (array ")
  assert out.stderr.endswith("the previous checkpoint is step 10: delete checkpoints/20 to resume from it\n")
  with pytest.raises(UserError, match=r"^checkpoint step 20 in .* is corrupt \(array "):
    training.load_run(workdir)


def test_train_cli_leaves_a_finished_run_with_a_garbled_checkpoint_as_it_was(trained_run, tmp_path):
  """Running a finished run again (same config) with a garbled checkpoint: no traceback, and no file of
  the run directory changes (meta.json's status stays `done`)."""
  workdir = tmp_path / "run"
  shutil.copytree(trained_run, workdir)
  _garble(workdir / "checkpoints/20")
  before = {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()}
  out = _train(workdir)
  assert out.returncode in (0, 2) and "Traceback" not in out.stderr, out.stderr[-2000:]
  assert json.loads((workdir / "meta.json").read_text())["status"] == "done", out.stderr[-1000:]
  assert {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()} == before


def test_convert_command_turns_a_flat_run_into_a_named_one(trained_run, tmp_path):
  """`python -m experiments.convert_checkpoints RUN`: a run whose checkpoint is in the old flat format
  restores, after the command, to the same arrays (by name, verified)."""
  workdir = tmp_path / "run"
  shutil.copytree(trained_run, workdir)
  *_, state, step = training.load_run(workdir)
  shutil.rmtree(workdir / "checkpoints")
  _save_flat(workdir / "checkpoints", state, step)
  with pytest.raises(UserError, match="old flat format"):
    training.load_run(workdir)
  out = subprocess.run([sys.executable, "-m", "experiments.convert_checkpoints", str(workdir)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and "converted steps 20; step 20 restored by name and verified" in out.stdout, \
      out.stderr[-2000:]
  _assert_same(training.load_run(workdir)[3], state)


def test_unretrieved_read_errors_of_a_failed_restore_are_not_logged(caplog):
  """asyncio logs "Task exception was never retrieved" for each Orbax read a failed restore left behind
  (some 100 lines each, after the one-line error): dropped; asyncio's other records are kept."""
  checkpoints._drop_event_loop_noise()
  log = logging.getLogger("asyncio")
  with caplog.at_level(logging.ERROR, logger="asyncio"):
    log.error("Task exception was never retrieved\nfuture: <Task finished name='Task-88' "
              "coro=<async_deserialize() done> exception=ValueError('Error reading')>")
    log.error("Task exception was never retrieved\nfuture: <Task finished coro=<other_work() done>>")
    log.error("Unclosed client session")
  kept = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
  assert len(kept) == 2 and "other_work" in kept[0] and kept[1] == "Unclosed client session"
