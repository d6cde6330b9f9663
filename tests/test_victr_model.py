"""VicTR model properties (docs/method.md#4-the-victr-head to #7-baselines; issue
acceptance)."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from victr_jax import clip, models, sharding
from victr_jax.models import head as H

T, N, M, K = 4, 3, 4, 3
CATS = np.array([0, 1, 1, 2], np.int32)


def _inputs(rng, b=2):
  frames = rng.standard_normal((b, T, 32, 32, 3)).astype(np.float32)
  ct = clip.tokenize(["jumping", "running fast", "a person swimming"])[:, :8]
  at = clip.tokenize(["a rope", "a pool", "a gym", "outdoors"])[:, :8]
  return frames, ct, at, CATS


class _Jitted:
  """The model with a jitted apply (tests run compiled, not op by op)."""

  def __init__(self, model):
    self.module, self.clip_cfg = model, model.clip_cfg
    self._apply = jax.jit(model.apply, static_argnames=("train",))

  def apply(self, v, *args, train=False):
    return self._apply(v, *args, train=train)


def _build(**head):
  cfg = models.get_config("tiny")
  cfg.num_frames = T
  cfg.head.update(head)
  model = models.build_model(cfg)
  return _Jitted(model), models.init(model, num_frames=T, n=N, m=M)


def _set_gates(variables, value):
  """Every gate of the head's link to CLIP set to `value` (at the embeddings: gate_video and
  gate_text; at the logits: gate_logits)."""
  p = jax.tree.map(lambda x: x, variables["params"])
  gates = [(p["head"], k) for k in ("gate_video", "gate_text") if k in p["head"]]
  gates += [(p, "gate_logits")] if "gate_logits" in p else []
  assert gates, "the model has no gates"
  for tree, k in gates:
    tree[k] = jnp.float32(value)
  return {"params": p}


def test_outputs_and_shapes(rng):
  model, v = _build()
  out = model.apply(v, *_inputs(rng))
  assert out["logits"].shape == (2, N)
  assert out["video_embedding"].shape == (2, 32) and out["text_embeddings"].shape == (2, N, 32)
  assert out["aux_embeddings"].shape == (2, M, 32)
  assert out["category_embeddings"].shape == (2, K, 32)
  assert out["affinities"].shape == (2, 2, T, N + M)  # initial + 1 layer


@pytest.mark.parametrize("link", ["embeddings", "logits"])
def test_at_init_logits_equal_clip_frame_average_zero_shot(link, rng):
  model, v = _build(link=link)
  frames, ct, at, cats = _inputs(rng)
  logits = np.asarray(model.apply(v, frames, ct, at, cats)["logits"])
  cm, cp = clip.CLIP(model.clip_cfg), v["params"]["clip"]
  f = np.asarray(cm.apply({"params": cp}, frames, method=cm.encode_video), np.float64).mean(1)
  e = np.asarray(cm.apply({"params": cp}, ct, method=cm.encode_text), np.float64)
  scale = min(np.exp(float(cp["logit_scale"])), 100.0)
  f /= np.linalg.norm(f, axis=-1, keepdims=True)
  e /= np.linalg.norm(e, axis=-1, keepdims=True)
  np.testing.assert_allclose(logits, scale * f @ e.T, rtol=1e-4, atol=1e-4)
  # The zero-shot baseline computes the same.
  zs = _Jitted(models.build_model(dict_update(models.get_config("tiny"), name="clip_zero_shot")))
  zs_logits = zs.apply({"params": {"clip": cp}}, frames, ct)["logits"]
  np.testing.assert_allclose(zs_logits, logits, rtol=1e-5, atol=1e-5)


def test_logit_link_adds_the_heads_own_logits_through_its_gate(rng):
  """head.link='logits': CLIP's zero-shot logits + gate x (s <zv^, za^> + s sum_c gamma_c
  <zv^, zc^> <za^, zc^>), zv / za / zc the head's own embeddings (numpy)."""
  model, v = _build(link="logits")
  frames, ct, at, cats = _inputs(rng)
  p = jax.tree.map(lambda x: x, v["params"])
  assert "gate_video" not in p["head"] and float(p["gate_logits"]) == 0.0
  p["gate_logits"], p["gamma"] = jnp.float32(0.7), jnp.asarray([0.3, -0.5, 0.2], jnp.float32)
  out = model.apply({"params": p}, frames, ct, at, cats)
  cm, cp = clip.CLIP(model.clip_cfg), p["clip"]
  f = np.asarray(cm.apply({"params": cp}, frames, method=cm.encode_video), np.float64).mean(1)
  e = np.asarray(cm.apply({"params": cp}, ct, method=cm.encode_text), np.float64)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  s = min(np.exp(float(cp["logit_scale"])), 100.0)
  zv, za, zc = (np.asarray(out[k], np.float64) for k in ("video_embedding", "text_embeddings",
                                                         "category_embeddings"))
  head = s * np.einsum("bd,bnd->bn", unit(zv), unit(za)) + s * np.einsum(
      "c,bc,bnc->bn", np.asarray(p["gamma"]), np.einsum("bd,bcd->bc", unit(zv), unit(zc)),
      np.einsum("bnd,bcd->bnc", unit(za), unit(zc)))
  want = s * unit(f) @ unit(e).T + 0.7 * head
  np.testing.assert_allclose(out["logits"], want, rtol=1e-4, atol=1e-3)
  # The embeddings are the head's own (no gated link): they differ from CLIP's.
  assert np.abs(unit(zv) - unit(f)).max() > 0.1


