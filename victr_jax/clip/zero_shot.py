"""Zero-shot classification with prompt templates.

A class is embedded as the mean of its L2-normalised prompt embeddings, normalised again;
an image is scored by the scaled cosine against each class.
"""
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from victr_jax.clip.model import l2_normalize
from victr_jax.clip.tokenizer import tokenize

IMAGE_TEMPLATES = (
    "a photo of a {}.",
    "a picture of a {}.",
    "a close-up photo of a {}.",
    "a blurry photo of a {}.",
    "a photo of the {}.",
    "an image showing a {}.",
)
VIDEO_TEMPLATES = (
    "a video of a person {}.",
    "a person is {}.",
    "a clip of someone {}.",
    "a video of {}.",
)


def class_embeddings(model, params, classnames: Sequence[str],
                     templates: Sequence[str] = IMAGE_TEMPLATES, batch_size: int = 256):
  """-> (n_classes, embed_dim) float32, each the normalised mean over templates."""
  if not classnames:
    raise ValueError("zero-shot classification needs at least one class name")
  prompts = [t.format(c) for c in classnames for t in templates]
  encode = jax.jit(lambda p, tok: model.apply({"params": p}, tok, method=model.encode_text))
  feats = []
  for i in range(0, len(prompts), batch_size):
    tok = tokenize(prompts[i:i + batch_size], model.cfg.context_length)
    feats.append(np.asarray(l2_normalize(encode(params, tok).astype(jnp.float32))))
  feats = np.concatenate(feats).reshape(len(classnames), len(templates), -1).mean(1)
  return np.asarray(l2_normalize(jnp.asarray(feats)))


def image_probabilities(model, params, images, class_emb) -> np.ndarray:
  """images (N, H, W, 3) normalised; class_emb (n, D) -> probabilities (N, n)."""
  @jax.jit
  def run(p, x, c):
    img = l2_normalize(model.apply({"params": p}, x, method=model.encode_image)
                       .astype(jnp.float32))
    scale = jnp.minimum(jnp.exp(p["logit_scale"]), 100.0)
    return jax.nn.softmax(scale * img @ c.T, axis=-1)
  return np.asarray(run(params, jnp.asarray(images), jnp.asarray(class_emb)))
