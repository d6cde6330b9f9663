"""Train and/or evaluate from a config.

  python -m victr_jax.main --config=configs/demo.py[:args] --workdir=DIR \
      [--config.key=value ...] [--mode=train|eval|train_and_eval|compile [--topology=v5e:8x8]]

Runs unchanged on one CPU, on all local devices, and on every host of a pod (run the same
command on each host; on TPU pods jax.distributed initialises itself; elsewhere pass
--coordinator=HOST:PORT --num_processes=N --process_id=I).
"""
import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

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


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  if _COORD.value:
    jax.distributed.initialize(_COORD.value, _NPROC.value, _PID.value)
  elif _on_tpu_vm():
    jax.distributed.initialize()
  from victr_jax import train  # pylint: disable=g-import-not-at-top
  logging.info("config:\n%s", _CONFIG.value)
  try:
    if _MODE.value == "compile":
      from victr_jax import compile_report  # pylint: disable=g-import-not-at-top
      sys.exit(compile_report.run(_CONFIG.value, _WORKDIR.value, _TOPOLOGY.value))
    train.run(_CONFIG.value, _WORKDIR.value, _MODE.value)
  except train.NonFiniteError as e:
    print(f"victr_jax.main: error: {e}", file=sys.stderr)
    sys.exit(1)
  except ValueError as e:
    if "config field" in str(e):
      print(f"victr_jax.main: error: {e}", file=sys.stderr)
      sys.exit(2)
    raise


if __name__ == "__main__":
  from victr_jax import hostmem  # pylint: disable=g-import-not-at-top
  hostmem.ensure()  # XLA's step buffers on huge pages
  sys.modules.setdefault("triton", None)
  flags.FLAGS.set_default("verbosity", -1)  # warnings and our progress lines; -v 0 for info
  app.run(main)