def dict_update(cfg, **kw):
  cfg.update(kw)
  return cfg


def test_text_embeddings_depend_on_the_video(rng):
  model, v = _build()
  v = _set_gates(v, 1.0)
  frames = _inputs(rng)[0]
  frames[1] = rng.standard_normal(frames[1].shape)
  za = np.asarray(model.apply(v, frames, *_inputs(rng)[1:])["text_embeddings"])
  assert np.abs(za[0] - za[1]).max() > 1e-3
  model_c, _ = _build(text_embedding="clip")
  za_c = np.asarray(model_c.apply(v, frames, *_inputs(rng)[1:])["text_embeddings"])
  np.testing.assert_array_equal(za_c[0], za_c[1])


def test_permuting_class_prompts_permutes_logits(rng):
  model, v = _build()
  v = _set_gates(v, 0.7)
  v["params"]["gamma"] = jnp.array([0.5, -1.0, 2.0])
  frames, ct, at, cats = _inputs(rng)
  perm = np.array([2, 0, 1])
  a = np.asarray(model.apply(v, frames, ct, at, cats)["logits"])
  b = np.asarray(model.apply(v, frames, ct[perm], at, cats)["logits"])
  np.testing.assert_allclose(b, a[:, perm], rtol=1e-4, atol=1e-4)


def test_cross_modal_layer_does_not_mix_time_steps(rng):
  f, e = rng.standard_normal((1, T, 16)), rng.standard_normal((5, 16))
  layer = H.CrossModalAttention(heads=2)

  def run(f):
    x = H.token_boost(jnp.asarray(f, jnp.float32), jnp.asarray(e, jnp.float32),
                      H.initial_affinity(jnp.asarray(f), jnp.asarray(e), "softmax", 10.0))
    return np.asarray(layer.apply(params, x))

  params = layer.init(jax.random.key(0), jnp.zeros((1, T, 6, 16)))
  base = run(f)
  f2 = f.copy()
  f2[0, 1] += 1.0
  moved = run(f2)
  changed = np.abs(moved - base).max(axis=(0, 2, 3))
  assert changed[1] > 1e-3 and np.all(changed[[0, 2, 3]] == 0)


