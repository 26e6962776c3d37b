"""research.backend: the host allocator setting, the one switch and its settings, and import without side
effects."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Four rounds of malloc, touch, free of a 64 MB block; the page faults they cost. glibc serves such a block
# by mmap and unmaps it on free, so by default every round faults all 16,384 pages in again.
FAULTS = """
import ctypes, json, resource
from research.backend import xla
tuned = xla.tune_host_allocator()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
n = 64 << 20
def rounds(k):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(k):
    p = libc.malloc(n); libc.memset(p, 1, n); libc.free(p)
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
rounds(1)
print(json.dumps({"tuned": tuned, "faults": rounds(4)}))
"""


def _run(script: str, **env) -> subprocess.CompletedProcess:
  full = {k: v for k, v in os.environ.items() if k not in ("RESEARCH_HOST_MALLOC", "GLIBC_TUNABLES")}
  return subprocess.run([sys.executable, "-c", script], env=full | env, cwd=ROOT, capture_output=True,
                        text=True, timeout=120)


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_tuned_host_allocator_reuses_freed_memory():
  pages = 4 * (64 << 20) // 4096
  tuned = json.loads(_run(FAULTS, JAX_PLATFORMS="cpu").stdout)
  assert tuned["tuned"] and tuned["faults"] < pages // 100
  for env in ({"RESEARCH_HOST_MALLOC": "glibc"}, {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}):
    left = json.loads(_run(FAULTS, JAX_PLATFORMS="cpu", **env).stdout)
    assert not left["tuned"] and left["faults"] > pages // 2, env
  assert not json.loads(_run(FAULTS, JAX_PLATFORMS="cuda").stdout)["tuned"]  # accelerators: untouched
  message = "unknown $RESEARCH_HOST_MALLOC 'jemalloc'; valid choices: tuned, glibc"
  bad = _run(FAULTS, JAX_PLATFORMS="cpu", RESEARCH_HOST_MALLOC="jemalloc")
  assert bad.returncode != 0 and message in bad.stderr
  command = [sys.executable, "-m", "experiments.measure", "--workdir", "nowhere", "--sections", "x"]
  cli = subprocess.run(command, env=dict(os.environ, RESEARCH_HOST_MALLOC="jemalloc"), cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
  assert cli.returncode == 2 and cli.stderr.strip().splitlines() == [f"error: {message}"]


def test_importing_the_library_touches_no_device():
  """The allocator setting must come before JAX's threads allocate: no module may start a backend."""
  script = ("import research.curvature, research.measures, research.landscape, research.training, "
            "research.evaluators, research.evaluators.posthoc, experiments.measure\n"
            "from jax._src import xla_bridge\nprint(bool(xla_bridge._backends))")
  result = _run(script)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "False"


def test_importing_the_library_registers_nothing():
  """No import registers the oneDNN primitive or replaces a model operation; `setup()` does both (on
  CPU with the kernels built) and `describe()` says so; `RESEARCH_BACKEND=plain` does neither."""
  script = ("import json, research.models, research.training, research.evaluators, research.backend\n"
            "from research import backend\nfrom research.core import ops\n"
            "from research.backend.native import onednn_conv\n"
            "before = (onednn_conv.primitive.cache_info().currsize, ops.installed() == ops.PLAIN)\n"
            "backend.setup()\n"
            "print(json.dumps([before, onednn_conv.primitive.cache_info().currsize, backend.describe()]))")
  env = dict(RESEARCH_COMPILATION_CACHE="0", JAX_PLATFORMS="cpu")
  result = _run(script, **env)
  assert result.returncode == 0, result.stderr
  before, registered, described = json.loads(result.stdout)
  assert before == [0, True]
  assert described["choice"] == "auto" and described["max_pool_elementwise_gradient"]
  assert described["materialize_residual_stream"] and described["first_layer_taps"]
  assert described["compilation_cache"] is None and described["compiler_options"]
  from research.backend import native
  assert registered == (native.why_not() is None)
  assert described["convolutions"] == ("onednn" if native.why_not() is None else "xla")
  plain = _run(script, RESEARCH_BACKEND="plain", **env)
  before, registered, described = json.loads(plain.stdout)
  assert registered == 0 and described["choice"] == "plain" and described["convolutions"] == "xla"
  assert described["allocator"] == "as configured" and described["compiler_options"] == {}
  assert not (described["first_layer_taps"] or described["max_pool_elementwise_gradient"]
              or described["materialize_residual_stream"])


@pytest.mark.parametrize("name, value, choices", [("RESEARCH_BACKEND", "fast", "auto, plain"),
                                                  ("RESEARCH_CONV", "mkl", "onednn, xla")])
def test_a_bad_backend_setting_is_one_line(name, value, choices):
  command = [sys.executable, "-m", "experiments.measure", "--workdir", "nowhere", "--sections", "x"]
  cli = subprocess.run(command, env=dict(os.environ, **{name: value}), cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
  message = f"error: unknown ${name} {value!r}; valid choices: {choices}"
  assert cli.returncode == 2 and cli.stderr.strip().splitlines() == [message]
