"""The VicTR video head, one function or module per operation of the paper.

Notation (docs/method.md#2-notation-and-shapes; the equations in full with their defaults:
docs/method.md#4-the-victr-head): B videos, T frames, n class prompts, m auxiliary prompts
in k categories, J = n + m text tokens, D the CLIP embedding size, W the head width.
`^` is L2 normalisation, `s` the CLIP logit scale, `beta` g's scale (1 / temperature, or s).

  affinity_weights      g: J softmax_j(beta z), z the cosines z-scored per prompt group
                        (or raw); or sigmoid, or none
  initial_affinity      a0[b,t,j] = g(<f^[b,t], e^[j]>)
  token_boost           x[b,t,0] = f[b,t];  x[b,t,1+j] = a0[b,t,j] e[j]
  CrossModalAttention   attention over the 1+J tokens of each (b, t)
  TemporalAttention     attention over t for each token position, shared
  (clip.model.blocked_attention: the same attention, `block` queries at a time)
  affinity_reweight     a[b,t,j] = g(<v^[b,t], ubar^[b,j]>);  u[b,t,j] *= a
                        (reweight_pooled: u[b,t,j] = a ubar[b,j])
  temporal_pool         mean over t
  gated_link            clip + gate |clip| head^ (zero gates: the model starts as CLIP)
  gated_logits          clip_logits + gate head_logits (head.link='logits': the other join)
  aggregate_auxiliary   zc[b,c] = sum_{j in c} softmax_j(s <zv^, zx^[j]>) zx[b,j] (or the mean)
  affinity_logits       s <zv^, za^[i]> + s_aux sum_c gamma_c <zv^, zc^[c]> <za^[i], zc^[c]>
"""
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from victr_jax.clip.model import (  # noqa: F401  (blocked_attention: re-exported)
    MLP, LayerNorm, MultiheadAttention, blocked_attention, l2_normalize, map_steps)

Dtype = Any
AFFINITY_FNS = ("softmax", "sigmoid", "none")
# The head's switches and their defaults, set here once: VicTRHead's fields default to
# them and the model config's `head` (models/config.py) is built from them.
DEFAULTS = dict(
    num_layers=1,
    mlp_ratio=4.0,
    attention="divided",         # 'divided' (cross-modal then temporal) | 'joint'
    token_boosting=True,
    affinity_reweighting=True,
    reweight_pooled=False,       # re-weighting scales each frame's text tokens (False) or
                                 # the tokens pooled over time (True)
    affinity_fn="softmax",       # g: 'softmax' | 'sigmoid' | 'none'
    affinity_standardize=True,   # g on z-scored cosines, class and auxiliary prompts apart
    affinity_temperature=0.5,    # g's temperature; 0: the CLIP logit scale (raw cosines)
    gate_norm_matched=True,      # the embedding link's gate scales a head output of CLIP's
                                 # length
    temporal_init_std=3.0,       # init std of the temporal position embedding, in units of
    temporal_relative=True,      # each video's frame-embedding RMS (False: absolute)
    attention_chunk=0,           # > 0: each head attention computes this many queries of
                                 # every sequence at a time (bounded memory; same result)
)
_constrain = nn.with_logical_constraint
_part = nn.with_logical_partitioning


def affinity_weights(cos: jax.Array, fn: str, scale, standardize: bool = False,
                     groups: Optional[tuple[int, ...]] = None) -> jax.Array:
  """g: cosine affinities (..., J) -> weights (..., J) with mean about 1.

  With standardize, cos is first z-scored over j (separately within each group of columns
  given by `groups`, e.g. (n, m): class prompts, then auxiliary prompts), so the weights
  depend neither on how spread the cosines are nor on how many prompts there are; `scale`
  is then the inverse temperature of the z-scores.

  softmax: J * softmax_j(scale * x)       (mean exactly 1)
  sigmoid: 2 * sigmoid(scale * (x - mean_j x))
  none:    1
  x = cos, or its z-scores.
  """
  cos = cos.astype(jnp.float32)
  j = cos.shape[-1]
  if standardize:
    cos = standardize_groups(cos, groups or (j,))
  if fn == "softmax":
    return j * jax.nn.softmax(scale * cos, axis=-1)
  if fn == "sigmoid":
    return 2.0 * jax.nn.sigmoid(scale * (cos - cos.mean(-1, keepdims=True)))
  if fn == "none":
    return jnp.ones_like(cos)
  raise ValueError(f"affinity_fn={fn!r}: expected one of {AFFINITY_FNS}")


