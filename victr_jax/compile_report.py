"""--mode=compile: a config's train and eval steps compiled for a TPU slice (or the local
devices) with no data, no weights and no accelerator; memory, FLOPs, a roofline estimate
and the collectives reported.

  python -m victr_jax.main --config=configs/k400.py:model=L/14 --mode=compile \
      --topology=v5e:8x8 --workdir=DIR        # writes DIR/compile_report.json

The state is built abstractly (`train_state.init_state(abstract=True)`: shapes, dtypes and
shardings only) and the real steps are lowered with the config's mesh and shardings and
compiled by XLA for the slice (libtpu compiles TPU programs on any host; MaxText's
`train_compile.py` does the same). Exit status: 0 when both steps fit the chip's HBM, 3
when one does not (the report names the largest buffers and the fields to change).
"""
import dataclasses
import json
import math
import os
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import gpath
from victr_jax import config_lib, evaluate, models, sharding, train_state
from victr_jax.clip import model as clip_model
from victr_jax.models import cost

GIB = 2 ** 30
FITS, DOES_NOT_FIT = 0, 3


@dataclasses.dataclass(frozen=True)
class Chip:
  """Published per-chip figures (sources: cloud.google.com/tpu/docs/<version>). ICI
  bandwidth is the per-chip share of the pod's published all-reduce bandwidth (v5e:
  51.2 TB/s over 256 chips; v4: 1.1 PB/s over 4096), or the per-chip ICI figure / 8."""
  name: str
  hbm_bytes: int     # capacity usable by programs (the published capacity less 0.25 GiB)
  peak_flops: float  # bf16 FLOP/s
  hbm_bw: float      # bytes/s
  ici_bw: float      # bytes/s per chip for collectives
  source: str
  cores: int = 1     # TensorCores per chip (a device may be one of them: see chip_of)


CHIPS = {
    "TPU v5 lite": Chip("v5e", int(15.75 * GIB), 197e12, 819e9, 51.2e12 / 256,
                        "cloud.google.com/tpu/docs/v5e: 197 TFLOP/s bf16, 16 GB at 819 GB/s, "
                        "all-reduce 51.2 TB/s per 256-chip pod"),
    "TPU v4": Chip("v4", int(31.75 * GIB), 275e12, 1200e9, 1.1e15 / 4096,
                   "cloud.google.com/tpu/docs/v4: 275 TFLOP/s bf16, 32 GiB at 1200 GB/s, "
                   "all-reduce 1.1 PB/s per 4096-chip pod", cores=2),
    "TPU v5": Chip("v5p", int(94.75 * GIB), 459e12, 2765e9, 4800e9 / 8,
                   "cloud.google.com/tpu/docs/v5p: 459 TFLOP/s bf16, 95 GB at 2765 GB/s, "
                   "ICI 4800 Gbps per chip", cores=2),
    "TPU v6 lite": Chip("v6e", int(31.75 * GIB), 918e12, 1640e9, 3584e9 / 8,
                        "cloud.google.com/tpu/docs/v6e: 918 TFLOP/s bf16, 32 GB at 1640 GB/s, "
                        "ICI 3584 Gbps per chip"),
}
COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4,
                "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8}


def slice_devices(topology: str):
  """The devices of a slice name libtpu knows ('v5e:8x8', 'v4:2x2x2', ...) or 'local'."""
  if topology == "local":
    return jax.devices()
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  # No chip is used: let this process load libtpu beside another one (tests, plans).
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  try:
    return topologies.get_topology_desc(topology_name=topology, platform="tpu").devices
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"--topology={topology}: not a slice libtpu knows ({type(e).__name__}: "
                     f"{str(e)[:200]}); e.g. v5e:2x2, v5e:8x8, v4:2x2x2, or local (is jax[tpu] "
                     "installed?)") from e