def test_class_set_change_compiles_once_per_shape(rng):
  model, v = _build()
  frames, _, at, cats = _inputs(rng, b=1)
  fwd = jax.jit(lambda v, f, c, a, k: model.module.apply(v, f, c, a, k)["logits"])
  for n in (5, 3, 5, 3, 400 // 100):
    out = fwd(v, frames, clip.tokenize([f"class {i}" for i in range(n)])[:, :8], at, cats)
    assert out.shape == (1, n)
  assert fwd._cache_size() == 3  # n = 5, 3, 4


def _pairwise(space):
  """A small set of assignments in which every pair of values of two switches occurs."""
  keys = list(space)
  uncovered = {(a, va, b, vb) for a, b in itertools.combinations(keys, 2)
               for va in space[a] for vb in space[b]}
  rows, rng = [], np.random.default_rng(0)
  while uncovered:
    best, best_cov = None, -1
    for _ in range(200):
      cand = {k: space[k][rng.integers(len(space[k]))] for k in keys}
      cov = sum((a, cand[a], b, cand[b]) in uncovered for a, b in itertools.combinations(keys, 2))
      if cov > best_cov:
        best, best_cov = cand, cov
    rows.append(best)
    uncovered -= {(a, best[a], b, best[b]) for a, b in itertools.combinations(keys, 2)}
  return rows


SWITCHES = {
    "attention": ["divided", "joint"], "token_boosting": [True, False],
    "affinity_reweighting": [True, False], "affinity_fn": ["softmax", "sigmoid", "none"],
    "classifier": ["affinity", "text", "visual"], "aux_text": [True, False],
    "video_embedding": ["victr", "clip"], "text_embedding": ["victr", "clip"],
    "gated_residual": [True, False], "affinity_standardize": [True, False],
    "gate_norm_matched": [True, False], "aux_logit_scale": [True, False],
    "temporal_relative": [True, False], "link": ["embeddings", "logits"],
    "reweight_pooled": [False, True], "aux_aggregation": ["softmax", "mean"],
}


def _forward_backward(head, rng):
  model, v = _build(num_classes=N, **head)
  frames, ct, at, cats = _inputs(rng)
  labels = jax.nn.one_hot(jnp.array([0, 2]), N)

  def loss(params):
    logits = model.module.apply({"params": params}, frames, ct, at, cats, train=True)["logits"]
    return -(labels * jax.nn.log_softmax(logits)).sum(-1).mean()

  value, grads = jax.jit(jax.value_and_grad(loss))(v["params"])
  assert np.isfinite(float(value))
  leaves = jax.tree.leaves(grads)
  assert leaves and all(np.isfinite(np.asarray(g)).all() for g in leaves)
  gnorm = sum(float(jnp.sum(g ** 2)) for g in jax.tree.leaves(grads["clip"]))
  assert gnorm > 0  # the towers are trained (not frozen by default)


@pytest.mark.parametrize("head", _pairwise(SWITCHES), ids=lambda h: "-".join(
    str(v)[:4] for v in h.values()))
def test_switch_combinations_all_pairs(head, rng):
  _forward_backward(head, rng)


PAPER_SWITCHES = {k: v for k, v in SWITCHES.items()  # the link and scale switches: pairwise
                  if k not in ("affinity_standardize", "gate_norm_matched", "aux_logit_scale",
                               "temporal_relative", "link", "reweight_pooled",
                               "aux_aggregation")}


@pytest.mark.slow
@pytest.mark.parametrize("head", [dict(zip(PAPER_SWITCHES, c))
                                  for c in itertools.product(*PAPER_SWITCHES.values())])
def test_switch_combinations_full_product(head, rng):
  _forward_backward(head, rng)


def test_empty_auxiliary_category_gives_finite_gradients(rng):
  """A vocabulary with fewer categories than head.num_aux_categories (category 2 has no
  prompt) trains: every gradient finite, and the empty category adds nothing."""
  model, v = _build()
  frames, ct, at, _ = _inputs(rng)
  cats = np.array([0, 1, 1, 0], np.int32)  # k = 3, category 2 empty
  v["params"]["gamma"] = jnp.array([0.5, -0.3, 0.8])

  def loss(params):
    logits = model.module.apply({"params": params}, frames, ct, at, cats)["logits"]
    return jax.nn.logsumexp(logits, -1).mean() - logits[:, 0].mean()

  grads = jax.jit(jax.grad(loss))(_set_gates(v, 0.5)["params"])
  bad = [jax.tree_util.keystr(p) for p, g in jax.tree_util.tree_leaves_with_path(grads)
         if not np.isfinite(np.asarray(g)).all()]
  assert not bad, f"non-finite gradients in {len(bad)} leaves, e.g. {bad[:3]}"
  assert float(grads["gamma"][2]) == 0.0
  logits = model.apply(_set_gates(v, 0.5), frames, ct, at, cats)["logits"]
  v2 = _set_gates(v, 0.5)
  v2["params"]["gamma"] = jnp.array([0.5, -0.3, 0.0])
  np.testing.assert_allclose(model.apply(v2, frames, ct, at, cats)["logits"], logits, atol=1e-5)


@pytest.mark.parametrize("name", ["mean_pool", "clip_zero_shot"])
def test_baselines_forward_backward(name, rng):
  cfg = models.get_config("tiny")
  cfg.name = name
  model = models.build_model(cfg)
  v = models.init(model, num_frames=T, n=N, m=M)
  frames, ct, _, _ = _inputs(rng)
  grads = jax.jit(jax.grad(lambda p: model.apply({"params": p}, frames, ct)["logits"].sum()))(
      v["params"])
  total = sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads))
  assert (total > 0) == (name == "mean_pool")  # zero-shot: towers frozen


