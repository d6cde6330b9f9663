"""Flax CLIP: a ViT image tower and a causal text tower.

Module and parameter names mirror the OpenAI / open_clip state dict
(`visual.transformer.resblocks.0.attn.in_proj_weight` lives at
`visual/transformer/resblocks_0/attn/in_proj/kernel`), so checkpoint import is a
renaming plus transposes. Parameters are float32; `dtype` sets the compute dtype
(e.g. bfloat16), LayerNorm and softmax statistics stay in float32.

Logical axis names on parameters: 'embed' (tower width), 'mlp' (MLP hidden),
'heads' (the packed q/k/v outputs and the attention output's input: heads x head_dim), 'vocab',
'proj' (joint embedding). Activations are constrained to ('batch', 'length', 'embed'),
the MLP's hidden ones to ('batch', 'length', 'mlp').
"""
import contextlib
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from victr_jax.clip.config import CLIPConfig

Dtype = Any
_part = nn.with_logical_partitioning


def quick_gelu(x):
  """OpenAI's activation: x * sigmoid(1.702 x)."""
  return x * jax.nn.sigmoid(1.702 * x)


def activation(name: str) -> Callable:
  return {"quick_gelu": quick_gelu,
          "gelu": lambda x: jax.nn.gelu(x, approximate=False)}[name]


class LayerNorm(nn.Module):
  """LayerNorm with params `scale`, `bias`; statistics in float32, output in `dtype`."""
  eps: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    w = x.shape[-1]
    scale = self.param("scale", _part(nn.initializers.ones, ("embed",)), (w,))
    bias = self.param("bias", _part(nn.initializers.zeros, ("embed",)), (w,))
    x = x.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    return ((x - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias).astype(self.dtype)


def _dense(features, names, dtype, name, std=0.02):
  return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, name=name,
                  kernel_init=_part(nn.initializers.normal(std), names),
                  bias_init=_part(nn.initializers.zeros, names[1:]))


_UNROLL_STEPS = [False]


@contextlib.contextmanager
def unrolled_steps():
  """Inside: `map_steps` unrolls its loop. XLA's cost analysis counts a loop's body once,
  whatever its trip count; the compile report counts FLOPs of chunked steps this way
  (the result is the same; the memory figures come from the looped program)."""
  _UNROLL_STEPS[0] = True
  try:
    yield
  finally:
    _UNROLL_STEPS[0] = False


def map_steps(f, xs):
  """jax.lax.map(f, xs), each step rematerialised (jax.checkpoint): f on each xs[s] in
  turn, and the backward pass recomputes one step's intermediates at a time. Under
  `unrolled_steps` the loop is unrolled, and CSE is prevented so that the recomputation
  the loop does is still counted."""
  if not _UNROLL_STEPS[0]:
    return jax.lax.map(jax.checkpoint(f, prevent_cse=False), xs)
  step = jax.checkpoint(f, prevent_cse=True)
  return jax.lax.scan(lambda c, x: (c, step(x)), None, xs, unroll=True)[1]


