"""What a slice's chips offer and what a compiled program asks of them: the published
per-chip figures (`CHIPS`, `chip_of`), the devices of a slice libtpu knows
(`slice_devices`), the collectives in a compiled HLO module (`collectives`) and the largest
values of a lowered one (`largest_buffers`). Read by compile_report.py.
"""
import dataclasses
import math
import os
import re

import jax

GIB = 2 ** 30
COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4,
                "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8}


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
