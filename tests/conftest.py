"""Shared test fixtures: `float64` (opt in per module with
`pytestmark = pytest.mark.usefixtures("float64")`) enables jax_enable_x64 for the module's tests."""

import jax
import pytest


@pytest.fixture(scope="module")
def float64():
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", False)


@pytest.fixture(autouse=True)
def plain_ops():
  """Each test starts and ends with the operations `research.core.ops` had before it: an entry point
  called in-process (`experiments.measure.main`) switches the backend on for the whole process."""
  from research.core import ops

  before = ops.installed()
  yield
  ops.install(**before)


@pytest.fixture(scope="session")
def quick_reference(tmp_path_factory):
  """(run directory, lambda_max/trace output, measures output) of the 1-process reference of the
  multi-process tests (tests/jax_processes.py), made once per session."""
  import jax_processes

  return jax_processes.reference_run(tmp_path_factory.mktemp("quick-1process"))