def blocked_attention(q: jax.Array, k: jax.Array, v: jax.Array, block: int = 0) -> jax.Array:
  """jax.nn.dot_product_attention(q, k, v) (no mask), computing the queries of every
  sequence `block` at a time, so that the scores held at once are (G, heads, block, S)
  instead of (G, heads, L, S); the result is the same (each query's softmax sees all keys).
  q (G, L, heads, hd), k and v (G, S, heads, hd) -> (G, L, heads, hd).

  The query axis is split into ceil(L / block) equal steps (L padded by fewer rows than
  steps; the padded queries are dropped), run one after another (map_steps), each step
  rematerialised (jax.checkpoint), so that the backward pass too holds one step's scores,
  not all of them. The batch axis G (sharded over data-parallel devices) is not split.
  block <= 0 or >= L: one call, unchanged.
  """
  g, l, h, hd = q.shape
  if block <= 0 or block >= l:
    return jax.nn.dot_product_attention(q, k, v)
  steps = -(-l // block)
  block = -(-l // steps)  # balanced steps: at most steps - 1 padded query rows
  if steps * block != l:
    q = jnp.pad(q, ((0, 0), (0, steps * block - l), (0, 0), (0, 0)))
  qs = q.reshape(g, steps, block, h, hd).swapaxes(0, 1)  # (steps, G, block, heads, hd)
  out = map_steps(lambda qb: jax.nn.dot_product_attention(qb, k, v), qs)
  return out.swapaxes(0, 1).reshape(g, steps * block, h, hd)[:, :l]


class MultiheadAttention(nn.Module):
  """Self-attention with packed q/k/v (`in_proj`) and `out_proj`, like torch's MHA.

  x: (B, L, W) -> (B, L, W).
  """
  heads: int
  causal: bool = False
  dtype: Dtype = jnp.float32
  query_block: int = 0  # > 0 (no mask): that many queries at a time (blocked_attention)

  @nn.compact
  def __call__(self, x):
    b, l, w = x.shape
    qkv = _dense(3 * w, ("embed", "heads"), self.dtype, "in_proj")(x)
    q, k, v = jnp.split(qkv.reshape(b, l, 3 * self.heads, w // self.heads), 3, axis=2)
    if self.query_block > 0:
      if self.causal:
        raise ValueError("MultiheadAttention: query_block needs causal=False")
      out = blocked_attention(q, k, v, self.query_block)  # (B, L, N, H)
    else:
      out = jax.nn.dot_product_attention(q, k, v, is_causal=self.causal)
    return _dense(w, ("heads", "embed"), self.dtype, "out_proj")(out.reshape(b, l, w))


class MLP(nn.Module):
  """c_fc -> activation -> c_proj. x: (B, L, W) -> (B, L, W)."""
  mlp_dim: int
  act: str
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = _dense(self.mlp_dim, ("embed", "mlp"), self.dtype, "c_fc")(x)
    h = nn.with_logical_constraint(activation(self.act)(h), ("batch", "length", "mlp"))
    return _dense(x.shape[-1], ("mlp", "embed"), self.dtype, "c_proj")(h)


class ResidualAttentionBlock(nn.Module):
  """Pre-LN block: x + attn(ln_1(x)); x + mlp(ln_2(x))."""
  heads: int
  mlp_dim: int
  act: str
  causal: bool = False
  ln_eps: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    x = x + MultiheadAttention(self.heads, self.causal, self.dtype, name="attn")(
        LayerNorm(self.ln_eps, self.dtype, name="ln_1")(x))
    x = x + MLP(self.mlp_dim, self.act, self.dtype, name="mlp")(
        LayerNorm(self.ln_eps, self.dtype, name="ln_2")(x))
    return x


class Transformer(nn.Module):
  """A stack of `layers` blocks named resblocks_0 ... resblocks_{L-1}. (B, L, W) -> same.

  scan: the blocks run as one `lax.scan` over their stacked parameters (same parameters,
  names and result). On CPU this is faster: with the blocks unrolled, XLA's CPU fusion
  copies the backward pass's residual-stream gradient, an elementwise chain through every
  block above, into each block's weight-gradient transposes, so the work grows with the
  square of the depth (a third of a ViT-B/32 train step; benchmarks/profile_step.py). A
  loop body cannot fuse across blocks."""
  layers: int
  heads: int
  mlp_dim: int
  act: str
  causal: bool = False
  ln_eps: float = 1e-5
  dtype: Dtype = jnp.float32
  remat: bool = False
  scan: bool = False

  @nn.compact
  def __call__(self, x):
    if not self.scan or self.is_initializing():  # the scan reads the params init made
      block = nn.remat(ResidualAttentionBlock) if self.remat else ResidualAttentionBlock
      for i in range(self.layers):
        x = block(self.heads, self.mlp_dim, self.act, self.causal, self.ln_eps, self.dtype,
                  name=f"resblocks_{i}")(x)
      return x
    params = self.variables["params"]
    stacked = jax.tree.map(lambda *p: jnp.stack(p),
                           *[params[f"resblocks_{i}"] for i in range(self.layers)])
    plain = ResidualAttentionBlock(self.heads, self.mlp_dim, self.act, self.causal, self.ln_eps,
                                   self.dtype)
    step = lambda h, p: (plain.apply({"params": p}, h), None)
    return jax.lax.scan(jax.checkpoint(step) if self.remat else step, x, stacked)[0]


def interpolate_pos_embed(pos: jax.Array, grid: tuple[int, int]) -> jax.Array:
  """Resizes a ViT positional embedding (1 + g*g, W) to (1 + gh*gw, W), bicubic on the grid."""
  n = pos.shape[0] - 1
  g = int(round(n ** 0.5))
  if g * g != n:
    raise ValueError(f"positional embedding of {pos.shape[0]} rows is not 1 + a square grid")
  if (g, g) == tuple(grid):
    return pos
  patch = pos[1:].reshape(g, g, -1)
  patch = jax.image.resize(patch, (*grid, pos.shape[-1]), method="bicubic")
  return jnp.concatenate([pos[:1], patch.reshape(grid[0] * grid[1], -1)], axis=0)


class VisionTransformer(nn.Module):
  """CLIP image tower. images (N, H, W, 3) normalised float -> (N, embed_dim).

  H, W must be multiples of the patch size; other sizes than the configured one use a
  bicubically interpolated positional embedding.
  """
  cfg: CLIPConfig
  dtype: Dtype = jnp.float32
  remat: bool = False
  scan: bool = False  # Transformer.scan

  @nn.compact
  def __call__(self, images):
    c = self.cfg
    w = c.vision_width
    x = nn.Conv(w, (c.patch_size, c.patch_size), strides=(c.patch_size, c.patch_size),
                padding="VALID", use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
                kernel_init=_part(nn.initializers.normal(0.02), (None, None, None, "embed")),
                name="conv1")(images.astype(self.dtype))
    n, gh, gw, _ = x.shape
    x = x.reshape(n, gh * gw, w)
    scale = w ** -0.5
    cls = self.param("class_embedding", _part(nn.initializers.normal(scale), ("embed",)), (w,))
    pos = self.param("positional_embedding",
                     _part(nn.initializers.normal(scale), (None, "embed")),
                     (c.grid_size ** 2 + 1, w))
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (n, 1, w)), x], axis=1)
    x = x + interpolate_pos_embed(pos, (gh, gw)).astype(self.dtype)
    x = LayerNorm(c.ln_eps, self.dtype, name="ln_pre")(x)
    x = Transformer(c.vision_layers, c.vision_heads, c.vision_mlp_dim, c.act, False, c.ln_eps,
                    self.dtype, self.remat, self.scan, name="transformer")(x)
    x = LayerNorm(c.ln_eps, self.dtype, name="ln_post")(x[:, 0])
    proj = self.param("proj", _part(nn.initializers.normal(scale), ("embed", "proj")),
                      (w, c.embed_dim))
    return jnp.dot(x, proj.astype(self.dtype))


class CLIP(nn.Module):
  """OpenAI CLIP (ViT). Use `encode_image`, `encode_text`, `encode_video` via `method=`.

  The text tower's parameters sit at the top level (token_embedding, positional_embedding,
  transformer, ln_final, text_projection), as in the OpenAI state dict.
  """
  cfg: CLIPConfig
  dtype: Dtype = jnp.float32
  remat: bool = False
  scan: bool = False  # both towers' blocks in a lax.scan (Transformer.scan)

  def setup(self):
    c = self.cfg
    self.visual = VisionTransformer(c, self.dtype, self.remat, self.scan)
    self.token_embedding = nn.Embed(
        c.vocab_size, c.text_width, dtype=self.dtype, param_dtype=jnp.float32,
        embedding_init=_part(nn.initializers.normal(0.02), ("vocab", "embed")))
    self.positional_embedding = self.param(
        "positional_embedding", _part(nn.initializers.normal(0.01), (None, "embed")),
        (c.context_length, c.text_width))
    self.transformer = Transformer(c.text_layers, c.text_heads, c.text_mlp_dim, c.act, True,
                                   c.ln_eps, self.dtype, self.remat, self.scan)
    self.ln_final = LayerNorm(c.ln_eps, self.dtype)
    self.text_projection = self.param(
        "text_projection", _part(nn.initializers.normal(c.text_width ** -0.5), ("embed", "proj")),
        (c.text_width, c.embed_dim))
    self.logit_scale = self.param("logit_scale", nn.initializers.constant(jnp.log(1 / 0.07)), ())

  def encode_image(self, images):
    """images (N, H, W, 3) normalised -> (N, embed_dim), not normalised."""
    return self.visual(images)

  def encode_video(self, frames):
    """frames (B, T, H, W, 3) -> per-frame embeddings (B, T, embed_dim)."""
    b, t = frames.shape[:2]
    return self.visual(frames.reshape(b * t, *frames.shape[2:])).reshape(b, t, -1)

  def encode_text(self, tokens):
    """tokens (N, context_length) int32 -> (N, embed_dim), pooled at EOT (the largest id)."""
    n, l = tokens.shape
    x = self.token_embedding(tokens) + self.positional_embedding[:l].astype(self.dtype)
    x = self.transformer(x)
    x = self.ln_final(x)
    x = x[jnp.arange(n), jnp.argmax(tokens, axis=-1)]
    return jnp.dot(x, self.text_projection.astype(self.dtype))

  def scale(self):
    """The logit scale exp(logit_scale), clipped at 100."""
    return jnp.minimum(jnp.exp(self.logit_scale), 100.0)

  def __call__(self, images, tokens):
    """Returns (logits_per_image (N_img, N_txt), image_features^, text_features^)."""
    img = l2_normalize(self.encode_image(images).astype(jnp.float32))
    txt = l2_normalize(self.encode_text(tokens).astype(jnp.float32))
    return self.scale() * img @ txt.T, img, txt


def l2_normalize(x, axis=-1, eps=1e-12):
  """x / max(|x|, eps), with a finite gradient at x = 0 (where |x| has none)."""
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))
