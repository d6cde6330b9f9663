"""Checkpoint writing in one process: our Checkpointer against orbax's default handler.

  python benchmarks/checkpoint_save.py [--model demo] [--devices 8] [--saves 3]

The parameters of a VicTR model (--model: a models preset; random, replicated over
--devices simulated CPU devices, as a data-parallel run holds them) are saved --saves
times, each waited for, twice in this process:
  orbax     a plain orbax CheckpointManager with its default array handler, which splits
            every replicated array among its replicas (replica-parallel writing, meant for
            several hosts; it slices each array on device, a program per shape and device);
  ours      checkpointing.Checkpointer, which writes replica-parallel only when there are
            several processes, and seals each step with checksums.
Prints the seconds of each save and the ratio orbax / ours of the first save and of the
later ones (a ratio above 1: ours is faster).
"""
import argparse
import os
import platform
import sys
import tempfile
import time


def _args():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", default="demo", help="models preset (tiny, demo, B/32, ...)")
  p.add_argument("--devices", type=int, default=8, help="simulated CPU devices")
  p.add_argument("--saves", type=int, default=3)
  return p.parse_args()


def main():
  a = _args()
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={a.devices}")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from victr_jax import checkpointing, models  # pylint: disable=g-import-not-at-top

  model = models.build_model(models.get_config(a.model))
  params = models.init(model, num_frames=2, n=4, m=4)["params"]
  repl = jax.sharding.NamedSharding(jax.sharding.Mesh(jax.devices(), ("data",)),
                                    jax.sharding.PartitionSpec())
  params = jax.device_put(params, repl)
  leaves = jax.tree.leaves(params)
  print(f"{a.model}: {sum(x.size for x in leaves) / 1e6:.1f}M parameters in {len(leaves)} "
        f"arrays, replicated over {len(jax.devices())} CPU devices; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores")

  def orbax_default(d):
    checkpointing.set_replica_parallel(True)  # orbax's default on CPU and TPU
    m = ocp.CheckpointManager(d, options=ocp.CheckpointManagerOptions(
        enable_async_checkpointing=True))
    def save(step):
      m.save(step, args=ocp.args.StandardSave(params))
      m.wait_until_finished()
    return save

  def ours(d):
    ck = checkpointing.Checkpointer(d, keep=a.saves)
    def save(step):
      ck.save(step, params, {"note": "benchmark"})
      ck.wait()
    return save

  seconds = {}
  with tempfile.TemporaryDirectory() as tmp:
    for name, make in (("orbax", orbax_default), ("ours", ours)):
      save = make(os.path.join(tmp, name))
      seconds[name] = []
      for step in range(a.saves):
        t = time.perf_counter()
        save(step)
        seconds[name].append(time.perf_counter() - t)
      print(f"{name:6s} " + " ".join(f"{s:.2f}" for s in seconds[name]) + " s")
  o, w = seconds["orbax"], seconds["ours"]
  later = lambda s: sum(s[1:]) / max(len(s) - 1, 1)
  print(f"ratio orbax / ours: first save {o[0] / w[0]:.1f}x, later saves "
        f"{later(o) / later(w):.1f}x")


if __name__ == "__main__":
  main()
