"""Flax CLIP: model, tokenizer, checkpoint import, preprocessing, zero-shot.

  from victr_jax import clip
  model, params = clip.load(path)
  img = model.apply({'params': params}, images, method=model.encode_image)
  txt = model.apply({'params': params}, clip.tokenize(texts), method=model.encode_text)
"""
from victr_jax.clip.checkpoint import CheckpointError, load, load_params, save_converted
from victr_jax.clip.config import PRESETS, CLIPConfig, get_config
from victr_jax.clip.model import CLIP, interpolate_pos_embed, l2_normalize, quick_gelu
from victr_jax.clip.preprocess import MEAN, STD, normalize, preprocess_image, preprocess_images
from victr_jax.clip.tokenizer import Tokenizer, get_tokenizer, tokenize, trim_tokens
from victr_jax.clip.zero_shot import (IMAGE_TEMPLATES, VIDEO_TEMPLATES, class_embeddings,
                                      image_probabilities)


def init(cfg: CLIPConfig, rng=None, dtype=None):
  """Random-weight model for a config: returns (model, params), params unboxed float32."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  model = CLIP(cfg, dtype=dtype or jnp.float32)
  rng = jax.random.key(0) if rng is None else rng
  variables = jax.jit(model.init)(rng, jnp.zeros((1, cfg.image_size, cfg.image_size, 3)),
                                  jnp.zeros((1, cfg.context_length), jnp.int32))
  return model, nn.unbox(variables["params"])
