"""The pod plan: every shipped paper setting compiled for TPU slices on this host.

  .venv/bin/python benchmarks/pod_plan.py [--rows k400_l14,zero_shot_b16] [--out plan.md]

For each setting, the smallest v5e and v4 slice that holds it is found by compiling
(victr_jax/compile_report.py, libtpu; nothing runs on a chip): first without remat, and
with `model.remat` only where the step would not fit without it. K400 L/14 is also
compiled on a 256-chip v5e slice at the same per-chip batch (weak scaling). Prints, and
writes to --out, a markdown table: setting, model, frames, global batch, slice, memory /
HBM, roofline step time and its bound, clips/s per chip, MFU bound, collective bytes per
step, and (model + recompute) / XLA FLOPs. Each compile of an L/14 step takes minutes on
a 2-core CPU.
"""
import argparse
import contextlib
import importlib
import io
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from victr_jax import compile_report  # noqa: E402  pylint: disable=g-import-not-at-top

# (key, config module, config argument, global batch, description)
SETTINGS = (
    ("k400_l14", "k400", "model=L/14,frames=8", 256, "Kinetics-400, L/14"),
    ("zero_shot_b16", "zero_shot", "model=B/16", 256, "zero-shot (K400 training), B/16"),
    ("few_shot_b16", "few_shot", "model=B/16,dataset=hmdb51,shots=16", 64, "few-shot, B/16"),
    ("base_to_novel_b16", "base_to_novel", "model=B/16,dataset=k400", 256,
     "base-to-novel, B/16"),
    ("charades_l14", "charades", "model=L/14", 256, "Charades, L/14"),
)
SLICES = {"v5e": ("v5e:2x2", "v5e:2x4", "v5e:4x4", "v5e:4x8", "v5e:8x8"),
          "v4": ("v4:2x2x1", "v4:2x2x2", "v4:2x2x4", "v4:2x4x4", "v4:4x4x4")}


def config_of(module: str, arg: str, batch: int, remat: bool):
  c = importlib.import_module(f"configs.{module}").get_config(arg)
  c.data.batch_size = batch
  c.model.remat = remat
  return c


def compile_one(config, topology: str):
  """(exit status, report) of one compile, its printout kept quiet."""
  with tempfile.TemporaryDirectory() as wd, contextlib.redirect_stdout(io.StringIO()):
    status = compile_report.run(config, wd, topology)
    import json  # pylint: disable=g-import-not-at-top
    with open(os.path.join(wd, "compile_report.json")) as f:
      return status, json.load(f)


def smallest_fit(module, arg, batch, family):
  """The report of the smallest slice of `family` that holds the setting (remat off if
  that fits, else on), or None."""
  for topology in SLICES[family]:
    chips = 1
    for d in topology.split(":")[1].split("x"):
      chips *= int(d)
    if batch % chips:
      continue
    for remat in (False, True):
      t0 = time.time()
      status, rep = compile_one(config_of(module, arg, batch, remat), topology)
      print(f"  {topology} remat={remat}: {'fits' if status == 0 else 'does not fit'} "
            f"({time.time() - t0:.0f}s)", flush=True)
      if status == 0:
        return rep
  return None


def row(name, rep) -> str:
  m, r, f = rep["memory_bytes"], rep.get("roofline", {}), rep["flops"]
  moved = sum(v["bytes"] for v in rep.get("collectives", {}).values())
  acc = f"{f['accounted']:.2f}" if f.get("accounted") else "—"
  return (f"| {name} | {rep['model']} | {rep['frames']} | {rep['global_batch']} | "
          f"{rep['topology']} | {'on' if rep['remat'] else 'off'} | "
          f"{m['total'] / 2 ** 30:.1f} / {rep['hbm_bytes'] / 2 ** 30:.2f} GiB | "
          f"{r.get('step_s', 0) * 1e3:.0f} ms ({r.get('bound', '?')}) | "
          f"{r.get('clips_per_s_per_chip', 0):.1f} | {100 * r.get('mfu_bound', 0):.0f}% | "
          f"{moved / 2 ** 30:.2f} GiB | {acc} |")


HEADER = ("| setting | model | frames | global batch | slice | remat | memory / HBM per chip | "
          "step (bound) | clips/s per chip | MFU bound | collective bytes | "
          "(model + recompute) / XLA FLOPs |\n|---|---|---|---|---|---|---|---|---|---|---|---|")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--rows", default=",".join(s[0] for s in SETTINGS))
  p.add_argument("--families", default="v5e,v4")
  p.add_argument("--out", default="")
  args = p.parse_args(argv)
  lines = [HEADER]
  for key, module, arg, batch, what in SETTINGS:
    if key not in args.rows.split(","):
      continue
    for family in args.families.split(","):
      print(f"{what} ({family}):", flush=True)
      rep = smallest_fit(module, arg, batch, family)
      lines.append(row(what, rep) if rep else f"| {what} | — | — | {batch} | no {family} slice "
                   "up to 64 chips | | | | | | | |")
    if key == "k400_l14":  # weak scaling: 256 chips at the 64-chip per-chip batch
      status, rep = compile_one(config_of(module, arg, 1024, True), "v5e:16x16")
      lines.append(row(what + ", weak scaling", rep))
  table = "\n".join(lines)
  print(table)
  if args.out:
    with open(args.out, "w") as f:
      f.write(table + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