def chip_of(device):
  """The figures of one device, or None (CPU, GPU or an unknown TPU: no roofline): its
  chip's, or, where a device is one TensorCore of a chip (libtpu's v4 topologies: two
  devices a chip, `num_cores` 1, 15.25 GiB for a program's temporaries), that core's share
  of the chip's HBM, FLOP/s and bandwidths."""
  chip = CHIPS.get(getattr(device, "device_kind", ""))
  cores = getattr(device, "num_cores", chip.cores if chip else 1) or 1
  if chip is None or cores >= chip.cores:
    return chip
  share = cores / chip.cores
  return dataclasses.replace(
      chip, name=f"{chip.name} TensorCore", cores=cores,
      hbm_bytes=int((chip.hbm_bytes + GIB // 4) * share - GIB // 4),
      peak_flops=chip.peak_flops * share, hbm_bw=chip.hbm_bw * share,
      ici_bw=chip.ici_bw * share, source=chip.source + f"; one device = 1 of {chip.cores} cores")


# ------------------------------------------------------------------ HLO collectives
_SHAPE = re.compile(r"\b(pred|[suf]\d+|bf16|c64)\[([\d,]*)\]")
_OP = re.compile(r"=\s*(.+?)\s+(" + "|".join(COLLECTIVES) + r")(-start)?\(")


def _shape_bytes(text: str) -> int:
  total = 0
  for dtype, dims in _SHAPE.findall(text):
    n = math.prod(int(d) for d in dims.split(",") if d) if dims else 1
    total += n * _DTYPE_BYTES.get(dtype, 4)
  return total


def _group_size(line: str) -> int:
  """Devices per replica group: `mesh['axis_0'=1,'axis_1'=4] {'axis_1'}` (TPU; a
  `device_ids=(...)` may stand between the mesh and its axes), the iota
  form `[groups,size]<=[N]`, or explicit `{{0,1,2,3},...}`."""
  m = re.search(r"replica_groups=mesh\[([^\]]*)\][^{]*\{([^}]*)\}", line)
  if m:
    sizes = {k.strip("' "): int(v) for k, v in re.findall(r"('[^']+')=(\d+)", m.group(1))}
    return math.prod(sizes.get(a.strip("' "), 1) for a in m.group(2).split(",") if a.strip())
  m = re.search(r"replica_groups=\[(\d+),(\d+)\]<=", line)
  if m:
    return int(m.group(2))
  m = re.search(r"replica_groups=\{\{([\d,]*)\}", line)
  return len(m.group(1).split(",")) if m and m.group(1) else 1


def collectives(hlo_text: str) -> dict:
  """{kind: {'count', 'bytes' (result bytes), 'moved_bytes' (per device, ring model)}}
  of the collectives in a compiled (per-device) HLO module, each channel counted once."""
  out = {k: {"count": 0, "bytes": 0, "moved_bytes": 0.0} for k in COLLECTIVES}
  seen = set()
  for line in hlo_text.splitlines():
    m = _OP.search(line)
    if not m or "-done" in line.split("=")[0]:
      continue
    channel = re.search(r"channel_id=(\d+)", line)
    if channel:  # TPU async collectives repeat the op in each stage's fusion: one channel
      if (m.group(2), channel.group(1)) in seen:
        continue
      seen.add((m.group(2), channel.group(1)))
    kind, result = m.group(2), m.group(1)
    if m.group(3) and result.startswith("("):  # async start: (operands..., result)
      result = [f"{d}[{dims}]" for d, dims in _SHAPE.findall(result)][-1]
    size = _shape_bytes(result)
    n = max(_group_size(line), 1)
    moved = {"all-gather": size * (n - 1) / n, "reduce-scatter": size * (n - 1),
             "all-reduce": 2 * size * (n - 1) / n, "all-to-all": size * (n - 1) / n,
             "collective-permute": size}[kind]
    out[kind]["count"] += 1
    out[kind]["bytes"] += size
    out[kind]["moved_bytes"] += moved
  return out


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


def _cost(compiled) -> dict:
  c = compiled.cost_analysis()
  c = c[0] if isinstance(c, list) else c
  return {"flops": float(c.get("flops", 0.0)), "bytes": float(c.get("bytes accessed", 0.0)),
          "optimal_seconds": float(c.get("optimal_seconds", 0.0))}


def _oom(e: Exception):
  """(needed bytes, available bytes) from XLA's out-of-memory error, None when unsaid."""
  msg, units = str(e), {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}
  nums = re.findall(r"\(([\d.]+)([KMGT])\)", msg) or re.findall(r"([\d.]+)([KMGT])", msg)
  if len(nums) >= 2:
    return tuple(float(v) * units[u] for v, u in nums[:2])
  return None, None


_TENSOR = re.compile(r"tensor<([\dx]*)x?(f32|bf16|f16|f64|i64|i32|i16|i8|i1|ui32|ui8)>")
_TENSOR_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "f64": 8, "i64": 8, "i32": 4, "i16": 2, "i8": 1,
                 "i1": 1, "ui32": 4, "ui8": 1}


def largest_buffers(stablehlo: str, k: int = 8) -> list[str]:
  """The k largest values the program computes (global shapes, before partitioning), each
  with the jax operation that makes it: where a step's memory goes."""
  names = dict(re.findall(r'^(#loc\d+) = loc\("([^"]+)"', stablehlo, re.M))
  seen, rows = set(), []
  for line in stablehlo.splitlines():
    m = re.match(r"\s*%\S+ = (\S+).*(tensor<[^>]*>) loc\((#loc\d+)\)\s*$", line)
    if not m:
      continue
    t = _TENSOR.match(m.group(2))
    if not t:
      continue
    dims = [int(d) for d in t.group(1).split("x") if d]
    size = math.prod(dims) * _TENSOR_BYTES[t.group(2)]
    where = names.get(m.group(3), m.group(1)).split("/")[-3:]
    key = (tuple(dims), "/".join(where))
    if key not in seen:
      seen.add(key)
      rows.append((size, f"{size / GIB:.2f} GiB {t.group(2)}[{','.join(map(str, dims))}] "
                         f"{'/'.join(where)}"))
  return [r for _, r in sorted(rows, key=lambda r: -r[0])[:k]]


def _programs(config, devices):
  """The config's jitted train and eval steps for `devices` with abstract arguments:
  (mesh, rules, {'train': (fn, args), 'eval': (fn, args)}, context dict)."""
  mesh = sharding.make_mesh(config.mesh, devices)
  rules = sharding.logical_rules(config.mesh.get("fsdp_params", True))
  model = models.build_model(config.model)
  text = train_state.prompts(config)
  num_steps = max(config.num_train_steps, 1) if config.num_train_steps >= 0 else 1
  st = train_state.init_state(config, model, mesh, rules, num_steps, text, abstract=True)
  d, c = config.data, model.clip_cfg
  repl, batch_sh = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  n = len(text.names)
  label = (jax.ShapeDtypeStruct((d.batch_size, n), jnp.float32, sharding=batch_sh)
           if d.multi_label else jax.ShapeDtypeStruct((d.batch_size,), jnp.int32,
                                                      sharding=batch_sh))
  batch = {"frames": jax.ShapeDtypeStruct((d.batch_size, d.num_frames, c.image_size,
                                           c.image_size, 3), jnp.float32, sharding=batch_sh),
           "label": label}

  def tok(x):
    return None if x is None else jax.ShapeDtypeStruct(x.shape, jnp.asarray(x).dtype,
                                                       sharding=repl)

  texts = (tok(text.tokens), tok(text.aux_tokens), tok(text.aux_cats))
  edcfg = evaluate.eval_data_config(d, mesh)
  views = d.num_test_clips * d.num_test_crops
  eval_frames = jax.ShapeDtypeStruct((edcfg.eval_batch_size, views, d.num_frames, c.image_size,
                                      c.image_size, 3), jnp.float32, sharding=batch_sh)
  p_train = jax.jit(train_state.make_train_step(model, st.tx, config.optim, n, d.multi_label),
                    in_shardings=(st.shardings, batch_sh, repl, repl, repl),
                    out_shardings=(st.shardings, repl), donate_argnums=(0,))
  p_eval = jax.jit(evaluate.make_eval_step(model),
                   in_shardings=(st.param_shardings, batch_sh, repl, repl, repl),
                   out_shardings=repl)
  ctx = {"mesh": dict(mesh.shape), "model": model, "text": text, "state": st,
         "eval_batch": int(edcfg.eval_batch_size), "views": views}
  return mesh, rules, {"train": (p_train, (st.state, batch) + texts),
                       "eval": (p_eval, (st.state["params"], eval_frames) + texts)}, ctx


def _is_oom(e: Exception) -> bool:
  return "RESOURCE_EXHAUSTED" in str(e) or "memory" in str(e).lower()


# Slices of v5p (95 GiB per chip) by chip count, where unrolled steps are counted: the
# unrolled program holds more at once than the looped one, and the FLOPs per chip do not
# depend on the chip.
_COUNTING_SLICES = {4: "v5p:2x2x1", 8: "v5p:2x2x2", 16: "v5p:2x2x4", 32: "v5p:2x4x4",
                    64: "v5p:4x4x4", 128: "v5p:4x4x8", 256: "v5p:4x8x8"}


def unrolled_train_flops(config, devices) -> tuple[float, str]:
  """XLA's FLOPs per device of the train step with the head's chunked loops unrolled
  (XLA's cost analysis counts a loop body once), and the slice they were counted on: the
  v5p slice of as many chips for a TPU slice, else `devices`. The head is not split into
  video steps for the count (`video_chunk` 0: XLA counts the same work either way,
  tests/test_cost.py), which keeps the unrolled program to one copy per chunk."""
  config = config.copy_and_resolve_references()
  config.model.head.video_chunk = 0
  where = _COUNTING_SLICES.get(len(devices)) if chip_of(devices[0]) else None
  with clip_model.unrolled_steps():  # traced anew: jit caches key on the function
    mesh, rules, programs, _ = _programs(config, slice_devices(where) if where else devices)
    fn, args = programs["train"]
    with sharding.use(mesh, rules):
      return _cost(fn.lower(*args).compile())["flops"], where or "these devices"


def _chunked(config) -> bool:
  """Whether the head runs its attention or videos in chunks (a loop in the program)."""
  hc = config.model.get("head", {})
  return bool(hc.get("attention_chunk", 0) or hc.get("video_chunk", 0))


def compile_steps(config, devices, count_flops: bool = True, train_only: bool = False):
  """Lowers and compiles the train and eval steps of `config` for `devices`: returns
  ({'train': compiled or exception, 'eval': ...}, context dict). With chunked head steps
  and `count_flops`, the train step's FLOPs are counted unrolled (unrolled_train_flops).
  train_only: the eval step is not compiled (a quicker memory check)."""
  mesh, rules, programs, ctx = _programs(config, devices)
  if train_only:
    del programs["eval"]
  out = {}
  with sharding.use(mesh, rules):
    for name, (fn, args) in programs.items():
      t0 = time.time()
      lowered = fn.lower(*args)
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
    cst = _cost(train)
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
             "not comparable: XLA counted the head's loops once; count_flops unrolls them")
          + ")"
          + (f"; XLA's count with the head's loops unrolled, on "
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
