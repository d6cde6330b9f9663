"""Device mesh and logical-axis rules: how parameters and activations map onto devices.

The mesh has three axes from the config: `data` (batch), `fsdp` (batch + parameter
shards, ZeRO-3 style) and `model` (tensor parallel over MLP / attention heads). A size of
-1 takes the remaining devices. Logical names used by the models ('batch', 'embed', 'mlp',
'heads', 'vocab', ...) map onto mesh axes by `logical_rules`; a name mapped to None is
replicated.
"""
import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp", "model")


def mesh_shape(cfg_mesh, num_devices: int) -> tuple[int, int, int]:
  """Resolves the config's {data, fsdp, model} sizes (one may be -1) for num_devices."""
  sizes = [int(cfg_mesh.get(a, 1)) for a in AXES]
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
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(cfg_mesh, len(devices))
  return Mesh(np.asarray(devices).reshape(shape), AXES)


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
