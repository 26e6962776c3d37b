"""Compiled kernels for XLA:CPU, loaded as XLA FFI custom calls.

`onednn_conv.cc` runs 2-D float32 convolutions (forward and both gradients) through oneDNN, whose
kernels are faster on this kind of CPU than XLA:CPU's for small images (benchmarks/README.md). It is
built by `python -m research.backend.native build` (run by `make setup`: needs g++ and Debian's
`libdnnl-dev`) into `research/backend/native/_build/`. `research.backend.setup()` puts them to use;
without them (or with `RESEARCH_CONV=xla` or `RESEARCH_BACKEND=plain`) the library uses XLA's own
convolutions everywhere; so do GPU and TPU, which never see these kernels. `verdicts` checks each
convolution signature against XLA's once per machine before oneDNN runs it.
"""

import ctypes
import functools
import os
import subprocess
import sys
from pathlib import Path

from research.core.errors import UserError, choices_message

SOURCE = Path(__file__).with_name("onednn_conv.cc")
LIBRARY = Path(__file__).with_name("_build") / "libresearch_onednn.so"
CONV_ENV = "RESEARCH_CONV"  # onednn (default: when built) or xla
CONV_CHOICES = ("onednn", "xla")


def build(compiler: str = "g++") -> Path:
  """Compile `onednn_conv.cc` against jaxlib's FFI headers and the system's oneDNN; returns the path.

  Writes a new file and renames it over the old one, so a process that loaded the old one keeps it.
  """
  import jax.ffi

  LIBRARY.parent.mkdir(exist_ok=True)
  tmp = LIBRARY.with_suffix(f".{os.getpid()}.tmp")
  cmd = [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-isystem", jax.ffi.include_dir(), str(SOURCE),
         "-o", str(tmp), "-ldnnl"]
  subprocess.run(cmd, check=True)
  tmp.replace(LIBRARY)
  return LIBRARY


def conv_choice() -> str:
  """`$RESEARCH_CONV` (default onednn); an unknown value is a `UserError` naming the choices."""
  value = os.environ.get(CONV_ENV, "onednn")
  if value not in CONV_CHOICES:
    raise UserError(choices_message(f"${CONV_ENV}", value, CONV_CHOICES))
  return value


@functools.cache
def library() -> ctypes.CDLL | None:
  """The loaded kernels, or None when not built or their oneDNN is missing (then `why_not()` says)."""
  try:
    return ctypes.CDLL(str(LIBRARY))
  except OSError:
    return None


def why_not() -> str | None:
  """Why the oneDNN convolutions are off in this process, or None when they are on (for the records)."""
  if conv_choice() != "onednn":
    return f"{CONV_ENV}={conv_choice()}"
  if not LIBRARY.exists():
    return f"not built ({LIBRARY} missing: run `python -m research.backend.native build`)"
  if library() is None:
    return f"{LIBRARY} does not load (is Debian's libdnnl2 installed?)"
  return None


def onednn_version() -> str | None:
  lib = library()
  if lib is None:
    return None
  lib.ResearchOnednnVersion.restype = ctypes.c_char_p
  return lib.ResearchOnednnVersion().decode()


def main(argv: list[str]) -> int:
  if argv[1:] == ["build"]:
    print(build())
    return 0
  if argv[1:] == ["info"]:
    reason = why_not()
    print(f"oneDNN convolutions: {'on, oneDNN ' + onednn_version() if reason is None else 'off: ' + reason}")
    return 0
  print("usage: python -m research.backend.native build|info", file=sys.stderr)
  return 2
