"""`model.scan_layers`: the CLIP towers' blocks in one lax.scan against unrolled blocks.

  python benchmarks/scan_layers.py [--slices few_shot:v5e:2x2 k400:v5e:4x4] [--cpu B/32]

1. For each CONFIG:SLICE, the trainer's own train and eval programs (compile_report's
   `compile_steps`, through programs.py) compiled for the TPU slice with no chip, scanned
   and unrolled: memory per device (arguments + temporaries + outputs - aliased + code),
   temporaries alone, XLA's FLOPs per device of the train step (a scanned body is counted
   once by XLA, so the unrolled count is the real one) and the compile seconds of both
   programs. CONFIG is a module of configs/ with its default argument.
2. On this machine's CPU: the VicTR train step of each --cpu size (8 frames, batch 2, 16
   prompts, float32), scanned and unrolled in the same process, seconds per step and the
   ratio unrolled / scanned (> 1: scanning is faster).
"""
import argparse
import contextlib
import importlib
import io
import os
import sys
import time

sys.modules.setdefault("triton", None)
if __name__ == "__main__":  # XLA's step buffers on huge pages (victr_jax/hostmem.py)
  from victr_jax import hostmem  # pylint: disable=g-import-not-at-top
  hostmem.ensure()

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import median_time  # noqa: E402
from train_step import our_step  # noqa: E402
from victr_jax import clip, compile_report, models  # noqa: E402
from victr_jax.hlo import GIB, slice_devices  # noqa: E402


def compiled_figures(config, topology: str) -> dict:
  """Memory, FLOPs and compile seconds of a config's programs compiled for `topology`."""
  devices = slice_devices(topology)
  t0 = time.time()
  with contextlib.redirect_stdout(io.StringIO()):
    compiled, ctx = compile_report.compile_steps(config, devices, count_flops=False)
    rep = compile_report.build_report(config, topology, devices, compiled, ctx)
  jax.clear_caches()
  mem = rep["memory_bytes"]
  return {"memory_gib": (mem.get("total") or 0) / GIB,
          "temporaries_gib": (mem.get("temporaries") or 0) / GIB,
          "eval_memory_gib": (rep.get("eval_memory_bytes", {}).get("total") or 0) / GIB,
          "xla_tflops": rep["flops"].get("xla_per_device", 0.0) / 1e12,
          "compile_s": time.time() - t0, "fits": rep["fits"]}


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--slices", nargs="*", default=["few_shot:v5e:2x2", "k400:v5e:4x4"])
  p.add_argument("--cpu", nargs="*", default=["tiny", "B/32"])
  p.add_argument("--iters", type=int, default=3)
  args = p.parse_args()
  print(f"machine: {jax.devices()[0].device_kind}, {os.cpu_count()} CPU threads")
  if args.slices:
    print("\n1. compiled for a TPU slice (per device)")
    print(f"{'config':10s} {'slice':9s} {'blocks':9s} {'memory GiB':>10s} {'temps GiB':>9s} "
          f"{'eval GiB':>8s} {'XLA TFLOP':>9s} {'compile s':>9s}")
  for spec in args.slices:
    name, topology = spec.split(":", 1)
    for scan in (False, True):
      config = importlib.import_module(f"configs.{name}").get_config("")
      config.model.scan_layers = scan
      f = compiled_figures(config, topology)
      print(f"{name:10s} {topology:9s} {'scanned' if scan else 'unrolled':9s} "
            f"{f['memory_gib']:10.2f} {f['temporaries_gib']:9.2f} {f['eval_memory_gib']:8.2f} "
            f"{f['xla_tflops']:9.3f} {f['compile_s']:9.1f}", flush=True)
  if args.cpu:
    print("\n2. VicTR train step on this CPU (8 frames, batch 2, 16 prompts, float32)")
    print(f"{'size':6s} {'unrolled s':>10s} {'scanned s':>9s} {'unrolled/scanned':>16s}")
  rng = np.random.default_rng(0)
  tokens = clip.trim_tokens(clip.tokenize([f"a person doing action {i}" for i in range(16)]))
  labels = np.arange(2) % 16
  for size in args.cpu:
    secs = {}
    for scan in (False, True):
      cfg = models.get_config(size)
      cfg.num_frames, cfg.scan_layers = 8, scan
      s = models.clip_config_of(cfg).image_size
      frames = rng.standard_normal((2, 8, s, s, 3)).astype(np.float32)
      run, _, _ = our_step(cfg, frames, tokens, labels)
      secs[scan] = median_time(run, args.iters)
      jax.clear_caches()
    print(f"{size:6s} {secs[False]:10.3f} {secs[True]:9.3f} {secs[False] / secs[True]:16.2f}",
          flush=True)


if __name__ == "__main__":
  main()
