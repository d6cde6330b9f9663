"""--mode=compile: a config's train and eval steps compiled for a TPU slice (or the local
devices) with no data, no weights and no accelerator; memory, FLOPs, a roofline estimate
and the collectives reported.

  python -m victr_jax.main --config=configs/k400.py:model=L/14 --mode=compile \
      --topology=v5e:8x8 --workdir=DIR        # writes DIR/compile_report.json

The state is built abstractly (`train_state.init_state(abstract=True)`: shapes, dtypes and
shardings only) and the trainer's own programs (`programs.build`) are lowered with the
config's mesh and shardings and compiled by XLA for the slice (libtpu compiles TPU programs on any host; MaxText's
`train_compile.py` does the same). Exit status: 0 when both steps fit the chip's HBM, 3
when one does not (the report names the largest buffers and the fields to change).
"""
import json
import os
import re
import time

import numpy as np

from data_pipelines import gpath
from victr_jax import config_lib, evaluate, models, programs, sharding, train_state
from victr_jax.clip import model as clip_model
from victr_jax.hlo import GIB, chip_of, collectives, largest_buffers, slice_devices
from victr_jax.models import cost

FITS, DOES_NOT_FIT = 0, 3


# ------------------------------------------------------------------ model FLOPs
def model_flops(config, model, text, global_batch: int) -> dict:
  """Useful FLOPs of one train step over all devices (models/cost.py): the image tower on
  every frame, the head on every video, the text tower once on the n + m prompts;
  forward + backward (x3) where trainable, forward only where frozen; and the forward
  that the rematerialised backward recomputes (remat blocks, chunked steps)."""
  c, m, t = model.clip_cfg, config.model, config.data.num_frames
  n = int(text.tokens.shape[0])
  aux = 0 if text.aux_tokens is None else int(text.aux_tokens.shape[0])
  length = int(text.tokens.shape[1])
  frames, prompts = global_batch * t, n + aux
  image = cost.vit_flops(c.image_size, c.patch_size, c.vision_width, c.vision_layers,
                         c.vision_width * 4, c.embed_dim) * frames
  txt = cost.text_flops(length, c.text_width, c.text_layers, c.text_width * 4,
                        c.embed_dim) * prompts
  head = head_re = 0.0
  if m.name == "victr":
    h = m.head
    shape = dict(width=h.get("width", 0) or 0, layers=h.num_layers, mlp_ratio=h.mlp_ratio,
                 attention=h.attention)
    head = cost.head_flops(t, n, aux, c.embed_dim, **shape) * global_batch
    head_re = cost.recomputed_head_flops(t, n, aux, c.embed_dim, remat=m.remat,
                                         chunk=int(h.get("attention_chunk", 0)),
                                         **shape) * global_batch
  frozen_img, frozen_txt = m.get("freeze_image_tower", False), m.get("freeze_text_tower", False)
  useful = image * (1 if frozen_img else 3) + txt * (1 if frozen_txt else 3) + head * 3
  recompute = head_re
  if m.remat:
    recompute += 0 if frozen_img else cost.recomputed_vit_flops(
        c.image_size, c.patch_size, c.vision_width, c.vision_layers, c.vision_width * 4) * frames
    recompute += 0 if frozen_txt else cost.recomputed_text_flops(
        length, c.text_width, c.text_layers, c.text_width * 4) * prompts
  return {"useful": useful, "recompute": recompute, "image": image, "text": txt, "head": head}


# ------------------------------------------------------------------ compile
def _memory(compiled) -> dict:
  ma = compiled.memory_analysis()
  args, outs = ma.argument_size_in_bytes, ma.output_size_in_bytes
  temps, alias = ma.temp_size_in_bytes, ma.alias_size_in_bytes
  return {"arguments": int(args), "temporaries": int(temps), "outputs": int(outs),
          "aliased": int(alias), "code": int(ma.generated_code_size_in_bytes),
          "total": int(args + outs - alias + temps + ma.generated_code_size_in_bytes)}


def _oom(e: Exception):
  """(needed bytes, available bytes) from XLA's out-of-memory error, None when unsaid."""
  msg, units = str(e), {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}
  nums = re.findall(r"\(([\d.]+)([KMGT])\)", msg) or re.findall(r"([\d.]+)([KMGT])", msg)
  if len(nums) >= 2:
    return tuple(float(v) * units[u] for v, u in nums[:2])
  return None, None


