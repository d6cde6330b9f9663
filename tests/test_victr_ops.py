"""Each VicTR operation against an independent numpy computation (the equations:
docs/method.md#4-the-victr-head)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import victr_numpy as ref
from victr_jax.models import head as H

B, T, J, D, HEADS, SCALE = 2, 3, 5, 8, 2, 7.0


@pytest.fixture
def data(rng):
  return (rng.standard_normal((B, T, D)), rng.standard_normal((J, D)),
          rng.standard_normal((B, T, 1 + J, D)))


def _f32(*xs):
  return [jnp.asarray(x, jnp.float32) for x in xs]


def _init(module, x, rng_seed=1):
  params = nn.unbox(module.init(jax.random.key(rng_seed), x)["params"])
  # Random LayerNorm parameters too, so the reference sees non-trivial ones.
  params = jax.tree_util.tree_map_with_path(
      lambda p, v: v + 0.1 * jax.random.normal(jax.random.key(hash(str(p)) % 1000), v.shape),
      params)
  return jax.tree.map(lambda v: np.asarray(v, np.float64), params)


@pytest.mark.parametrize("fn", ["softmax", "sigmoid", "none"])
def test_initial_affinity(fn, data):
  f, e, _ = data
  got = H.initial_affinity(*_f32(f, e), fn, SCALE)
  want = ref.initial_affinity(f, e, fn, SCALE)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  if fn == "softmax":
    np.testing.assert_allclose(np.asarray(got).mean(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("fn", ["softmax", "sigmoid"])
def test_initial_affinity_standardized_by_group(fn, data):
  """z-scored cosines, class prompts (first 2) and auxiliary ones (last 3) apart; the
  weights do not change when the cosines are shifted and stretched within a group."""
  f, e, _ = data
  got = H.initial_affinity(*_f32(f, e), fn, 2.0, True, (2, 3))
  np.testing.assert_allclose(got, ref.initial_affinity(f, e, fn, 2.0, True, (2, 3)),
                             rtol=1e-4, atol=1e-5)
  cos = np.random.default_rng(1).normal(0.2, 0.1, (4, 7))
  moved = np.concatenate([3 * cos[:, :4] + 0.1, 2 * cos[:, 4:] - 0.2], -1)
  a = H.affinity_weights(jnp.asarray(cos, jnp.float32), fn, 1.0, True, (4, 3))
  b = H.affinity_weights(jnp.asarray(moved, jnp.float32), fn, 1.0, True, (4, 3))
  # Equal up to eps (1e-3 in cosine units), small beside these spreads of a few hundredths.
  np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3)


def test_effective_tokens():
  w = jnp.asarray([[1.0, 1.0, 1.0, 1.0], [4.0, 0.0, 0.0, 0.0], [2.0, 2.0, 0.0, 0.0]])
  np.testing.assert_allclose(H.effective_tokens(w), [1.0, 0.25, 0.5], rtol=1e-6)


@pytest.mark.parametrize("boost", [True, False])
def test_token_boost(boost, data):
  f, e, _ = data
  a0 = ref.initial_affinity(f, e, "softmax", SCALE)
  got = H.token_boost(*_f32(f, e), jnp.asarray(a0, jnp.float32) if boost else None)
  np.testing.assert_allclose(got, ref.token_boost(f, e, a0 if boost else None), rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize("name", ["cross_modal", "temporal", "joint"])
def test_attention_ops(name, data):
  x = data[2]
  module = {"cross_modal": H.CrossModalAttention, "temporal": H.TemporalAttention,
            "joint": H.JointAttention}[name](HEADS)
  params = _init(module, jnp.asarray(x, jnp.float32))
  got = module.apply({"params": params}, jnp.asarray(x, jnp.float32))
  want = getattr(ref, name)(x, params, HEADS)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fn,pooled", [("softmax", False), ("sigmoid", False),
                                       ("softmax", True)])
def test_affinity_reweight(fn, pooled, data):
  """Each frame's tokens scaled (default), or the pooled tokens (reweight_pooled)."""
  x = data[2]
  got_x, got_a = H.affinity_reweight(jnp.asarray(x, jnp.float32), fn, SCALE, pooled=pooled)
  want_x, want_a = ref.affinity_reweight(x, fn, SCALE, pooled=pooled)
  np.testing.assert_allclose(got_a, want_a, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got_x, want_x, rtol=1e-4, atol=1e-5)