def standardize_groups(x: jax.Array, groups: tuple[int, ...], eps: float = 1e-3) -> jax.Array:
  """z-scores of x (..., J) over its last axis, within each consecutive group of columns
  (sizes `groups`, summing to J; empty groups allowed). A group of one column gives 0.
  eps (in cosine units, far below CLIP's spreads of a few hundredths) bounds the gain for
  groups of near-identical prompts."""
  out, start = [], 0
  for size in groups:
    g = x[..., start:start + size]
    start += size
    if size == 0:
      continue
    mu = g.mean(-1, keepdims=True)
    var = ((g - mu) ** 2).mean(-1, keepdims=True)
    out.append((g - mu) * jax.lax.rsqrt(var + eps * eps))
  if start != x.shape[-1]:
    raise ValueError(f"affinity groups {groups} do not sum to the {x.shape[-1]} prompts")
  return jnp.concatenate(out, axis=-1)


def effective_tokens(weights: jax.Array) -> jax.Array:
  """exp(entropy) of the normalised weights over the last axis, as a fraction of J."""
  p = weights / weights.sum(-1, keepdims=True)
  h = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)
  return jnp.exp(h) / weights.shape[-1]


def initial_affinity(frames: jax.Array, text: jax.Array, fn: str, scale,
                     standardize: bool = False, groups=None) -> jax.Array:
  """a0[b,t,j] = g(<f^[b,t], e^[j]>). frames (B, T, D), text (J, D) -> (B, T, J)."""
  cos = jnp.einsum("btd,jd->btj", l2_normalize(frames.astype(jnp.float32)),
                   l2_normalize(text.astype(jnp.float32)))
  return affinity_weights(cos, fn, scale, standardize, groups)


def token_boost(frames: jax.Array, text: jax.Array, a0: Optional[jax.Array]) -> jax.Array:
  """Per video and frame, the visual token beside an affinity-weighted copy of every text
  token. frames (B, T, D), text (J, D), a0 (B, T, J) or None (boosting off: weight 1)
  -> tokens (B, T, 1 + J, D)."""
  b, t, d = frames.shape
  txt = jnp.broadcast_to(text.astype(frames.dtype), (b, t, *text.shape))
  if a0 is not None:
    txt = a0[..., None].astype(frames.dtype) * txt
  return jnp.concatenate([frames[:, :, None, :], txt], axis=2)


def _mapped(module: nn.Module, xs, *args):
  """A bound module applied to each xs[s] in turn (lax.map, each step rematerialised), its
  other arguments shared: module(xs[s], *args) stacked over s, with its own parameters."""
  params = module.variables["params"]
  plain = module.clone(parent=None)
  return map_steps(lambda x: plain.apply({"params": params}, x, *args), xs)


def frame_blocked(module: nn.Module, x: jax.Array) -> jax.Array:
  """module (a bound, token-wise (B, L, W) -> (B, L, W) module such as the MLP) applied
  to x (B, T, N, W) one frame at a time: lax.map over T, each step rematerialised, so the
  module's hidden activations are held for one frame, not T. Same parameters and result."""
  return jnp.moveaxis(_mapped(module, jnp.moveaxis(x, 1, 0)), 0, 1)


