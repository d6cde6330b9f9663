"""Host memory for CPU runs: transparent huge pages under glibc's malloc.

XLA:CPU takes each step's temporary buffer from malloc (2.8 GiB for the B/32 mean-pool step of
`benchmarks/train_step.py`). glibc serves a request that large with a fresh `mmap` and gives it
back with `munmap` when the step ends, so every step touches every one of its 4 KiB pages anew:
on a 2-core AMD EPYC (docs/cpu_performance.md) that step took 725k minor page faults and 1.45 s of
kernel time out of 5.4 s. glibc's tunable `glibc.malloc.hugetlb=1` (glibc 2.35 and later)
makes malloc ask the kernel for transparent huge pages on those mappings (`madvise`): the
faults drop to about 1.5k per step and the step to 4.9 s (PyTorch's step gains about as much;
`benchmarks/train_step.py` runs both sides under the same setting).

glibc reads its tunables once, when the process starts, so `ensure()` starts the program again
(`execve`, same arguments) with the tunable added to `GLIBC_TUNABLES` and prints one line
saying so. The quick-start scripts export it before Python starts (`scripts/env.sh` evaluates
`python -m victr_jax.hostmem`, which prints the `export` line), so they never restart.
`VICTR_HOST_HUGEPAGES=0` turns this off; a `glibc.malloc.hugetlb` value already in
`GLIBC_TUNABLES` is left as it is. Elsewhere (macOS, musl, glibc before 2.35, a kernel with
transparent huge pages set to `never`) nothing changes.
"""
import os
import shlex
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
OPT_OUT = "VICTR_HOST_HUGEPAGES"
_THP = "/sys/kernel/mm/transparent_hugepage/enabled"


def glibc_version() -> tuple[int, int] | None:
  """(major, minor) of the glibc this process runs on, or None when it is not glibc."""
  try:
    name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    major, minor = version.split(".")[:2]
    return (int(major), int(minor)) if name == "glibc" else None
  except (AttributeError, ValueError, OSError):
    return None


def thp_mode(path: str = _THP) -> str | None:
  """The kernel's transparent-huge-page mode (`always`, `madvise`, `never`), None if unknown."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError:
    return None
  start, end = text.find("["), text.find("]")
  return text[start + 1:end] if 0 <= start < end else None


def tuned_environ(environ, glibc: tuple[int, int] | None, thp: str | None) -> dict | None:
  """The environment to restart with, or None when there is nothing to change.

  Args:
    environ: the current environment (a mapping).
    glibc: `glibc_version()`; thp: `thp_mode()`.
  """
  if environ.get(OPT_OUT, "1") == "0" or glibc is None or glibc < (2, 35):
    return None
  if thp not in ("always", "madvise"):
    return None
  current = environ.get("GLIBC_TUNABLES", "")
  if "glibc.malloc.hugetlb=" in current:
    return None
  env = dict(environ)
  env["GLIBC_TUNABLES"] = f"{current}:{TUNABLE}" if current else TUNABLE
  return env


def wanted_environ() -> dict | None:
  """`tuned_environ` for this process and machine: what `ensure()` would restart with."""
  return tuned_environ(os.environ, glibc_version(), thp_mode())


def ensure() -> None:
  """Restarts this program once with `glibc.malloc.hugetlb=1` where that applies (see the
  module docstring), silently (-v on the command line says so). Call it first thing
  under `if __name__ == "__main__":`."""
  env = wanted_environ()
  if env is None or not getattr(sys, "orig_argv", None):
    return
  if "-v" in sys.argv or any(a.startswith(("-v=", "--verbosity")) for a in sys.argv):
    print(f"[hostmem] restarting with GLIBC_TUNABLES={env['GLIBC_TUNABLES']} (huge pages for "
          f"XLA's step buffers; {OPT_OUT}=0 turns this off)", file=sys.stderr, flush=True)
  sys.stdout.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def export_line() -> str:
  """A shell `export GLIBC_TUNABLES=...` line where `ensure()` would restart, else ''."""
  env = wanted_environ()
  return f"export GLIBC_TUNABLES={shlex.quote(env['GLIBC_TUNABLES'])}" if env else ""


if __name__ == "__main__":
  print(export_line())
