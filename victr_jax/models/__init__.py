"""VicTR models and baselines.

  from victr_jax import models
  cfg = models.get_config('tiny')              # 'B/32', 'B/16', 'L/14'
  model = models.build_model(cfg)              # cfg.name: 'victr' | 'clip_zero_shot' | 'mean_pool'
  model = models.zero_shot_model(cfg, clip_cfg)  # frozen CLIP, frame averaging (any CLIP)
  variables = models.init(model, rng, num_frames=8, image_size=..., n=..., m=...)
  out = model.apply(variables, frames, class_tokens, aux_tokens, aux_categories, train=False)
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from victr_jax.clip.config import CLIPConfig
from victr_jax.models import head
from victr_jax.models.baselines import MeanPoolCLIP
from victr_jax.models.config import (adopt_clip, check_clip_checkpoint, clip_config_of, get_config,
                                     validate)
from victr_jax.models.victr import VicTR


def build_model(cfg: ml_collections.ConfigDict) -> nn.Module:
  """Validates the config and builds the model it names."""
  validate(cfg)
  if cfg.name == "clip_zero_shot":
    return zero_shot_model(cfg)
  cls = VicTR if cfg.name == "victr" else MeanPoolCLIP
  return cls(ml_collections.FrozenConfigDict(cfg), clip_config_of(cfg))


def zero_shot_model(cfg: ml_collections.ConfigDict | None = None,
                    clip_cfg: CLIPConfig | None = None) -> MeanPoolCLIP:
  """CLIP zero-shot with frame averaging: a MeanPoolCLIP with both towers and the logit
  scale frozen. cfg: the model config (dtype, remat; default get_config('tiny')), named
  'clip_zero_shot' here; clip_cfg: the CLIP architecture (default clip_config_of(cfg); a
  converted checkpoint passes its own). Called on frames (B, T, S, S, 3) and class tokens
  (n, L) -> {'logits': (B, n), ...}, like every model here."""
  cfg = get_config("tiny") if cfg is None else cfg
  frozen = ml_collections.FrozenConfigDict(
      dict(cfg.to_dict(), name="clip_zero_shot", freeze_image_tower=True,
           freeze_text_tower=True, freeze_logit_scale=True))
  return MeanPoolCLIP(frozen, clip_config_of(cfg) if clip_cfg is None else clip_cfg)


def dummy_inputs(model, batch=1, num_frames=None, n=2, m=3, context=8):
  """Zero inputs of the right dtypes for init / eval_shape."""
  c = model.clip_cfg
  t = num_frames or model.cfg.num_frames
  return (jnp.zeros((batch, t, c.image_size, c.image_size, 3), jnp.float32),
          jnp.zeros((n, context), jnp.int32), jnp.zeros((m, context), jnp.int32),
          jnp.zeros((m,), jnp.int32))


def init(model, rng=None, **shapes):
  """Random variables for `model` (params unboxed, float32). Shapes: see dummy_inputs."""
  rng = jax.random.key(0) if rng is None else rng
  variables = jax.jit(model.init)(rng, *dummy_inputs(model, **shapes))
  return nn.unbox(variables)


def with_clip_params(variables, clip_params):
  """Returns variables whose 'clip' subtree is `clip_params` (e.g. from clip.load)."""
  params = dict(variables["params"])
  params["clip"] = clip_params
  return dict(variables, params=params)