def video_blocked(head: nn.Module, frames: jax.Array, text: jax.Array, scale,
                  videos: int) -> dict:
  """head(frames, text, scale) (a bound VicTRHead) run on at most `videos` videos at a
  time: lax.map over steps, each rematerialised, so the head's activations are held for
  one step's videos, not the batch's. Step s takes videos s, s + S, s + 2S, ... (S steps),
  so every step draws from every data-parallel shard of the batch. Same parameters and
  result. frames (B, T, D) -> the head's dict (affinities (L+1, B, T, J))."""
  b = frames.shape[0]
  steps = next(s for s in range(-(-b // videos), b + 1) if b % s == 0)  # S divides B
  xs = jnp.moveaxis(frames.reshape(b // steps, steps, *frames.shape[1:]), 1, 0)
  out = _mapped(head, xs, text, scale)  # every value (S, B / S, ...); affinities (S, L+1, ...)

  def merge(x, axis):  # (S, ..., B / S at axis + 1, ...) -> (..., B at axis, ...)
    x = jnp.moveaxis(x, 0, axis + 1)  # B / S then S: video i * S + s
    return x.reshape(*x.shape[:axis], b, *x.shape[axis + 2:])

  return {k: None if v is None else merge(v, 1 if k == "affinities" else 0)
          for k, v in out.items()}


def _mha(heads: int, chunk: int, dtype) -> nn.Module:
  """The attention of the head's layers: CLIP's MultiheadAttention, with chunk > 0
  computing `chunk` queries of each sequence per step (same parameters, same result)."""
  return MultiheadAttention(heads, dtype=dtype, query_block=chunk, name="attn")


class CrossModalAttention(nn.Module):
  """Pre-LN residual self-attention along the token axis within each time step: the
  visual token sees all text tokens of its frame and each text token sees that frame's
  visual token and the other text tokens. Nothing crosses time. (B, T, N, W) -> same.
  chunk > 0: `chunk` of the N queries of every frame per step (blocked_attention)."""
  heads: int
  dtype: Dtype = jnp.float32
  chunk: int = 0

  @nn.compact
  def __call__(self, x):
    b, t, n, w = x.shape
    h = LayerNorm(dtype=self.dtype, name="ln")(x).reshape(b * t, n, w)
    h = _mha(self.heads, self.chunk, self.dtype)(h)
    return x + h.reshape(b, t, n, w)


class TemporalAttention(nn.Module):
  """Pre-LN residual self-attention along time for each token position, one set of weights
  shared by the visual and text tokens. (B, T, N, W) -> same.
  chunk > 0: `chunk` of the T queries of every token position per step."""
  heads: int
  dtype: Dtype = jnp.float32
  chunk: int = 0

  @nn.compact
  def __call__(self, x):
    b, t, n, w = x.shape
    h = LayerNorm(dtype=self.dtype, name="ln")(x)
    h = h.transpose(0, 2, 1, 3).reshape(b * n, t, w)
    h = _mha(self.heads, self.chunk, self.dtype)(h)
    return x + h.reshape(b, n, t, w).transpose(0, 2, 1, 3)


class JointAttention(nn.Module):
  """Ablation: one pre-LN residual attention over all T(1+J) tokens of a video.
  chunk > 0: `chunk` of the T(1+J) queries of every video per step."""
  heads: int
  dtype: Dtype = jnp.float32
  chunk: int = 0

  @nn.compact
  def __call__(self, x):
    b, t, n, w = x.shape
    h = LayerNorm(dtype=self.dtype, name="ln")(x).reshape(b, t * n, w)
    h = _mha(self.heads, self.chunk, self.dtype)(h)
    return x + h.reshape(b, t, n, w)


def affinity_reweight(x: jax.Array, fn: str, scale, standardize: bool = False,
                      groups=None, pooled: bool = False) -> tuple[jax.Array, jax.Array]:
  """Split visual v[b,t] = x[b,t,0] and text u[b,t,j] = x[b,t,1+j]; pool text over time
  ubar[b,j]; a[b,t,j] = g(<v^[b,t], ubar^[b,j]>); u[b,t,j] *= a[b,t,j] (each frame's own
  token), or with `pooled` u[b,t,j] = a[b,t,j] ubar[b,j] (the pooled token, the other
  reading of "pool over time, then re-weight"); re-join.
  x (B, T, 1+J, W) -> (x', a (B, T, J))."""
  v, u = x[:, :, 0], x[:, :, 1:]
  ubar = u.astype(jnp.float32).mean(axis=1)
  cos = jnp.einsum("btw,bjw->btj", l2_normalize(v.astype(jnp.float32)), l2_normalize(ubar))
  a = affinity_weights(cos, fn, scale, standardize, groups)
  target = jnp.broadcast_to(ubar[:, None].astype(u.dtype), u.shape) if pooled else u
  return jnp.concatenate([v[:, :, None], target * a[..., None].astype(u.dtype)], axis=2), a


class VicTRLayer(nn.Module):
  """Cross-modal attention, temporal attention (or one joint attention), affinity
  re-weighting, MLP. x (B, T, 1+J, W) -> (x', a (B, T, J) or None)."""
  heads: int
  mlp_dim: int
  attention: str = "divided"
  reweight: bool = True
  affinity_fn: str = "softmax"
  affinity_standardize: bool = False
  affinity_groups: Optional[tuple[int, ...]] = None  # (n, m), for standardize
  dtype: Dtype = jnp.float32
  attention_chunk: int = 0  # > 0: queries per step of each attention (blocked_attention)
  reweight_pooled: bool = False  # affinity_reweight(pooled=...)

  @nn.compact
  def __call__(self, x, scale):
    """scale: g's scale (the CLIP logit scale or 1 / temperature)."""
    x = _constrain(x, ("batch", "time", "tokens", "embed"))
    if self.attention == "divided":
      x = CrossModalAttention(self.heads, self.dtype, self.attention_chunk,
                              name="cross_modal")(x)
      x = TemporalAttention(self.heads, self.dtype, self.attention_chunk, name="temporal")(x)
    elif self.attention == "joint":
      x = JointAttention(self.heads, self.dtype, self.attention_chunk, name="joint")(x)
    else:
      raise ValueError(f"attention={self.attention!r}: expected 'divided' or 'joint'")
    a = None
    if self.reweight:
      x, a = affinity_reweight(x, self.affinity_fn, scale, self.affinity_standardize,
                               self.affinity_groups, self.reweight_pooled)
    b, t, n, w = x.shape
    h = LayerNorm(dtype=self.dtype, name="ln_mlp")(x)
    mlp = MLP(self.mlp_dim, "gelu", self.dtype, name="mlp")
    if self.attention_chunk > 0 and t > 1 and not self.is_initializing():
      h = frame_blocked(mlp, h)  # the (B, T N, mlp_dim) hidden layer, one frame at a time
    else:
      h = mlp(h.reshape(b, t * n, w)).reshape(b, t, n, w)
    return x + h, a


def frames_rms(frames: jax.Array) -> jax.Array:
  """Root mean square of each video's frame embeddings, a constant for the gradient:
  frames (B, T, D) -> (B,)."""
  f = jax.lax.stop_gradient(frames.astype(jnp.float32))
  return jnp.sqrt(jnp.mean(jnp.square(f), axis=(1, 2)))


def temporal_pool(x: jax.Array) -> jax.Array:
  """Mean over time: (B, T, ...) -> (B, ...)."""
  return x.mean(axis=1)


AGGREGATIONS = ("softmax", "mean")


def aggregate_auxiliary(zv: jax.Array, zx: jax.Array, categories: jax.Array, k: int,
                        scale, rule: str = "softmax") -> jax.Array:
  """One embedding per semantic category: zc[b,c] = sum_{j in c} w[b,j] zx[b,j] with
  w = softmax over the j in c of s <zv^, zx^[j]> (rule 'softmax'), or w = 1 / |c| (rule
  'mean': the category's prompts alike, whatever the video). An empty category gives zeros.
  zv (B, D), zx (B, m, D), categories (m,) int in [0, k) -> zc (B, k, D)."""
  if rule not in AGGREGATIONS:
    raise ValueError(f"aux_aggregation={rule!r}: expected one of {AGGREGATIONS}")
  zv32, zx32 = zv.astype(jnp.float32), zx.astype(jnp.float32)
  if rule == "mean":  # equal logits: equal weights within each category
    logits = jnp.zeros(zx32.shape[:2], jnp.float32)
  else:
    logits = scale * jnp.einsum("bd,bjd->bj", l2_normalize(zv32), l2_normalize(zx32))
  member = jax.nn.one_hot(categories, k, dtype=jnp.bool_)  # (m, k)
  masked = jnp.where(member[None], logits[:, :, None], -jnp.inf)  # (B, m, k)
  mx = jnp.max(masked, axis=1, keepdims=True)
  e = jnp.where(member[None], jnp.exp(masked - jnp.where(jnp.isfinite(mx), mx, 0.0)), 0.0)
  w = e / jnp.maximum(e.sum(axis=1, keepdims=True), 1e-30)
  return jnp.einsum("bjc,bjd->bcd", w, zx32)


def affinity_logits(zv: jax.Array, za: jax.Array, zc: Optional[jax.Array],
                    gamma: Optional[jax.Array], scale, aux_scale=1.0) -> jax.Array:
  """logit[b,i] = s <zv^, za^[i]> + s_aux sum_c gamma_c <zv^, zc^[c]> <za^[i], zc^[c]>.
  zv (B, D), za (B, n, D), zc (B, k, D) or None, gamma (k,) -> (B, n). s_aux = aux_scale:
  the CLIP scale s puts both terms on one scale (1: the auxiliary term unscaled)."""
  zv, za = l2_normalize(zv.astype(jnp.float32)), l2_normalize(za.astype(jnp.float32))
  logits = scale * jnp.einsum("bd,bnd->bn", zv, za)
  if zc is not None:
    zc = l2_normalize(zc.astype(jnp.float32))
    video_concept = jnp.einsum("bd,bcd->bc", zv, zc)
    text_concept = jnp.einsum("bnd,bcd->bnc", za, zc)
    logits = logits + aux_scale * jnp.einsum("c,bc,bnc->bn", gamma, video_concept, text_concept)
  return logits


def gated_link(clip_emb: jax.Array, head_out: jax.Array, gate, norm_matched: bool) -> jax.Array:
  """The head's output joined to CLIP's embedding by a zero-initialised gate, so that at
  initialisation the model is CLIP:  clip + gate * |clip| * head^  (norm_matched: the gate
  is the head's share of the embedding's length, whatever D and CLIP's norms) or
  clip + gate * head. clip_emb and head_out (..., D) -> (..., D)."""
  if norm_matched:
    length = jnp.linalg.norm(clip_emb, axis=-1, keepdims=True)
    head_out = length * l2_normalize(head_out)
  return clip_emb + gate * head_out


def gated_logits(clip_logits: jax.Array, head_logits: jax.Array, gate) -> jax.Array:
  """The head joined to CLIP at the logits (head.link='logits'): CLIP's zero-shot logits
  s <f^, e^[i]> plus the head's own logits (computed from the head's embeddings alone)
  through a zero-initialised gate, so that at initialisation the model is CLIP.
  (B, n), (B, n) -> (B, n)."""
  return clip_logits + gate * head_logits


class VicTRHead(nn.Module):
  """The video head. frames (B, T, D) CLIP frame embeddings, text (J, D) CLIP text
  embeddings of the n class prompts then the m auxiliary ones; `scale` the CLIP scale.

  Returns a dict: video (B, D), action_text (B, n, D), aux_text (B, m, D) and
  affinities (L+1, B, T, J): the initial affinity and each layer's re-weighting.

  Memory (neither changes the result nor the parameters): `remat` rematerialises each
  layer in the backward pass (nn.remat); `attention_chunk` > 0 computes every attention
  `attention_chunk` queries of each sequence at a time (blocked_attention).
  """
  num_classes_text: int  # n (static: the class set of this call)
  num_layers: int = DEFAULTS["num_layers"]
  num_heads: int = 8
  width: Optional[int] = None  # None: D
  mlp_ratio: float = DEFAULTS["mlp_ratio"]
  num_frames: int = 8
  attention: str = DEFAULTS["attention"]
  token_boosting: bool = DEFAULTS["token_boosting"]
  affinity_reweighting: bool = DEFAULTS["affinity_reweighting"]
  affinity_fn: str = DEFAULTS["affinity_fn"]
  affinity_standardize: bool = DEFAULTS["affinity_standardize"]
  affinity_temperature: float = DEFAULTS["affinity_temperature"]  # 0: the CLIP logit scale
  embedding_link: bool = False  # gated_link on the outputs (the model's head.link='embeddings')
  gate_norm_matched: bool = DEFAULTS["gate_norm_matched"]
  temporal_init_std: float = DEFAULTS["temporal_init_std"]
  temporal_relative: bool = DEFAULTS["temporal_relative"]
  reweight_pooled: bool = DEFAULTS["reweight_pooled"]
  dtype: Dtype = jnp.float32
  remat: bool = False  # rematerialise each layer (saves activation memory in training)
  attention_chunk: int = DEFAULTS["attention_chunk"]

  @nn.compact
  def __call__(self, frames, text, scale):
    b, t, d = frames.shape
    w = self.width or d
    n = self.num_classes_text
    g_scale = scale if self.affinity_temperature <= 0 else 1.0 / self.affinity_temperature
    groups = (n, text.shape[0] - n)
    a0 = initial_affinity(frames, text, self.affinity_fn, g_scale, self.affinity_standardize,
                          groups)
    x = token_boost(frames.astype(self.dtype), text.astype(self.dtype),
                    a0 if self.token_boosting else None)  # (B, T, 1+J, D)
    if w != d:
      x = nn.Dense(w, dtype=self.dtype, param_dtype=jnp.float32, name="in_proj",
                   kernel_init=_part(nn.initializers.lecun_normal(), ("proj", "embed")))(x)
    # Learned modality (visual / text) and temporal position embeddings.
    modality = self.param("modality_embedding",
                          _part(nn.initializers.normal(0.02), (None, "embed")), (2, w))
    time = self.param("temporal_embedding",
                      _part(nn.initializers.normal(self.temporal_init_std), (None, "embed")),
                      (self.num_frames, w))
    if t != self.num_frames:
      time = jax.image.resize(time, (t, w), method="linear")
    kind = jnp.concatenate([modality[:1], jnp.broadcast_to(modality[1:], (x.shape[2] - 1, w))])
    time = time[None, :, None]  # (1, T, 1, W)
    if self.temporal_relative:  # scaled to each video's frame embeddings: one std for any CLIP
      time = time * frames_rms(frames)[:, None, None, None]
    x = x + kind[None, None].astype(self.dtype) + time.astype(self.dtype)

    affinities = [a0]
    layer = nn.remat(VicTRLayer) if self.remat else VicTRLayer  # same names and params
    for i in range(self.num_layers):
      x, a = layer(self.num_heads, int(w * self.mlp_ratio), self.attention,
                   self.affinity_reweighting, self.affinity_fn, self.affinity_standardize,
                   groups, self.dtype, self.attention_chunk, self.reweight_pooled,
                   name=f"layers_{i}")(x, g_scale)
      affinities.append(a if a is not None else jnp.ones_like(a0))
    x = LayerNorm(dtype=self.dtype, name="ln_post")(x)
    pooled = temporal_pool(x)  # (B, 1+J, W)
    if w != d:
      pooled = nn.Dense(d, dtype=self.dtype, param_dtype=jnp.float32, name="out_proj",
                        kernel_init=_part(nn.initializers.lecun_normal(), ("embed", "proj")))(
                            pooled)
    pooled = pooled.astype(jnp.float32)
    head_v, head_t = pooled[:, 0], pooled[:, 1:]
    if self.embedding_link:  # zero-initialised: at init the outputs are CLIP's.
      gate_v = self.param("gate_video", nn.initializers.zeros, ())
      gate_t = self.param("gate_text", nn.initializers.zeros, ())
      video = gated_link(temporal_pool(frames.astype(jnp.float32)), head_v, gate_v,
                         self.gate_norm_matched)
      text_out = gated_link(text.astype(jnp.float32)[None], head_t, gate_t,
                            self.gate_norm_matched)
    else:
      video, text_out = head_v, head_t
    return {"video": video, "action_text": text_out[:, :n], "aux_text": text_out[:, n:],
            "affinities": jnp.stack(affinities)}
