"""Memory options of the VicTR head (docs/method.md#memory-remat-and-blocked-attention):
`remat` (each layer rematerialised) and `attention_chunk` (every attention computed a
block of queries at a time) change neither the parameters nor the numbers."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from victr_jax import clip, models, sharding
from victr_jax.models import head as H

B, T, J, D, HEADS, SCALE, N_CLS = 2, 3, 6, 16, 2, 7.0, 2  # 1 + J = 7 tokens per frame


def _data(rng, b=B):
  return (jnp.asarray(rng.standard_normal((b, T, D)), jnp.float32),
          jnp.asarray(rng.standard_normal((J, D)), jnp.float32))


# The CLIP scale on raw cosines and a raw gate at the embeddings: in float32 the model's
# defaults (z-scored cosines, norm-matched gate) amplify rounding too much for a 1e-5
# comparison of gradients (test_exact_in_float64 takes them).
RAW = dict(affinity_standardize=False, affinity_temperature=0.0, gate_norm_matched=False,
           temporal_relative=False, temporal_init_std=0.02)


def _head(**kw):
  """Two layers, 7 tokens per frame, gates at the embeddings; RAW unless kw says."""
  return H.VicTRHead(num_classes_text=N_CLS, num_layers=2, num_heads=HEADS, num_frames=T,
                     **dict(RAW, embedding_link=True, **kw))


MODEL_DEFAULTS = dict(affinity_standardize=True, affinity_temperature=0.5,
                      gate_norm_matched=True, temporal_relative=True)


def _params(module, f, e):
  """Initial parameters, all moved off their init (non-zero gates: the head's output
  reaches the embeddings, so every parameter has a gradient)."""
  params = nn.unbox(module.init(jax.random.key(0), f, e, SCALE)["params"])
  params = jax.tree.map(lambda v: v + 0.1 * jax.random.normal(jax.random.key(v.size), v.shape),
                        params)
  return dict(params, gate_video=params["gate_video"] + 0.3,
              gate_text=params["gate_text"] + 0.3)


def _loss(module):
  """A fixed random linear function of every output (affinities included)."""
  def loss(params, f, e):
    out = module.apply({"params": params}, f, e, SCALE)
    r = np.random.default_rng(1)
    return sum(jnp.sum(out[k] * r.standard_normal(out[k].shape).astype(out[k].dtype))
               for k in ("video", "action_text", "aux_text", "affinities"))
  return loss


def _assert_trees_close(got, want, tol=1e-5):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=tol, atol=tol,
                               err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("block", [1, 2, 3, 4, 6, 7, 50])
def test_blocked_attention_equals_dot_product_attention(block, rng):
  """L = 7 queries in blocks of 1 .. 7 (3 and 4 do not divide 7: padded, then cut) or more
  (one call); S = 5 keys; outputs and gradients as one call."""
  q, k, v = (jnp.asarray(rng.standard_normal((3, length, 2, 4)), jnp.float32)
             for length in (7, 5, 5))
  want = jax.nn.dot_product_attention(q, k, v)
  got = jax.jit(H.blocked_attention, static_argnums=3)(q, k, v, block)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  cot = jnp.asarray(rng.standard_normal(want.shape), jnp.float32)
  grad = lambda fn: jax.grad(lambda *a: jnp.sum(fn(*a) * cot), argnums=(0, 1, 2))(q, k, v)
  _assert_trees_close(jax.jit(lambda: grad(lambda *a: H.blocked_attention(*a, block)))(),
                      grad(jax.nn.dot_product_attention))


@pytest.mark.parametrize("attention", ["divided", "joint"])
@pytest.mark.parametrize("opts", [dict(remat=True), dict(attention_chunk=3),
                                  dict(attention_chunk=1), dict(remat=True, attention_chunk=2)],
                         ids=["remat", "chunk3", "chunk1", "remat_chunk2"])
def test_head_outputs_and_gradients_equal_the_plain_head(attention, opts, rng):
  """With remat and/or chunked attention the head has the plain head's parameter tree
  (names, shapes, initial values) and gives its outputs and gradients (parameters and
  inputs) within 1e-5. Chunks of 3 and 2 divide neither the 7 tokens of a frame, the 3
  frames of a token position nor the 21 tokens of a video."""
  f, e = _data(rng)
  plain, other = _head(attention=attention), _head(attention=attention, **opts)
  want_init = nn.unbox(plain.init(jax.random.key(0), f, e, SCALE))
  got_init = nn.unbox(other.init(jax.random.key(0), f, e, SCALE))
  _assert_trees_close(got_init, want_init, tol=0)
  params = _params(plain, f, e)
  assert abs(float(params["gate_video"])) > 0.01 and abs(float(params["gate_text"])) > 0.01
  _assert_trees_close(jax.jit(other.apply)({"params": params}, f, e, SCALE),
                      jax.jit(plain.apply)({"params": params}, f, e, SCALE))
  grad = lambda m: jax.jit(jax.value_and_grad(_loss(m), argnums=(0, 1, 2)))(params, f, e)
  (got_value, got_grads), (want_value, want_grads) = grad(other), grad(plain)
  np.testing.assert_allclose(got_value, want_value, rtol=1e-5, atol=1e-5)
  _assert_trees_close(got_grads, want_grads)
  assert float(jnp.abs(want_grads[0]["layers_0"]["mlp"]["c_fc"]["kernel"]).sum()) > 0


@pytest.mark.parametrize("attention", ["divided", "joint"])
def test_exact_in_float64(attention, rng, monkeypatch):
  """The same computation, not an approximation: in float64 (jax.nn.dot_product_attention
  replaced by an exact float64 attention, since it always takes its softmax in float32),
  with the model's affinity defaults, the rematerialised and chunked heads give the plain
  head's outputs and gradients to 1e-11 relative."""
  def exact_attention(q, k, v, is_causal=False):
    assert not is_causal
    s = jnp.einsum("gqhd,gkhd->ghqk", q, k) / np.sqrt(q.shape[-1])
    return jnp.einsum("ghqk,gkhd->gqhd", jax.nn.softmax(s, axis=-1), v)
  monkeypatch.setattr(jax.nn, "dot_product_attention", exact_attention)
  with jax.enable_x64(True):
    f, e = (x.astype(jnp.float64) for x in _data(rng))
    head = lambda **kw: _head(attention=attention, dtype=jnp.float64, **MODEL_DEFAULTS, **kw)
    plain = head()
    params = jax.tree.map(lambda v: v.astype(jnp.float64), _params(plain, f, e))
    step = lambda m: jax.jit(jax.value_and_grad(_loss(m), argnums=(0, 1, 2)))(params, f, e)
    want = step(plain)
    assert want[1][0]["layers_0"]["mlp"]["c_fc"]["kernel"].dtype == jnp.float64
    scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(want))
    for opts in (dict(attention_chunk=3), dict(attention_chunk=1),
                 dict(remat=True, attention_chunk=2)):
      _assert_trees_close(step(head(**opts)), want, tol=1e-11 * scale)


