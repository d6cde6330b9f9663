"""Baselines trained and evaluated by the same code as VicTR.

MeanPoolCLIP: per-frame CLIP embeddings averaged over time, scored against CLIP text
embeddings by the scaled cosine. With both towers frozen it is CLIP zero-shot with frame
averaging (`clip_zero_shot`); with the towers fine-tuned it is the ViFi-CLIP recipe
(`mean_pool`). Same call signature and outputs as VicTR (no affinities).
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from victr_jax.clip.config import CLIPConfig
from victr_jax.clip.model import CLIP, l2_normalize
from victr_jax.models.victr import add_logit_bias, encode_towers


class MeanPoolCLIP(nn.Module):
  cfg: Any
  clip_cfg: CLIPConfig

  @nn.compact
  def __call__(self, frames, class_tokens, aux_tokens=None, aux_categories=None,
               train: bool = False):
    del aux_tokens, aux_categories, train
    clip = CLIP(self.clip_cfg, dtype=jnp.dtype(self.cfg.dtype), remat=self.cfg.remat,
                scan=self.cfg.scan_layers, name="clip")
    f, e, scale = encode_towers(clip, self.cfg, frames, class_tokens, None)
    video = f.mean(axis=1)  # (B, D)
    logits = scale * l2_normalize(video) @ l2_normalize(e).T
    if self.cfg.name != "clip_zero_shot":  # zero-shot trains nothing: no bias to learn
      logits = add_logit_bias(self, self.cfg, logits)
    b = video.shape[0]
    return {"logits": logits, "video_embedding": video,
            "text_embeddings": jnp.broadcast_to(e[None], (b, *e.shape)),
            "aux_embeddings": None, "category_embeddings": None, "affinities": None}
