"""Where a train step's time goes: XLA's per-op profile of one jitted step on this machine.

  python benchmarks/profile_step.py [--size B/32] [--model mean_pool] [--scan_layers]
      [--dtype float32] [--frames 8] [--batch 2] [--prompts 16] [--top 20]

Runs the step of benchmarks/train_step.py (random weights and frames) under
`jax.profiler`, reads the trace (the XSpace protobuf that TensorFlow's profiler package
parses), and sums the time XLA's worker threads spent in each compiled operation (a
fusion, a dot, a copy). Prints the share of each kind of operation (the name without its
number: `ynn_fusion` are the matmuls, `copy_bitcast_fusion` layout copies with whatever
XLA fused into them), then the slowest single operations with their shape, the number of
instructions fused into them and the model code they come from (XLA's op_name metadata).

What it found (a 2-core AMD EPYC, B/32 mean-pool step, float32): with the
towers' blocks unrolled, about a third of the worker time is in `copy_bitcast_fusion`s of
one activation each ((768, 800) for the image tower) that hold 500 to 800 instructions:
XLA's CPU fusion copies the backward pass's residual-stream gradient, an elementwise chain
through every block above, into every block's weight-gradient transposes, so that work
grows with the square of the depth. `model.scan_layers` (the blocks in one `lax.scan`)
stops it.
The trace shows only XLA's own work, so the script also prints the kernel's share of a
step (system time and minor page faults, from getrusage): before huge pages
(victr_jax/hostmem.py) it was 725k faults and 1.45 s of a 5.4 s step, faulting in the
step's 2.8 GiB temporary buffer, which malloc maps afresh each step.
"""
import argparse
import collections
import glob
import os
import re
import resource
import sys
import tempfile
import time

if __name__ == "__main__":  # XLA's step buffers on huge pages (victr_jax/hostmem.py)
  from victr_jax import hostmem  # pylint: disable=g-import-not-at-top
  hostmem.ensure()

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step import our_step  # noqa: E402  pylint: disable=g-import-not-at-top

from victr_jax import clip, models  # noqa: E402  pylint: disable=g-import-not-at-top

_INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\S+) .*?calls=%([\w.\-]+)")
_OPNAME = re.compile(r'op_name="([^"]*)"')


def fusion_facts(hlo: str) -> dict:
  """{instruction name: (shape, fused instruction count, op_name)} of a compiled module."""
  bodies, cur = {}, None
  for line in hlo.splitlines():
    if line.startswith("%") and "{" in line and "=" not in line.split("(")[0]:
      cur = line[1:].split(" ")[0]
      bodies[cur] = 0
    elif cur and line.startswith("}"):
      cur = None
    elif cur and " = " in line and " parameter(" not in line:
      bodies[cur] += 1
  out = {}
  for line in hlo.splitlines():
    m = _INSTR.match(line)
    if m:
      name, shape, called = m.groups()
      op = _OPNAME.search(line)
      out[name] = (shape, bodies.get(called, 0), op.group(1) if op else "")
  return out


def op_times(trace_dir: str, steps: int) -> collections.Counter:
  """Seconds per step of each compiled operation on XLA's worker threads."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))[-1]
  space = xplane_pb2.XSpace()
  with open(path, "rb") as f:
    space.ParseFromString(f.read())
  times = collections.Counter()
  for plane in space.planes:
    names = {k: v.name for k, v in plane.event_metadata.items()}
    for line in plane.lines:
      if not line.name.startswith("tf_XLA"):
        continue
      for e in line.events:
        name = names.get(e.metadata_id, "?")
        if not name.startswith("ThunkExecutor"):
          times[name] += e.duration_ps * 1e-12 / steps
  return times


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--size", default="B/32")
  p.add_argument("--model", default="mean_pool", choices=("mean_pool", "victr"))
  p.add_argument("--scan_layers", action="store_true")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--frames", type=int, default=8)
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--prompts", type=int, default=16)
  p.add_argument("--steps", type=int, default=2)
  p.add_argument("--top", type=int, default=20)
  args = p.parse_args()
  cfg = models.get_config(args.size)
  cfg.name, cfg.num_frames, cfg.dtype = args.model, args.frames, args.dtype
  cfg.scan_layers = args.scan_layers
  s = models.clip_config_of(cfg).image_size
  frames = np.random.default_rng(0).standard_normal(
      (args.batch, args.frames, s, s, 3)).astype(np.float32)
  tokens = clip.tokenize([f"a person doing action {i}" for i in range(args.prompts)])
  run, _, compiled = our_step(cfg, frames, tokens, np.arange(args.batch) % args.prompts)
  facts = fusion_facts(compiled.as_text())
  run()
  before, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
  run()
  after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t
  with tempfile.TemporaryDirectory() as d:
    jax.profiler.start_trace(d)
    for _ in range(args.steps):
      run()
    jax.profiler.stop_trace()
    times = op_times(d, args.steps)
  total = sum(times.values())
  print(f"{args.model} {args.size} train step, T={args.frames}, batch {args.batch}, "
        f"{args.dtype}, blocks {'scanned' if args.scan_layers else 'unrolled'}: "
        f"{total:.2f} s of worker-thread time per step on {os.cpu_count()} CPU threads")
  print(f"one step outside the profiler: {wall:.2f} s wall, "
        f"{after.ru_stime - before.ru_stime:.2f} s system time (kernel), "
        f"{after.ru_minflt - before.ru_minflt} minor page faults; GLIBC_TUNABLES="
        f"{os.environ.get('GLIBC_TUNABLES', '(unset)')}, temporary buffer "
        f"{compiled.memory_analysis().temp_size_in_bytes / 2**30:.2f} GiB")
  kinds = collections.Counter()
  for name, t in times.items():
    kinds[re.sub(r"\.\d+$", "", name)] += t
  print("\nby kind of operation:")
  for kind, t in kinds.most_common(12):
    print(f"  {t:8.3f} s {100 * t / total:5.1f}%  {kind}")
  print(f"\nslowest {args.top} operations (shape, instructions fused, where from):")
  for name, t in times.most_common(args.top):
    shape, n, op = facts.get(name, ("?", 0, ""))
    print(f"  {t:8.3f} s  {name}  {shape}  {n}  {op[-90:]}")


if __name__ == "__main__":
  main()
