"""Device mesh and logical-axis rules: how parameters and activations map onto devices.

The mesh has three axes from the config: `data` (batch), `fsdp` (batch + parameter
shards, ZeRO-3 style) and `model` (tensor parallel over MLP / attention heads). A size of
-1 takes the remaining devices. An `fsdp` size > 1 is a group size: parameters are split
over groups of that many devices (fewer when fewer are there: gcd with the devices left
by `model`) and replicated across groups, whose number `data=-1` takes. Groups of 8 keep
each parameter all-gather on one ring of neighbouring chips of a pod slice, where one
group over all 64 chips of v5e:8x8 makes XLA gather through all-reduces of zero-padded
buffers (twice the bytes). Logical names used by the models ('batch', 'embed', 'mlp',
'heads', 'vocab', ...) map onto mesh axes by `logical_rules`; a name mapped to None is
replicated.
"""
import contextlib
import dataclasses
import math

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp", "model")


def mesh_shape(cfg_mesh, num_devices: int) -> tuple[int, int, int]:
  """Resolves the config's {data, fsdp, model} sizes (one may be -1) for num_devices."""
  sizes = [int(cfg_mesh.get(a, 1)) for a in AXES]
  model = sizes[2] if sizes[2] > 0 else 1
  if sizes[1] > 1 and num_devices % model == 0:  # an FSDP group: at most what is there
    sizes[1] = math.gcd(sizes[1], num_devices // model)
  if sizes.count(-1) > 1:
    raise ValueError(f"config field mesh: at most one axis may be -1, got {dict(zip(AXES, sizes))}")
  known = math.prod(s for s in sizes if s != -1)
  if any(s == 0 or s < -1 for s in sizes) or num_devices % known:
    raise ValueError(f"config field mesh={dict(zip(AXES, sizes))} does not fit {num_devices} "
                     "devices")
  sizes = [num_devices // known if s == -1 else s for s in sizes]
  if math.prod(sizes) != num_devices:
    raise ValueError(f"config field mesh={dict(zip(AXES, sizes))} uses {math.prod(sizes)} "
                     f"devices, but {num_devices} are present")
  return tuple(sizes)


def make_mesh(cfg_mesh, devices=None) -> Mesh:
  """The (data, fsdp, model) mesh, laid out on the chips' physical topology where jax
  knows it (mesh_utils: on a TPU slice each FSDP group is a ring of neighbouring chips),
  else in device order."""
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(cfg_mesh, len(devices))
  try:
    grid = mesh_utils.create_device_mesh(shape, devices)
  except (ValueError, NotImplementedError, AssertionError):
    grid = np.asarray(devices).reshape(shape)
  return Mesh(grid, AXES)


def logical_rules(fsdp_params: bool = True):
  """Logical axis -> mesh axes. Params shard their 'embed' dim over fsdp; batch over
  data x fsdp; MLP, heads and vocabulary over model."""
  return (
      ("batch", ("data", "fsdp")),
      ("embed", "fsdp" if fsdp_params else None),
      ("mlp", "model"),
      ("heads", "model"),
      ("vocab", "model"),
      ("proj", None),
      ("length", None),
      ("time", None),
      ("tokens", None),
  )


@contextlib.contextmanager
def use(mesh: Mesh, rules):
  """The mesh and logical rules in force while a step is traced. jax.set_mesh, not the
  legacy `with mesh:`: flax's activation constraints (nn.with_logical_constraint) read the
  abstract mesh that only set_mesh installs, and are silently skipped without it, which
  leaves XLA free to split the text tower's features instead of its prompts."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def logical_axis_size(name: str) -> int:
  """Devices the logical axis `name` is split over under the active mesh and rules (1
  outside a mesh): e.g. how many shards a 'batch' dimension is cut into."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return 1
  axes = nn.logical_to_mesh_axes((name,))[0]
  axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
  return math.prod(mesh.shape[a] for a in axes)


@dataclasses.dataclass(frozen=True)
class Layout:
  """The mesh and its logical axis rules, which always travel together.

    layout = sharding.layout(config.mesh, devices)
    with layout.use():  # while tracing a step
      ...
  """
  mesh: Mesh
  rules: tuple

  def use(self):
    return use(self.mesh, self.rules)

  @property
  def replicated(self) -> NamedSharding:
    return replicated(self.mesh)

  @property
  def batch(self) -> NamedSharding:
    return batch_sharding(self.mesh)

  @property
  def batch_devices(self) -> int:
    """Devices a batch is split over (data x fsdp)."""
    return self.mesh.shape["data"] * self.mesh.shape["fsdp"]


def layout(cfg_mesh, devices=None) -> Layout:
  """The config's mesh (make_mesh) with its rules (logical_rules, `fsdp_params`)."""
  return Layout(make_mesh(cfg_mesh, devices), logical_rules(cfg_mesh.get("fsdp_params", True)))


def param_shardings(abstract_variables, mesh: Mesh, rules):
  """NamedShardings for a boxed (LogicallyPartitioned) variable tree."""
  specs = nn.get_partition_spec(abstract_variables)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis over data x fsdp, the rest replicated."""
  return NamedSharding(mesh, P(("data", "fsdp")))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _key_names(path) -> tuple:
  return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def shardings_like_params(tree, params, param_shardings, mesh: Mesh):
  """Shardings for a tree that holds param-shaped leaves (optimiser moments): a leaf whose
  path ends with a parameter's path and has its shape gets that parameter's sharding;
  everything else (step counts, scalars) is replicated."""
  by_path = {}
  for (path, p), (_, s) in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                               jax.tree_util.tree_flatten_with_path(param_shardings)[0]):
    by_path[_key_names(path)] = (p.shape, s)

  def pick(path, leaf):
    names = _key_names(path)
    for start in range(len(names)):
      hit = by_path.get(names[start:])
      if hit is not None and hit[0] == getattr(leaf, "shape", None):
        return hit[1]
    return replicated(mesh)

  return jax.tree_util.tree_map_with_path(pick, tree)
