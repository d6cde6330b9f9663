"""The pod plan: every shipped paper setting compiled for TPU slices on this host.

  .venv/bin/python benchmarks/pod_plan.py [--rows k400_l14,zero_shot_b16] [--out plan.md]

For each setting (the shipped config at its own global batch), the smallest v5e and v4
slice of at most 64 chips that holds it is found by compiling (victr_jax/compile_report.py,
libtpu; nothing runs on a chip). A slice holds a setting when both steps leave 10% of its
HBM free. First a binary search over the slices with `model.remat` on (fitting only grows
with chips; train step only); then remat off on the slice found, kept when it still fits
and XLA does not recompute on its own to fit (model / XLA FLOPs of at least 0.9), so remat
is on only where the setting needs it; then both steps are compiled there for the table
(the head's loops counted unrolled). K400 L/14 is also compiled on v5e:8x8 and v5e:16x16
at 4 clips per chip (weak scaling). Prints, and writes to --out, a markdown table:
setting, model, frames, global batch, slice, remat, memory / HBM, the next smaller
slice's memory (the proof it is the smallest), roofline step time and its bound, clips/s
per chip, MFU bound, collective bytes per step, and (model + recompute) / XLA FLOPs. An
L/14 compile takes minutes on a 2-core CPU; --cache keeps every result, so a stopped plan
resumes.
"""
import argparse
import contextlib
import importlib
import io
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  pylint: disable=g-import-not-at-top

from data_pipelines import splits  # noqa: E402  pylint: disable=g-import-not-at-top
from victr_jax import compile_report, hlo  # noqa: E402  pylint: disable=g-import-not-at-top

# (key, config module, config argument, global batch (None: the config's), description)
SETTINGS = (
    ("k400_l14", "k400", "model=L/14,frames=8", None, "Kinetics-400, L/14"),
    ("zero_shot_b16", "zero_shot", "model=B/16", None, "zero-shot (K400 training), B/16"),
    ("few_shot_b16", "few_shot", "model=B/16,dataset=hmdb51,shots=16", None, "few-shot, B/16"),
    ("base_to_novel_b16", "base_to_novel", "model=B/16,dataset=k400", None,
     "base-to-novel, B/16"),
    ("charades_l14", "charades", "model=L/14", None, "Charades, L/14"),
)
SLICES = {"v5e": ("v5e:2x2", "v5e:2x4", "v5e:4x4", "v5e:4x8", "v5e:8x8"),
          "v4": ("v4:2x2x1", "v4:2x2x2", "v4:2x2x4", "v4:2x4x4", "v4:4x4x4")}


def devices_of(topology: str) -> int:
  """JAX devices of a slice: one per chip on v5e, one per TensorCore (two a chip) on v4.
  The global batch is split over devices, so it must divide by this."""
  return len(hlo.slice_devices(topology))


def charades_root() -> str:
  """A data root holding only charades/classes.txt, as `victr-prepare --layout charades`
  writes it (from the shipped list): the Charades config reads its class names from the
  data root, and compiling needs the prompts, never the videos."""
  root = os.path.join(tempfile.gettempdir(), "victr_pod_plan_root")
  os.makedirs(os.path.join(root, "charades"), exist_ok=True)
  splits.write_classnames(os.path.join(root, "charades", "classes.txt"),
                          splits.read_classnames(os.path.join(splits.CLASSNAMES_DIR,
                                                              "charades.txt")))
  return root


def config_of(module: str, arg: str, batch, remat: bool):
  """The shipped config, at `batch` (None: its own) and with remat on or off."""
  root = f",root={charades_root()}" if module == "charades" else ""
  c = importlib.import_module(f"configs.{module}").get_config(arg + root)
  if batch:
    c.data.batch_size = batch
  c.model.remat = remat
  return c


def compile_one(config, topology: str, final: bool = False):
  """(exit status, report) of one compile, its printout kept quiet: the train step only,
  or, `final`, both steps. The head's loops are counted unrolled in the final compile and
  with remat off (the plan's rule reads model / XLA FLOPs there)."""
  with tempfile.TemporaryDirectory() as wd, contextlib.redirect_stdout(io.StringIO()):
    unroll = final or not config.model.remat
    status = compile_report.run(config, wd, topology, count_flops=unroll, train_only=not final)
    jax.clear_caches()  # the compiled programs: without this the plan grows past 20 GiB
    with open(os.path.join(wd, "compile_report.json")) as f:
      return status, json.load(f)


ARGS = argparse.Namespace(cache="")
MIN_HEADROOM = 0.10  # a slice holds a setting when it leaves this much of its HBM free
CACHE = {}  # (config module, arg, batch, topology, remat, final) -> [fits, report]


def _try(module, arg, batch, topology, remat, final=False):
  key = json.dumps([module, arg, batch, topology, remat, final])
  if key in CACHE:
    return tuple(CACHE[key])
  t0 = time.time()
  status, rep = compile_one(config_of(module, arg, batch, remat), topology, final)
  used = max(rep["memory_bytes"].get("total") or 0,
             rep.get("eval_memory_bytes", {}).get("total") or 0)
  CACHE[key] = [status == 0 and used <= (1 - MIN_HEADROOM) * rep["hbm_bytes"], rep]
  if ARGS.cache:
    with open(ARGS.cache, "w") as f:
      json.dump(CACHE, f)
  total = rep["memory_bytes"].get("total") or 0
  print(f"  {topology} remat={'on' if remat else 'off'}: "
        f"{'fits' if CACHE[key][0] else 'does not fit'} ({total / 2 ** 30:.2f} GiB, "
        f"{time.time() - t0:.0f}s)", flush=True)
  return tuple(CACHE[key])


