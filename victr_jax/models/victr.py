"""VicTR: CLIP towers + the video head + the affinity classifier.

  out = model.apply(variables, frames, class_tokens, aux_tokens, aux_categories, train=False)

frames (B, T, H, W, 3) normalised; class_tokens (n, ctx) int32; aux_tokens (m, ctx) int32
or None; aux_categories (m,) int32 in [0, k). The text tower runs once per call on the n + m
prompts (not once per video). Outputs: logits (B, n), video_embedding (B, D),
text_embeddings (B, n, D), aux_embeddings (B, m, D), category_embeddings (B, k, D) (None
unless the classifier is 'affinity' with auxiliary prompts), affinities (L+1, B, T, n+m)
for L head layers: the initial affinity and each layer's re-weighting. Each step with its
equation: docs/method.md, sections 3 to 5 (docs/method.md#3-clip-towers onwards).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from victr_jax import sharding
from victr_jax.clip.config import CLIPConfig
from victr_jax.clip.model import CLIP
from victr_jax.models import head as H

def shard_prompts(tokens):
  """tokens (J, L) padded with empty prompts to a multiple of the batch shards and split
  over them like a batch of videos: each device runs the text tower on J / shards prompts
  with its parameters gathered (FSDP), instead of XLA splitting the tower's features
  across devices and all-reducing every layer's activations (J = 501 prompts on 64 chips
  is not a multiple). The caller drops the padding rows."""
  shards = sharding.logical_axis_size("batch")
  pad = -tokens.shape[0] % shards
  if pad:
    tokens = jnp.pad(tokens, ((0, pad), (0, 0)))
  return nn.with_logical_constraint(tokens, ("batch", "length"))


def encode_towers(clip: CLIP, cfg, frames, class_tokens, aux_tokens):
  """CLIP frame embeddings (B, T, D) and text embeddings (n [+ m], D); the frozen towers
  are cut from the gradient. Returns (frames, text, scale)."""
  f = clip.encode_video(frames)
  if aux_tokens is not None:
    length = max(class_tokens.shape[1], aux_tokens.shape[1])
    pad = lambda t: jnp.pad(t, ((0, 0), (0, length - t.shape[1])))
    tokens = jnp.concatenate([pad(class_tokens), pad(aux_tokens)])
  else:
    tokens = class_tokens
  e = clip.encode_text(shard_prompts(tokens))[:tokens.shape[0]]
  if cfg.freeze_image_tower:
    f = jax.lax.stop_gradient(f)
  if cfg.freeze_text_tower:
    e = jax.lax.stop_gradient(e)
  scale = clip.scale()
  if cfg.freeze_logit_scale:
    scale = jax.lax.stop_gradient(scale)
  return f.astype(jnp.float32), e.astype(jnp.float32), scale


def add_logit_bias(module: nn.Module, cfg, logits):
  """logits + b, b a learnable scalar (`logit_bias`, a gate: no weight decay) initialised at
  cfg.logit_bias_init, when cfg.logit_bias (multi-label: sigmoid BCE on s cos starts with
  every sigmoid near 1 at CLIP's scale; a negative start makes them small, as SigLIP does).
  Softmax is unchanged by it. logits (B, n) -> (B, n)."""
  if not cfg.logit_bias:
    return logits
  return logits + module.param("logit_bias", nn.initializers.constant(cfg.logit_bias_init), ())


class VicTR(nn.Module):
  """The VicTR model; `cfg` is a frozen models.get_config() dict."""
  cfg: Any  # ml_collections.FrozenConfigDict
  clip_cfg: CLIPConfig

  @nn.compact
  def __call__(self, frames, class_tokens, aux_tokens=None, aux_categories=None,
               train: bool = False):
    del train  # No dropout or batch statistics: train and eval apply the same function.
    cfg, hc = self.cfg, self.cfg.head
    dtype = jnp.dtype(cfg.dtype)
    use_aux = hc.aux_text and aux_tokens is not None and aux_tokens.shape[0] > 0
    clip = CLIP(self.clip_cfg, dtype=dtype, remat=cfg.remat,
                scan=cfg.scan_layers, name="clip")
    f, e, scale = encode_towers(clip, cfg, frames, class_tokens, aux_tokens if use_aux else None)
    n = class_tokens.shape[0]
    b = f.shape[0]

    link = hc.link if hc.gated_residual else "none"
    head = H.VicTRHead(
        num_classes_text=n, num_heads=hc.num_heads, width=hc.width, num_frames=cfg.num_frames,
        embedding_link=link == "embeddings", dtype=dtype, remat=cfg.remat,
        name="head", **{k: hc[k] for k in H.DEFAULTS})
    videos = hc.video_chunk
    if 0 < videos < b and not self.is_initializing():
      out = H.video_blocked(head, f, e, scale, videos)
    else:
      out = head(f, e, scale)

    zv = out["video"] if hc.video_embedding == "victr" else H.temporal_pool(f)
    if hc.text_embedding == "victr":
      za, zx = out["action_text"], out["aux_text"]
    else:  # CLIP's text embeddings: the same for every video.
      za = jnp.broadcast_to(e[None, :n], (b, n, e.shape[-1]))
      zx = jnp.broadcast_to(e[None, n:], (b, e.shape[0] - n, e.shape[-1]))

    zc = None
    if hc.classifier == "affinity":
      gamma = None
      if use_aux:
        zc = H.aggregate_auxiliary(zv, zx, aux_categories, hc.num_aux_categories, scale,
                                   hc.aux_aggregation)
        gamma = self.param("gamma", nn.initializers.constant(hc.gamma_init),
                           (hc.num_aux_categories,))
      logits = H.affinity_logits(zv, za, zc, gamma, scale,
                                 scale if hc.aux_logit_scale else 1.0)
    elif hc.classifier == "text":  # A shared linear scorer on each conditioned class text.
      logits = nn.Dense(1, name="text_scorer")(za)[..., 0]
    elif hc.classifier == "visual":  # Closed set: a linear layer on the video embedding.
      if n != hc.num_classes:
        raise ValueError(f"head.classifier='visual' is closed-set with head.num_classes="
                         f"{hc.num_classes}, but {n} class prompts were given")
      logits = nn.Dense(hc.num_classes, name="visual_classifier")(zv)
    else:
      raise ValueError(f"head.classifier={hc.classifier!r}")
    if link == "logits":  # CLIP's zero-shot logits plus the head's, through a zero gate
      clip_logits = H.affinity_logits(H.temporal_pool(f), jnp.broadcast_to(e[None, :n], za.shape),
                                      None, None, scale)
      logits = H.gated_logits(clip_logits, logits,
                              self.param("gate_logits", nn.initializers.zeros, ()))
    return {"logits": add_logit_bias(self, cfg, logits), "video_embedding": zv,
            "text_embeddings": za, "aux_embeddings": zx, "category_embeddings": zc,
            "affinities": out["affinities"]}
