"""The simulated device mesh works: a jitted, sharded computation equals numpy."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def test_eight_devices():
  assert jax.device_count() == 8
  assert all(d.platform == "cpu" for d in jax.devices())


def test_sharded_matmul_on_4x2_mesh_equals_numpy(rng):
  mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
  x = rng.standard_normal((16, 24)).astype(np.float32)
  w = rng.standard_normal((24, 10)).astype(np.float32)
  b = rng.standard_normal((10,)).astype(np.float32)

  xs = jax.device_put(x, NamedSharding(mesh, P("data", None)))
  ws = jax.device_put(w, NamedSharding(mesh, P(None, "model")))
  assert len(xs.addressable_shards) == 8 and xs.addressable_shards[0].data.shape == (4, 24)

  @jax.jit
  def f(x, w, b):
    y = jnp.tanh(jnp.dot(x, w, precision="highest") + b)
    return y, y.sum(axis=0)

  with mesh:
    y, col = f(xs, ws, b)
  want = np.tanh(x.astype(np.float64) @ w + b)
  np.testing.assert_allclose(np.asarray(y), want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(col), want.sum(0), rtol=1e-4, atol=1e-4)
  # The output keeps a sharding spread over all 8 devices.
  assert len(y.sharding.device_set) == 8


def test_fsdp_is_a_group_size_clipped_to_the_devices():
  from victr_jax import sharding
  mesh = {"data": -1, "fsdp": 8, "model": 1}
  assert sharding.mesh_shape(mesh, 1) == (1, 1, 1)
  assert sharding.mesh_shape(mesh, 4) == (1, 4, 1)
  assert sharding.mesh_shape(mesh, 64) == (8, 8, 1)
  assert sharding.mesh_shape(mesh, 256) == (32, 8, 1)
  assert sharding.mesh_shape({"data": -1, "fsdp": 8, "model": 2}, 8) == (1, 4, 2)
  assert sharding.mesh_shape({"data": 1, "fsdp": -1, "model": 1}, 8) == (1, 8, 1)


def test_activation_constraints_take_effect_under_sharding_use():
  """flax's nn.with_logical_constraint is a silent no-op unless the abstract mesh is set
  (jax.set_mesh); sharding.use sets it, so the constraint reaches the program."""
  import flax.linen as nn
  from victr_jax import sharding
  mesh = sharding.make_mesh({"data": 1, "fsdp": -1, "model": 1})
  f = jax.jit(lambda x: nn.with_logical_constraint(2 * x, ("batch", "embed")))
  x = jnp.ones((16, 4))
  with mesh:  # the legacy context: nothing constrained
    assert "sharding_constraint" not in f.lower(x).as_text()
  with sharding.use(mesh, sharding.logical_rules()):
    assert sharding.logical_axis_size("batch") == 8
    assert "sharding_constraint" in f.lower(x).as_text()
  assert sharding.logical_axis_size("batch") == 1


def test_prompts_are_padded_and_split_over_the_batch_shards():
  """The text tower's prompts (29, not a multiple of 8) are padded with empty prompts to
  32 and split 4 per device, like a batch of videos."""
  from victr_jax import sharding
  from victr_jax.models.victr import shard_prompts
  mesh = sharding.make_mesh({"data": 1, "fsdp": -1, "model": 1})
  tokens = jnp.arange(29 * 5, dtype=jnp.int32).reshape(29, 5) + 1
  with sharding.use(mesh, sharding.logical_rules()):
    out = jax.jit(shard_prompts)(tokens)
  assert out.shape == (32, 5)
  np.testing.assert_array_equal(np.asarray(out[:29]), np.asarray(tokens))
  assert not np.asarray(out[29:]).any()
  assert {s.data.shape for s in out.addressable_shards} == {(4, 5)}
