"""Nothing a user types or a disk does loses a run or prints a traceback (issue 20): config values out of
their domain are one-line errors before anything is written, a finished run is never rewritten, the
entry point turns environment problems into one `error:` line, divergence names what went non-finite.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import helpers
import hypothesis
import ml_collections
import pytest
from hypothesis import strategies as st

from research import training
from research.core import rundir
from research.core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SYNTH = dict(synthetic_train=64, synthetic_test=32, image_shape=(4, 4, 1), num_classes=3, valid_size=0,
             eval_train_size=32)


def tiny_config(**changes):
  changes = {"eval.batch_size": 32, "log_every": 2} | changes
  log_every = changes.pop("log_every")
  return helpers.tiny_config(SYNTH, width=8, num_steps=6, eval_every=3, log_every=log_every, **changes)


def _snapshot(workdir: Path) -> dict:
  """{relative path: bytes} of every file under `workdir`."""
  return {str(p.relative_to(workdir)): p.read_bytes() for p in sorted(workdir.rglob("*")) if p.is_file()}


def _cli(*args: str) -> subprocess.CompletedProcess:
  synth = [f"--config.data.options.{k}={v}" for k, v in SYNTH.items()]
  base = [sys.executable, "-m", "experiments.train", "--config", "experiments/configs/default.py:quick",
          "--config.data.name=synthetic", "--config.model.name=mlp", "--config.progress=none", *synth,
          "--config.data.options.num_train=None", "--config.training.batch_size=16",
          "--config.training.num_steps=4", "--config.training.num_epochs=0", "--config.eval.every_epochs=0",
          "--config.eval.batch_size=32", "--config.model.knobs.width=8"]
  return subprocess.run(base + list(args), capture_output=True, text=True, cwd=ROOT, timeout=300)


def _error_lines(out: subprocess.CompletedProcess) -> list[str]:
  assert "Traceback" not in out.stderr, out.stderr[-2000:]
  return [line for line in out.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("key, value, message", [
    ("eval.batch_size", 0, "config key 'eval.batch_size' must be >= 1, got 0"),
    ("eval.batch_size", -1, "config key 'eval.batch_size' must be >= 1, got -1"),
    ("log_every", 0, "config key 'log_every' must be >= 1, got 0"),
    ("checkpoint_every", -1, "config key 'checkpoint_every' must be >= 0 (0: at each evaluation), got -1"),
    ("eval.every_steps", -5, "config key 'eval.every_steps' must be >= 0 (0: off), got -5"),
    ("keep_checkpoints", 0, "config key 'keep_checkpoints' must be >= 1, got 0"),
    ("schedule.lr", math.inf, "config key 'schedule.lr' must be finite, got inf"),
    ("schedule.lr", -0.1, "config key 'schedule.lr' must be >= 0 (0: the parameters stay at "
                          "initialization), got -0.1"),
    ("optimizer.b2", 1.5, "config key 'optimizer.b2' must be in [0, 1), got 1.5"),
    ("loss.label_smoothing", math.nan, "config key 'loss.label_smoothing' must be finite, got nan"),
    ("training.batch_size", 2**40, "config key 'training.batch_size' must be < 2147483648"),
])
def test_out_of_range_values_are_one_line_errors_before_any_write(tmp_path, key, value, message):
  with pytest.raises(UserError) as e:
    training.train_and_evaluate(tiny_config(**{key: value}), tmp_path / "run")
  assert str(e.value).startswith(message) and "\n" not in str(e.value)
  assert not (tmp_path / "run").exists()


def test_evaluator_sections_have_ranges_too(tmp_path):
  for key, value, message in [("curvature.tol", -1.0, "config key 'curvature.tol' must be > 0"),
                              ("landscape.span", math.inf, "config key 'landscape.span' must be finite"),
                              ("compression.sparsities", (0.5, 1.5), "compression.sparsities"),
                              ("measures.rho", -0.1, "config key 'measures.rho' must be > 0")]:
    section = key.split(".")[0]
    switch = {f"{section}.at_end": True}
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
      training.train_and_evaluate(tiny_config(**switch, **{key: value}), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_workdir_that_is_a_file_is_one_error_line(tmp_path):
  workdir = tmp_path / "a_file"
  workdir.write_text("not a directory")
  out = _cli("--workdir", str(workdir))
  lines = _error_lines(out)
  assert out.returncode == 2 and len(lines) == 1 and str(workdir) in lines[0], out.stderr[-2000:]
  assert workdir.read_text() == "not a directory"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("finished") / "run"
  summary = training.train_and_evaluate(tiny_config(), workdir)
  assert summary["status"] == "done"
  return workdir, summary


def test_finished_run_with_same_config_returns_its_summary_and_writes_nothing(finished_run):
  workdir, summary = finished_run
  before = _snapshot(workdir)
  again = training.train_and_evaluate(tiny_config(), workdir)
  assert again["status"] == "done" and again["step"] == summary["step"]
  assert again["final"] == json.loads(json.dumps(summary["final"]))
  assert _snapshot(workdir) == before


def test_display_settings_may_differ_on_a_finished_run(finished_run):
  workdir, summary = finished_run
  before = _snapshot(workdir)
  again = training.train_and_evaluate(tiny_config(progress="lines", tensorboard=True), workdir)
  assert again["step"] == summary["step"] and _snapshot(workdir) == before


def test_finished_run_without_checkpoints_refuses_another_config(tmp_path):
  workdir = tmp_path / "run"
  training.train_and_evaluate(tiny_config(), workdir)
  for p in sorted((workdir / "checkpoints").rglob("*"), reverse=True):
    p.rmdir() if p.is_dir() else p.unlink()
  (workdir / "checkpoints").rmdir()
  before = _snapshot(workdir)
  with pytest.raises(UserError, match=r"holds a finished run \(done\) with another config \(differs in "
                                      r"schedule.lr\)") as e:
    training.train_and_evaluate(tiny_config(**{"schedule.lr": 0.5}), workdir)
  assert "\n" not in str(e.value) and "--force" in str(e.value)
  assert _snapshot(workdir) == before


def test_failed_resume_of_a_finished_run_keeps_its_records(tmp_path):
  workdir = tmp_path / "run"
  training.train_and_evaluate(tiny_config(), workdir)
  for p in (workdir / "checkpoints").rglob("*"):
    if p.is_file():
      p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])  # every checkpoint file truncated
  before = _snapshot(workdir)
  for config in (tiny_config(), tiny_config(**{"training.num_steps": 12})):
    try:
      training.train_and_evaluate(config, workdir)
    except UserError:
      pass
    assert json.loads((workdir / "meta.json").read_text())["status"] == "done"
    assert _snapshot(workdir) == before


def test_display_settings_may_differ_on_resume_and_are_recorded(tmp_path):
  workdir = tmp_path / "run"
  training.train_and_evaluate(tiny_config(), workdir)
  meta = json.loads((workdir / "meta.json").read_text())
  rundir.write_json_atomic(workdir / "meta.json", meta | {"status": "running"})  # as if killed at the end
  summary = training.train_and_evaluate(tiny_config(progress="lines"), workdir)
  assert summary["status"] == "done"
  meta = json.loads((workdir / "meta.json").read_text())
  assert meta["resumed"][-1]["changed"] == {"progress": ["none", "lines"]}


def test_force_moves_the_old_run_aside(tmp_path):
  workdir = tmp_path / "run"
  training.train_and_evaluate(tiny_config(), workdir)
  before = _snapshot(workdir)
  summary = training.train_and_evaluate(tiny_config(**{"schedule.lr": 0.05}), workdir, force=True)
  assert summary["status"] == "done"
  assert json.loads((workdir / "config.json").read_text())["schedule"]["lr"] == 0.05
  (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
  assert _snapshot(aside) == before


def test_divergence_names_what_went_non_finite_and_the_learning_rate(tmp_path):
  c = tiny_config(**{"schedule.lr": 1e30, "loss.name": "mse", "schedule.name": "linear",
                     "schedule.final_lr_fraction": 0.5})
  summary = training.train_and_evaluate(c, tmp_path / "run")
  assert summary["status"] == "diverged"
  d = summary["divergence"]
  assert d["step"] == summary["diverged_step"] and d["non_finite"]
  assert set(d["non_finite"]) <= {"loss", "grad_norm", "param_norm", "update_norm"}
  lr_at_step = 1e30 * (1 - 0.5 * (d["step"] - 1) / 6)  # the schedule at the step's optimizer count
  assert math.isclose(d["lr"], lr_at_step, rel_tol=1e-5)
  meta = json.loads((tmp_path / "run" / "meta.json").read_text())
  assert meta["status"] == "diverged" and meta["divergence"] == d


def test_train_entry_point_prints_the_divergence(tmp_path):
  out = _cli("--workdir", str(tmp_path / "run"), "--config.schedule.lr=1e30", "--config.loss.name=mse")
  assert out.returncode == 3, out.stderr[-2000:]
  (line,) = [x for x in out.stdout.splitlines() if x.startswith("diverged")]
  assert line.startswith("diverged: non-finite ") and " at step " in line and "(learning rate 1e+30)" in line


def test_force_flag_on_the_entry_point(tmp_path):
  workdir = tmp_path / "run"
  assert _cli("--workdir", str(workdir)).returncode == 0
  out = _cli("--workdir", str(workdir), "--config.schedule.lr=0.02")
  lines = _error_lines(out)
  assert out.returncode == 2 and len(lines) == 1 and "--force" in lines[0], out.stderr[-2000:]
  out = _cli("--workdir", str(workdir), "--config.schedule.lr=0.02", "--force")
  assert out.returncode == 0, out.stderr[-2000:]
  assert sorted(p.name.split("-")[0] for p in tmp_path.iterdir()) == ["run", "run.replaced"]


# Values a user might type for a key: wrong types, signs, zeros, infinities, huge values.
_PERTURBED_KEYS = ("eval.batch_size", "log_every", "checkpoint_every", "eval.every_steps", "keep_checkpoints",
                   "schedule.lr", "training.batch_size", "optimizer.momentum", "optimizer.weight_decay",
                   "loss.label_smoothing", "training.chunk_size", "optimizer.sam.rho", "seed",
                   "data.augment.crop_padding", "eval.patience", "optimizer.grad_clip_norm")
_VALUES = st.one_of(st.sampled_from([0, -1, 1, 2, 3, 2**31, 2**63, -2**40, 0.0, -0.5, 0.5, 1.0, 1e300,
                                     math.inf, -math.inf, math.nan, True, "1", None, (), [1]]),
                    st.integers(-5, 40), st.floats(allow_nan=True, allow_infinity=True))


def _with_value(config, key: str, value):
  """`config` with `key` set to `value` of any type, as a config file or JSON could hold it (a
  ConfigDict's own assignment refuses some types before validation sees them)."""
  raw = config.to_dict()
  *path, last = key.split(".")
  section = raw
  for part in path:
    section = section[part]
  section[last] = value
  return ml_collections.ConfigDict(raw)


@hypothesis.settings(max_examples=40, deadline=None, derandomize=True,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(key=st.sampled_from(_PERTURBED_KEYS), value=_VALUES)
def test_perturbed_config_is_a_clean_run_or_one_error_line(tmp_path, finished_run, key, value):
  workdir, _ = finished_run
  existing = _snapshot(workdir)
  config = _with_value(tiny_config(), key, value)
  for target in (workdir, tmp_path / f"new-{abs(hash((key, repr(value))))}"):
    try:
      summary = training.train_and_evaluate(config, target)
    except UserError as e:
      assert "\n" not in str(e) and str(e)
      hypothesis.event("error")
    else:
      assert summary["status"] in ("done", "diverged", "early_stopped")
      hypothesis.event(f"run {summary['status']}")
    assert _snapshot(workdir) == existing
