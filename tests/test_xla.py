"""research.xla: the host allocator setting and import without side effects."""

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
from research import xla
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
