"""Train and/or evaluate from a config.

  python -m victr_jax.main --config=configs/demo.py[:args] --workdir=DIR \
      [--config.key=value ...] [--mode=train|eval|train_and_eval|compile [--topology=v5e:8x8]]

A --config file that does not exist is the shipped config of that name (configs/few_shot.py
or few_shot.py: the repository's configs/, an installed wheel's victr_jax/configs/).

Runs unchanged on one CPU, on all local devices, and on every host of a pod (run the same
command on each host; on TPU pods jax.distributed initialises itself; elsewhere pass
--coordinator=HOST:PORT --num_processes=N --process_id=I).

The console shows progress lines, warnings and errors; -v also prints the config and the
libraries' INFO lines. A known failure (a bad config field, a non-finite loss, a full
disk) is one line `victr_jax.main: error: ...` and a non-zero exit status.
"""
import os
import re
import sys

from victr_jax import console

console.quiet_environment()  # before jax or tensorflow are imported

from absl import app, flags  # noqa: E402  pylint: disable=g-import-not-at-top
from ml_collections import config_flags  # noqa: E402  pylint: disable=g-import-not-at-top

_CONFIG = config_flags.DEFINE_config_file("config", None, "config file[:args]", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "work directory (checkpoints, metrics, results)")
_MODE = flags.DEFINE_enum("mode", "train_and_eval", ["train", "eval", "train_and_eval", "compile"],
                          "what to run; compile: compile the steps for --topology and report")
_TOPOLOGY = flags.DEFINE_string("topology", "local", "--mode=compile: a TPU slice libtpu knows "
                                "(v5e:8x8, v4:2x2x2, ...) or local")
_COORD = flags.DEFINE_string("coordinator", None, "multi-host: coordinator address HOST:PORT")
_NPROC = flags.DEFINE_integer("num_processes", 1, "multi-host: number of processes")
_PID = flags.DEFINE_integer("process_id", 0, "multi-host: this process's index")
flags.mark_flags_as_required(["config", "workdir"])


def _on_tpu_vm() -> bool:
  """A Cloud TPU VM, whose workers jax.distributed finds by itself. Its TPU_ACCELERATOR_TYPE
  names a slice ('v5litepod-16', 'v4-8'); elsewhere libtpu's initialisation may leave a
  warning text in that variable, which a child process must not read as a TPU."""
  if "cpu" == os.environ.get("JAX_PLATFORMS", "").strip():
    return False
  return (re.fullmatch(r"v\d\w*-\d+", os.environ.get("TPU_ACCELERATOR_TYPE", "")) is not None
          or os.environ.get("CLOUD_TPU_TASK_ID", "").isdigit())


def shipped_config_args(args: list[str]) -> list[str]:
  """args with a --config FILE[:args] that does not exist made the shipped config of that
  name (config_lib.shipped_config: `--config=configs/few_shot.py:...` runs from any
  directory with only the wheel installed); SystemExit(2) naming FILE when neither exists."""
  out = list(args)
  for i, a in enumerate(out):
    name, eq, value = a.partition("=")
    if name not in ("--config", "-config"):
      continue
    j = i if eq else i + 1
    if j >= len(out):
      break
    value = value if eq else out[j]
    if os.path.isfile(value.partition(":")[0]):
      continue
    from victr_jax import config_lib  # pylint: disable=g-import-not-at-top
    try:
      found = config_lib.shipped_config(value)
    except FileNotFoundError as e:
      print(f"victr_jax.main: error: --config: {e}", file=sys.stderr)
      sys.exit(2)
    out[j] = f"{name}={found}" if eq else found
  return out


def main(argv):
  del argv
  verbose = flags.FLAGS["verbosity"].present and flags.FLAGS.verbosity >= 0
  console.quiet_logging(verbose)
  import jax  # pylint: disable=g-import-not-at-top
  if _COORD.value:
    jax.distributed.initialize(_COORD.value, _NPROC.value, _PID.value)
  elif _on_tpu_vm():
    jax.distributed.initialize()
  from victr_jax import checkpointing, train  # pylint: disable=g-import-not-at-top
  if verbose:
    print(f"config:\n{_CONFIG.value}", flush=True)
  try:
    if _MODE.value == "compile":
      from victr_jax import compile_report  # pylint: disable=g-import-not-at-top
      sys.exit(compile_report.run(_CONFIG.value, _WORKDIR.value, _TOPOLOGY.value))
    train.run(_CONFIG.value, _WORKDIR.value, _MODE.value)
  except train.NonFiniteError as e:
    print(f"victr_jax.main: error: {e}", file=sys.stderr)
    sys.exit(1)
  except checkpointing.WriteError as e:
    print(f"victr_jax.main: error: {e}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    # The failed write leaves orbax's background event loops behind, which would print
    # a traceback each as the interpreter shuts down: leave without that shutdown.
    os._exit(1)  # pylint: disable=protected-access
  except ValueError as e:
    if "config field" in str(e):
      print(f"victr_jax.main: error: {e}", file=sys.stderr)
      sys.exit(2)
    raise


if __name__ == "__main__":
  from victr_jax import hostmem  # pylint: disable=g-import-not-at-top
  hostmem.ensure()  # XLA's step buffers on huge pages
  sys.modules.setdefault("triton", None)
  # -v alone is absl's -v 0 (INFO): the config and the libraries' INFO lines.
  args = sys.argv[:]
  for i, a in enumerate(args):
    if a == "-v" and not (i + 1 < len(args) and args[i + 1].lstrip("-").isdigit()):
      args[i] = "-v=0"
  app.run(main, argv=shipped_config_args(args))