def test_remat_and_chunk_are_off_by_default_and_reach_the_head():
  cfg = models.get_config("tiny")
  assert cfg.remat is False and cfg.head.attention_chunk == 0
  cfg.head.attention_chunk = -1
  with pytest.raises(ValueError, match="head.attention_chunk"):
    models.build_model(cfg)


def test_model_with_remat_and_chunks_equals_the_default_model(rng):
  """The whole model (towers and head rematerialised, chunked head attention) has the
  default model's variables and logits; a version-1 config without the field (an older
  work directory's, migrated when read) builds the default model."""
  from victr_jax import config_version
  t = 4
  cfg = models.get_config("tiny")
  cfg.num_frames, cfg.head.link = t, "embeddings"
  plain = models.build_model(cfg)
  old = cfg.to_dict()
  cfg.remat, cfg.head.attention_chunk = True, 3
  other = models.build_model(cfg)
  del old["head"]["attention_chunk"]
  legacy = models.build_model(ml_collections.ConfigDict(config_version.migrate({"model": old})["model"]))
  assert legacy.cfg.head.attention_chunk == 0
  v = models.init(plain, num_frames=t, n=3, m=4)
  _assert_trees_close(models.init(other, num_frames=t, n=3, m=4), v, tol=0)
  p = jax.tree.map(lambda x: x, v["params"])
  p["head"]["gate_video"], p["head"]["gate_text"] = jnp.float32(0.5), jnp.float32(0.5)
  frames = rng.standard_normal((2, t, 32, 32, 3)).astype(np.float32)
  ct = clip.tokenize(["jumping", "running fast", "a person swimming"])[:, :8]
  at = clip.tokenize(["a rope", "a pool", "a gym", "outdoors"])[:, :8]
  args = (frames, ct, at, np.array([0, 1, 1, 2], np.int32))
  want = jax.jit(plain.apply)({"params": p}, *args)["logits"]
  np.testing.assert_allclose(jax.jit(other.apply)({"params": p}, *args)["logits"], want,
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(jax.jit(legacy.apply)({"params": p}, *args)["logits"], want,
                             rtol=0, atol=0)


def test_chunked_head_shards_over_a_mesh_and_matches_one_device(rng):
  """Chunking splits the query axis, not the batch: on a 4x2 (data, model) mesh with the
  batch over 'data', the chunked, rematerialised head gives the single-device loss and
  gradients."""
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  f, e = _data(rng, b=4)
  module = _head(attention="divided", remat=True, attention_chunk=3)
  params = _params(module, f, e)
  step = lambda p, f, e: jax.value_and_grad(_loss(module))(p, f, e)
  want = jax.jit(step)(params, f, e)
  boxed = jax.eval_shape(module.init, jax.random.key(0), f, e, SCALE)
  specs = nn.get_partition_spec(boxed)["params"]
  rules = (("batch", "data"), ("mlp", "model"), ("heads", "model"), ("embed", None),
           ("time", None), ("tokens", None), ("length", None), ("proj", None))
  mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
  with sharding.use(mesh, rules):
    p = jax.device_put(params, nn.logical_to_mesh_sharding(specs, mesh, rules))
    fs = jax.device_put(f, NamedSharding(mesh, P("data")))
    got = jax.jit(step)(p, fs, e)
  assert fs.addressable_shards[0].data.shape[0] == 1
  _assert_trees_close(got, want)


def _temp_bytes(module, x, grad):
  params = jax.eval_shape(lambda x: nn.unbox(module.init(jax.random.key(0), x)), x)
  fn = (jax.grad(lambda p, x: jnp.sum(module.apply(p, x) ** 2)) if grad else module.apply)
  analysis = jax.jit(fn).lower(params, x).compile().memory_analysis()
  return None if analysis is None else analysis.temp_size_in_bytes


@pytest.mark.parametrize("grad", [False, True], ids=["forward", "gradient"])
@pytest.mark.parametrize("name", ["cross_modal", "joint"])
def test_chunking_bounds_the_attention_temporaries(name, grad):
  """Compiled temporaries (XLA's memory analysis, no run): cross-modal attention over
  (B, T, N) = (2, 4, 256) tokens, 4 heads, has 8 MiB of scores per copy; joint attention
  over the same tokens 32 MiB. In blocks of 16 queries the temporaries are at least 3x
  smaller."""
  cls = {"cross_modal": H.CrossModalAttention, "joint": H.JointAttention}[name]
  x = jax.ShapeDtypeStruct((2, 4, 256, 32), jnp.float32)
  plain, chunked = (_temp_bytes(cls(4, chunk=c), x, grad) for c in (0, 16))
  if plain is None or chunked is None:
    pytest.skip("this backend gives no memory analysis")
  assert chunked * 3 < plain, (chunked, plain)


@pytest.mark.parametrize("videos", [1, 3])
def test_video_chunks_equal_the_whole_batch(videos, rng):
  """head.video_chunk runs the head a few videos at a time (lax.map, rematerialised): the
  same variables, logits, affinities and gradients as the whole batch at once."""
  t, b = 3, 4
  cfg = models.get_config("tiny")
  cfg.num_frames = t
  plain = models.build_model(cfg)
  cfg.head.video_chunk = videos
  other = models.build_model(cfg)
  v = models.init(plain, num_frames=t, n=3, m=4)
  _assert_trees_close(models.init(other, num_frames=t, n=3, m=4), v, tol=0)
  p = jax.tree.map(lambda x: x, v["params"])
  p["head"]["gate_video"], p["head"]["gate_text"] = jnp.float32(0.5), jnp.float32(0.5)
  frames = rng.standard_normal((b, t, 32, 32, 3)).astype(np.float32)
  ct = clip.tokenize(["jumping", "running fast", "a person swimming"])[:, :8]
  at = clip.tokenize(["a rope", "a pool", "a gym", "outdoors"])[:, :8]
  args = (frames, ct, at, np.array([0, 1, 1, 2], np.int32))
  want = jax.jit(plain.apply)({"params": p}, *args)
  got = jax.jit(other.apply)({"params": p}, *args)
  for k in ("logits", "affinities", "video_embedding"):
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5)

  def loss(model):
    return lambda q: jnp.sum(model.apply({"params": q}, *args)["logits"] ** 2)

  _assert_trees_close(jax.jit(jax.grad(loss(other)))(p), jax.jit(jax.grad(loss(plain)))(p),
                      tol=1e-4)
  cfg.head.video_chunk = -1
  with pytest.raises(ValueError, match="head.video_chunk"):
    models.build_model(cfg)
