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