def test_temporal_pool(data):
  np.testing.assert_allclose(H.temporal_pool(jnp.asarray(data[2])), data[2].mean(1), atol=1e-6)


@pytest.mark.parametrize("rule", ["softmax", "mean"])
def test_aggregate_auxiliary(rule, rng):
  m, k = 6, 4  # category 3 is empty: zeros
  zv, zx = rng.standard_normal((B, D)), rng.standard_normal((B, m, D))
  cats = np.array([0, 2, 0, 1, 2, 2])
  got = H.aggregate_auxiliary(*_f32(zv, zx), jnp.asarray(cats), k, SCALE, rule)
  np.testing.assert_allclose(got, ref.aggregate_auxiliary(zv, zx, cats, k, SCALE, rule),
                             rtol=1e-4, atol=1e-5)
  assert np.all(np.asarray(got)[:, 3] == 0)


@pytest.mark.parametrize("with_aux,aux_scale", [(True, 1.0), (True, SCALE), (False, 1.0)])
def test_affinity_logits(with_aux, aux_scale, rng):
  n, k = 4, 3
  zv, za, zc = (rng.standard_normal((B, D)), rng.standard_normal((B, n, D)),
                rng.standard_normal((B, k, D)))
  gamma = rng.standard_normal(k)
  got = H.affinity_logits(*_f32(zv, za), *(_f32(zc, gamma) if with_aux else (None, None)), SCALE,
                          aux_scale)
  want = ref.affinity_logits(zv, za, zc if with_aux else None, gamma, SCALE, aux_scale)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("new,pooled", [(False, False), (True, False), (True, True)],
                         ids=["old_defaults", "new_defaults", "reweight_pooled"])
def test_whole_head_against_numpy(new, pooled, rng):
  """The head's wiring (embeddings, layer order, pooling, gates) equals the composition of
  the numpy operations, with non-zero gates and two layers; with the old affinity and link
  (CLIP scale on raw cosines, raw gate) and the new ones (z-scored cosines by group with a
  temperature, norm-matched gate)."""
  n = 3
  f, e = rng.standard_normal((B, T, D)), rng.standard_normal((J, D))
  opts = dict(affinity_standardize=new, affinity_temperature=0.7 if new else 0.0,
              gate_norm_matched=new, temporal_relative=new)
  module = H.VicTRHead(num_classes_text=n, num_layers=2, num_heads=HEADS, num_frames=T,
                       reweight_pooled=pooled, embedding_link=True, **opts)
  params = nn.unbox(module.init(jax.random.key(0), *_f32(f, e), SCALE)["params"])
  params = jax.tree.map(lambda v: v + 0.1 * jax.random.normal(jax.random.key(v.size), v.shape),
                        params)
  out = module.apply({"params": params}, *_f32(f, e), SCALE)
  p64 = jax.tree.map(lambda v: np.asarray(v, np.float64), params)
  video, action, aux, affs = ref.head(p64, f, e, n, SCALE, HEADS, "softmax",
                                      opts["affinity_standardize"],
                                      opts["affinity_temperature"], opts["gate_norm_matched"],
                                      opts["temporal_relative"], pooled)
  assert abs(float(p64["gate_video"])) > 0.01 and abs(float(p64["gate_text"])) > 0.01
  np.testing.assert_allclose(out["video"], video, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out["action_text"], action, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out["aux_text"], aux, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out["affinities"], affs, rtol=1e-4, atol=1e-4)