def _programs(config, devices):
  """The config's programs (programs.build) on `devices`, over an abstract state, with
  their abstract arguments: (programs, {'train': args, 'eval': args}, context dict)."""
  config = config_lib.resolve(config)  # the image size the data config derives
  layout = sharding.layout(config.mesh, devices)
  model = models.build_model(config.model)
  names, text = train_state.prompts(config)
  num_steps = max(config.num_train_steps, 1) if config.num_train_steps >= 0 else 1
  init = train_state.init_state(config, model, layout, num_steps, text, abstract=True)
  progs = programs.build(config, model, layout, init, len(names))
  edcfg = evaluate.eval_data_config(config.data, layout)
  views = config.data.num_test_clips * config.data.num_test_crops
  ctx = {"mesh": dict(layout.mesh.shape), "model": model, "text": text, "state": init,
         "eval_batch": int(edcfg.eval_batch_size), "views": views}
  return progs, {"train": progs.abstract_train_args(text),
                 "eval": progs.abstract_eval_args(text, int(edcfg.eval_batch_size))}, ctx


def _is_oom(e: Exception) -> bool:
  return "RESOURCE_EXHAUSTED" in str(e) or "memory" in str(e).lower()


# Slices of v5p (95 GiB per chip) by chip count, where unrolled steps are counted: the
# unrolled program holds more at once than the looped one, and the FLOPs per chip do not
# depend on the chip.
_COUNTING_SLICES = {4: "v5p:2x2x1", 8: "v5p:2x2x2", 16: "v5p:2x2x4", 32: "v5p:2x4x4",
                    64: "v5p:4x4x4", 128: "v5p:4x4x8", 256: "v5p:4x8x8"}


def unrolled_train_flops(config, devices) -> tuple[float, str]:
  """XLA's FLOPs per device of the train step with its loops unrolled (the head's chunks
  and scanned tower blocks: XLA's cost analysis counts a loop body once; the same
  parameters and result), and the slice they were counted on: the
  v5p slice of as many chips for a TPU slice, else `devices`. The head is not split into
  video steps for the count (`video_chunk` 0: XLA counts the same work either way,
  tests/test_cost.py), which keeps the unrolled program to one copy per chunk."""
  config = config.copy_and_resolve_references()
  config.model.head.video_chunk = 0
  config.model.scan_layers = False
  where = _COUNTING_SLICES.get(len(devices)) if chip_of(devices[0]) else None
  with clip_model.unrolled_steps():  # traced anew: jit caches key on the function
    progs, args, _ = _programs(config, slice_devices(where) if where else devices)
    with progs.layout.use():
      return programs.cost(progs.train.lower(*args["train"]).compile())["flops"], (
          where or "these devices")


def _chunked(config) -> bool:
  """Whether the program loops: the head runs its attention or videos in chunks, or the
  towers' blocks run in a lax.scan (model.scan_layers)."""
  hc = config.model.get("head", {})
  return bool(hc.get("attention_chunk", 0) or hc.get("video_chunk", 0) or
              config.model.get("scan_layers", False))


def compile_steps(config, devices, count_flops: bool = True, train_only: bool = False):
  """Lowers and compiles the train and eval steps of `config` for `devices`: returns
  ({'train': compiled or exception, 'eval': ...}, context dict). With chunked head steps
  and `count_flops`, the train step's FLOPs are counted unrolled (unrolled_train_flops).
  train_only: the eval step is not compiled (a quicker memory check)."""
  progs, args, ctx = _programs(config, devices)
  out = {}
  with progs.layout.use():
    for name, fn in (("train", progs.train),) + (() if train_only else (("eval", progs.eval),)):
      t0 = time.time()
      lowered = fn.lower(*args[name])
      try:
        out[name] = lowered.compile()
      except Exception as e:  # pylint: disable=broad-except
        if not _is_oom(e):
          raise
        out[name] = e
        out[name + "_largest"] = largest_buffers(lowered.as_text(debug_info=True))
      out[name + "_seconds"] = round(time.time() - t0, 1)
  if count_flops and not isinstance(out["train"], Exception) and _chunked(config):
    t0 = time.time()
    out["train_flops"], out["train_flops_where"] = unrolled_train_flops(config, devices)
    out["train_seconds"] += round(time.time() - t0, 1)
  return out, ctx


