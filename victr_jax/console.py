"""What a command prints: its own progress lines, warnings and errors, and not the
libraries' INFO chatter (orbax, absl, clu, TensorFlow and XLA's C++ logs) nor libtpu's
initialisation errors on a host without a TPU.

  console.quiet_environment()   # first thing in an entry point, before jax or tensorflow
  console.quiet_logging(verbose)  # once flags are parsed: INFO only when verbose

`verbose` (victr_jax.main's -v) brings all of it back, with the config printed first.
"""
import glob
import importlib.util
import logging as py_logging
import os
import sys

# Python loggers whose INFO lines are the libraries' bookkeeping, not progress.
_CHATTY = ("absl", "orbax", "jax", "clu", "tensorflow", "tensorflow_datasets", "grain",
           "etils", "fsspec", "gcsfs", "urllib3", "matplotlib")


def has_tpu() -> bool:
  """Whether this host has TPU chips (the device files libtpu opens)."""
  return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def _accelerator_plugins() -> list[str]:
  """The jax plugins installed for accelerators other than the TPU (jax[cuda12], ROCm ...)."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  return [e.name for e in metadata.entry_points(group="jax_plugins") if "tpu" not in e.name]


def quiet_environment() -> None:
  """Sets, unless already set: TF_CPP_MIN_LOG_LEVEL=2 (TensorFlow and XLA C++ INFO and
  WARNING lines), GRPC_VERBOSITY=ERROR, and on a host with libtpu installed (the test
  extra has it, for --mode=compile) but no TPU chips and no GPU plugin JAX_PLATFORMS=cpu,
  so libtpu does not try to initialise and print its INVALID_ARGUMENT errors. Runs before
  tensorflow is imported, and before jax starts a backend."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # its INFO notice ignores the level above
  if ("JAX_PLATFORMS" not in os.environ and importlib.util.find_spec("libtpu")
      and not has_tpu() and not _accelerator_plugins()):  # a GPU host keeps jax's choice
    os.environ["JAX_PLATFORMS"] = "cpu"
    if "jax" in sys.modules:  # imported already (by a package __init__): before its backends
      sys.modules["jax"].config.update("jax_platforms", "cpu")


class _NotOrbax(py_logging.Filter):
  """Drops orbax's records: its background threads log each failed write as an ERROR with
  a traceback, which the checkpointer turns into one error line (checkpointing.WriteError)."""

  def filter(self, record) -> bool:
    return "/orbax/" not in (record.pathname or "")


def quiet_logging(verbose: bool = False) -> None:
  """absl and the libraries' Python loggers at WARNING (INFO when verbose), orbax's
  records off unless verbose."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  level = py_logging.INFO if verbose else py_logging.WARNING
  logging.set_verbosity(logging.INFO if verbose else logging.WARNING)
  for name in _CHATTY:
    py_logging.getLogger(name).setLevel(level)
  if not verbose:
    py_logging.getLogger("absl").addFilter(_NotOrbax())  # orbax logs through absl
    sys.unraisablehook = _without_closed_loops(sys.unraisablehook)


def _without_closed_loops(hook):
  """sys.unraisablehook, less "RuntimeError: Event loop is closed": when a checkpoint write
  fails, TensorStore completes each pending write on orbax's already closed event loop and
  reports that error once per write (dozens); the write's own error is reported once."""

  def unraisablehook(info):
    if isinstance(info.exc_value, RuntimeError) and str(info.exc_value) == (
        "Event loop is closed"):
      return
    hook(info)

  return unraisablehook


def say(msg: str) -> None:
  """A progress line on the console (process 0 decides whether to call it)."""
  print(msg, flush=True)