def test_bad_config_names_the_field():
  cfg = models.get_config("tiny")
  cfg.head.attention = "sideways"
  with pytest.raises(ValueError, match="head.attention"):
    models.build_model(cfg)
  cfg = models.get_config("tiny")
  cfg.head.num_heads = 5
  with pytest.raises(ValueError, match="head.num_heads"):
    models.build_model(cfg)


@pytest.mark.parametrize("attention,width,layers,link", [("divided", 0, 1, "logits"),
                                                        ("joint", 48, 2, "embeddings")])
def test_head_param_formula_counts_the_params(attention, width, layers, link):
  from victr_jax.models import cost
  model, v = _build(attention=attention, width=width, num_layers=layers, link=link)
  got = sum(x.size for k, x in v["params"].items() if k != "clip" for x in jax.tree.leaves(x))
  assert got == cost.head_params(32, width=width, layers=layers, num_frames=T,
                                 attention=attention, aux_categories=K, link=link)


def test_logical_axes_shard_over_a_mesh_and_match_one_device(rng):
  """Parameters and activations carry logical names; mapped onto a 4x2 (data, model) mesh
  the model gives the single-device result."""
  import flax.linen as nn
  from jax.sharding import Mesh
  cfg = models.get_config("tiny")
  cfg.num_frames = T
  model = models.build_model(cfg)
  frames, ct, at, cats = _inputs(rng, b=4)
  boxed = jax.eval_shape(model.init, jax.random.key(0), frames, ct, at, cats)
  specs = nn.get_partition_spec(boxed)["params"]
  assert tuple(specs["head"]["layers_0"]["mlp"]["c_fc"]["kernel"]) == ("embed", "mlp")
  v = models.init(model, num_frames=T, n=N, m=M)
  want = jax.jit(model.apply)(v, frames, ct, at, cats)["logits"]

  rules = (("batch", "data"), ("mlp", "model"), ("heads", "model"), ("embed", None),
           ("vocab", None), ("time", None), ("tokens", None), ("length", None), ("proj", None))
  mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
  with sharding.use(mesh, rules):
    shardings = nn.logical_to_mesh_sharding(specs, mesh, rules)
    params = jax.device_put(v["params"], shardings)
    got = jax.jit(model.apply)({"params": params}, frames, ct, at, cats)["logits"]
  c_fc = params["head"]["layers_0"]["mlp"]["c_fc"]["kernel"]
  assert c_fc.addressable_shards[0].data.shape[1] == c_fc.shape[1] // 2  # split over 'model'
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["victr", "mean_pool"])
def test_logit_bias_shifts_every_logit_and_trains_as_a_gate(name, rng):
  """model.logit_bias: logits + b, b starting at logit_bias_init (sigmoids start small for
  multi-label BCE); in the optimiser's gate group; softmax unchanged."""
  from victr_jax import optim
  frames, ct, at, cats = _inputs(rng)
  outs = []
  for bias in (False, True):
    cfg = models.get_config("tiny")
    cfg.num_frames, cfg.name, cfg.logit_bias, cfg.logit_bias_init = T, name, bias, -7.0
    model = models.build_model(cfg)
    v = models.init(model, num_frames=T, n=N, m=M)
    outs.append(np.asarray(model.apply(v, frames, ct, at, cats)["logits"]))
  assert float(v["params"]["logit_bias"]) == -7.0
  assert optim.group_of(("logit_bias",)) == "gates"
  np.testing.assert_allclose(outs[1], outs[0] - 7.0, rtol=1e-5, atol=1e-4)