def build_report(config, topology: str, devices, compiled: dict, ctx: dict) -> dict:
  """The compile report (see the module docstring and `print_report`)."""
  chip = chip_of(devices[0])
  n_dev = len(devices)
  # Chips are the devices' distinct coordinates (v4: two devices, one per TensorCore, share
  # a chip's); a device without coordinates (CPU, GPU) counts as its own chip.
  chips = len({tuple(getattr(d, "coords", None) or (i,)) for i, d in enumerate(devices)})
  d, text = config.data, ctx["text"]
  rep = {"topology": topology, "chip": chip.name if chip else getattr(devices[0], "device_kind",
                                                                       str(devices[0])),
         "chips": chips, "devices": n_dev, "mesh": ctx["mesh"],
         "global_batch": int(d.batch_size), "per_chip_batch": d.batch_size / chips,
         "per_device_batch": d.batch_size / n_dev, "frames": int(d.num_frames),
         "prompts": {"n": int(text.tokens.shape[0]),
                     "m": 0 if text.aux_tokens is None else int(text.aux_tokens.shape[0]),
                     "length": int(text.tokens.shape[1])},
         "model": config.model.clip, "remat": bool(config.model.remat),
         "dtype": config.model.dtype,
         "hbm_bytes": chip.hbm_bytes if chip else None,
         "chip_source": chip.source if chip else None,
         "compile_seconds": {k: compiled[k + "_seconds"] for k in ("train", "eval")
                             if k in compiled}}
  fits = True
  for name in ("train", "eval"):
    if name not in compiled:  # train_only
      continue
    c = compiled[name]
    key = "memory_bytes" if name == "train" else "eval_memory_bytes"
    if isinstance(c, Exception):
      used, limit = _oom(c)
      rep[key] = {"total": used, "limit": limit, "largest_buffers": compiled[name + "_largest"],
                  "error": str(c)[:2000]}
      fits = False
      continue
    mem = _memory(c)
    rep[key] = mem
    if chip and mem["total"] > chip.hbm_bytes:
      fits = False
  rep["fits"] = fits
  mem = rep["memory_bytes"]
  if chip and mem.get("total"):
    rep["headroom"] = 1.0 - mem["total"] / chip.hbm_bytes
  flops = model_flops(config, ctx["model"], text, int(d.batch_size))
  rep["flops"] = {"model_per_device": flops["useful"] / n_dev,
                  "recompute_per_device": flops["recompute"] / n_dev,
                  "parts_per_step": {k: flops[k] for k in ("image", "text", "head")}}
  train = compiled["train"]
  if not isinstance(train, Exception):
    cst = programs.cost(train)
    if "train_flops" in compiled:
      cst["flops"] = compiled["train_flops"]
      rep["xla_flops_loops_unrolled"] = compiled["train_flops_where"]
    col = collectives(train.as_text())
    rep["flops"]["xla_per_device"] = cst["flops"]
    # XLA counts a loop's body once: the chunked head's FLOPs are only comparable with the
    # model's when they were counted unrolled (compile_steps with count_flops).
    looped = _chunked(config) and "train_flops" not in compiled
    rep["flops"]["xla_counts_loops_once"] = looped
    rep["flops"]["accounted"] = ((flops["useful"] + flops["recompute"]) / n_dev / cst["flops"]
                                 if cst["flops"] and not looped else None)
    rep["bytes_accessed_per_device"] = cst["bytes"]
    rep["xla_optimal_seconds"] = cst["optimal_seconds"]
    rep["collectives"] = {k: {"count": v["count"], "bytes": v["bytes"]} for k, v in col.items()}
    moved = sum(v["moved_bytes"] for v in col.values())
    if chip:
      r = {"compute_s": cst["flops"] / chip.peak_flops, "memory_s": cst["bytes"] / chip.hbm_bw,
           "communication_s": moved / chip.ici_bw}
      r["step_s"] = max(r.values())
      r["bound"] = max(("compute_s", "memory_s", "communication_s"), key=r.get)[:-2]
      r["clips_per_s_per_chip"] = d.batch_size / chips / r["step_s"] if r["step_s"] else None
      r["mfu_bound"] = (flops["useful"] / (n_dev * chip.peak_flops * r["step_s"])
                        if r["step_s"] else None)
      rep["roofline"] = r
  return rep


def advice(rep: dict) -> list[str]:
  """The config fields to change when a step does not fit."""
  tips = [f"data.batch_size={rep['global_batch']} (per chip {rep['per_chip_batch']:g}): "
          "halve it, or use a slice with more chips"]
  if not rep["remat"]:
    tips.append("model.remat=True: recompute the towers' and the head's activations")
  if rep["dtype"] != "bfloat16":
    tips.append("model.dtype=bfloat16: halve the activations")
  if rep["mesh"].get("fsdp", 1) == 1:
    tips.append("mesh.fsdp=-1, mesh.data=1: shard parameters and optimiser state over all chips")
  if rep["frames"] > 8:
    tips.append(f"data.num_frames={rep['frames']}: fewer frames")
  return tips