def smallest_fit(module, arg, batch, family):
  """(report, next smaller slice's report or None) for the smallest slice of `family` that
  holds the setting, remat off where that fits; (None, None) when none does."""
  batch = batch or config_of(module, arg, None, True).data.batch_size
  slices = [t for t in SLICES[family] if batch % devices_of(t) == 0]
  lo, hi, best, reports = 0, len(slices) - 1, None, {}
  while lo <= hi:  # the smallest slice that fits with remat on
    mid = (lo + hi) // 2
    fits, reports[mid] = _try(module, arg, batch, slices[mid], True)
    best, lo, hi = (mid, lo, mid - 1) if fits else (best, mid + 1, hi)
  if best is None:
    return None, None
  fits, rep = _try(module, arg, batch, slices[best], False)
  # Off only where XLA does not recompute on its own to fit (model / XLA FLOPs >= 0.9).
  remat = not (fits and (rep["flops"].get("accounted") or 0) >= 0.9)
  fits, rep = _try(module, arg, batch, slices[best], remat, final=True)  # with the eval step
  if not fits and best + 1 < len(slices):  # the eval step does not fit: one slice up
    fits, rep = _try(module, arg, batch, slices[best + 1], remat, final=True)
    best += 1
  return (rep, reports.get(best - 1)) if fits else (None, None)


BOUND = {"compute": "compute", "memory": "HBM", "communication": "ICI"}


def row(name, rep, smaller=None) -> str:
  m, r, f = rep["memory_bytes"], rep.get("roofline", {}), rep["flops"]
  ev = rep.get("eval_memory_bytes", {}).get("total") or 0
  moved = sum(v["bytes"] for v in rep.get("collectives", {}).values())
  acc = f"{f['accounted']:.2f}" if f.get("accounted") else "—"
  below = "—"
  if smaller:
    used = smaller["memory_bytes"].get("total")
    below = (f"{smaller['topology']}: {used / 2 ** 30:.1f} GiB" if used
             else f"{smaller['topology']}: does not fit")
  devices = rep.get("devices", rep["chips"])
  where = rep["topology"] + (f" ({devices} TensorCores)" if devices != rep["chips"] else "")
  return (f"| {name} | {rep['model']} | {rep['frames']} | {rep['global_batch']} | "
          f"{where} | {'on' if rep['remat'] else 'off'} | "
          f"{m['total'] / 2 ** 30:.1f} (eval {ev / 2 ** 30:.1f}) / "
          f"{rep['hbm_bytes'] / 2 ** 30:.2f} GiB | {below} | "
          f"{r.get('step_s', 0) * 1e3:.0f} ms ({BOUND.get(r.get('bound'), '?')}; compute "
          f"{r.get('compute_s', 0) * 1e3:.0f}, HBM {r.get('memory_s', 0) * 1e3:.0f}, ICI "
          f"{r.get('communication_s', 0) * 1e3:.0f}) | "
          f"{r.get('clips_per_s_per_chip', 0):.1f} | {100 * r.get('mfu_bound', 0):.0f}% | "
          f"{moved / 2 ** 30:.2f} GiB | {acc} |")


HEADER = ("| setting | model | frames | global batch | slice | remat | memory / HBM per device | "
          "next smaller slice (remat on) | roofline step ms (bound; compute, HBM, ICI) | "
          "clips/s per chip | MFU bound | "
          "collective bytes | (model + recompute) / XLA FLOPs |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--rows", default=",".join(s[0] for s in SETTINGS))
  p.add_argument("--families", default="v5e,v4")
  p.add_argument("--out", default="")
  p.add_argument("--cache", default="", help="JSON file of compile results: read at the "
                 "start, written after each compile, so that a stopped plan resumes")
  args = p.parse_args(argv)
  ARGS.cache = args.cache
  if args.cache and os.path.exists(args.cache):
    with open(args.cache) as f:
      CACHE.update(json.load(f))
  lines = [HEADER]
  for key, module, arg, batch, what in SETTINGS:
    if key not in args.rows.split(","):
      continue
    for family in args.families.split(","):
      print(f"{what} ({family}):", flush=True)
      rep, smaller = smallest_fit(module, arg, batch, family)
      lines.append(row(what, rep, smaller) if rep else
                   f"| {what} | — | — | {batch} | no {family} slice up to 64 chips |"
                   + " |" * 8)
      if key == "k400_l14" and family == "v5e" and rep:  # weak scaling: 4 clips per chip
        for topology, chips in (("v5e:8x8", 64), ("v5e:16x16", 256)):
          _, weak = _try(module, arg, 4 * chips, topology, rep["remat"], final=True)
          lines.append(row(f"{what}, weak scaling ({chips} chips)", weak))
  table = "\n".join(lines)
  print(table)
  if args.out:
    with open(args.out, "w") as f:
      f.write(table + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