def _gib(x):
  return "—" if x is None else f"{x / GIB:.2f} GiB"


def print_report(rep: dict) -> None:
  p = rep["prompts"]
  dev = (f"{rep['devices']} devices (one {rep['chip']} each) on {rep['chips']} chips"
         if rep["devices"] != rep["chips"] else f"{rep['chips']} x {rep['chip']}")
  print(f"[compile] {rep['topology']}: {dev}, mesh {rep['mesh']}, "
        f"{rep['model']}, batch {rep['global_batch']} ({rep['per_chip_batch']:g} per chip), "
        f"{rep['frames']} frames, {p['n']} + {p['m']} prompts of {p['length']} tokens, "
        f"remat {rep['remat']}")
  for key, what in (("memory_bytes", "train"), ("eval_memory_bytes", "eval")):
    if key not in rep:
      continue
    m = rep[key]
    if "error" in m:
      print(f"  {what} step: does not fit: {_gib(m['total'])} of temporaries for "
            f"{_gib(m['limit'])} of HBM; the largest values (global shapes):")
      for line in m["largest_buffers"]:
        print(f"    {line}")
      continue
    print(f"  {what} memory per device: arguments {_gib(m['arguments'])}, temporaries "
          f"{_gib(m['temporaries'])}, outputs {_gib(m['outputs'])} (aliased "
          f"{_gib(m['aliased'])}), total {_gib(m['total'])} of {_gib(rep['hbm_bytes'])}")
  if rep.get("headroom") is not None:
    print(f"  fits: {rep['fits']}, headroom {100 * rep['headroom']:.1f}%")
  f = rep["flops"]
  if "xla_per_device" in f:
    print(f"  FLOPs per device: XLA {f['xla_per_device'] / 1e12:.3f} T, model "
          f"{f['model_per_device'] / 1e12:.3f} T + recompute "
          f"{f['recompute_per_device'] / 1e12:.3f} T ("
          + (f"accounted {f['accounted']:.2f}" if f.get("accounted") else
             "not comparable: XLA counted the loops once; count_flops unrolls them")
          + ")"
          + (f"; XLA's count with the loops unrolled, on "
             f"{rep['xla_flops_loops_unrolled']}" if rep.get("xla_flops_loops_unrolled") else ""))
  r = rep.get("roofline")
  if r:
    print(f"  roofline: compute {r['compute_s'] * 1e3:.1f} ms, memory {r['memory_s'] * 1e3:.1f} "
          f"ms, communication {r['communication_s'] * 1e3:.1f} ms -> step >= "
          f"{r['step_s'] * 1e3:.1f} ms ({r['bound']} bound), "
          f"{r['clips_per_s_per_chip']:.1f} clips/s per chip, MFU <= {100 * r['mfu_bound']:.1f}%"
          + (f"; XLA's estimate {rep['xla_optimal_seconds'] * 1e3:.1f} ms"
             if rep.get("xla_optimal_seconds", 0) > 0 else ""))
  if rep.get("collectives"):
    print("  collectives per step: " + ", ".join(
        f"{k} {v['count']} ({v['bytes'] / 2 ** 20:.0f} MiB)"
        for k, v in rep["collectives"].items() if v["count"]))
  if not rep["fits"]:
    print("  does not fit; change one of:")
    for tip in advice(rep):
      print(f"    {tip}")


def run(config, workdir: str, topology: str = "local", count_flops: bool = True,
        train_only: bool = False) -> int:
  """Compiles, writes WORKDIR/compile_report.json, prints the table; returns the exit
  status (0 fits, 3 does not). count_flops=False skips the unrolled compile that counts
  chunked steps' FLOPs, train_only=True the eval step (the pod plan's slice search)."""
  devices = slice_devices(topology)
  config_lib.check_config(config, "compile", len(devices))
  compiled, ctx = compile_steps(config, devices, count_flops, train_only)
  rep = build_report(config, topology, devices, compiled, ctx)
  gpath.atomic_write(os.path.join(workdir, "compile_report.json"),
                     json.dumps(rep, indent=2, default=lambda o: None if isinstance(o, float)
                                and not np.isfinite(o) else str(o)))
  print_report(rep)
  return FITS if rep["fits"] else DOES_NOT_FIT
