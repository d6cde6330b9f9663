"""Contrastive (CLIP) pretraining of a small CLIP on image-caption pairs.

Used by the main job to give the tiny CLIP of the synthetic_actions demo the words of its
world (shapes, colours, backgrounds, positions, sizes) from single frames, the way real
VicTR starts from a CLIP pretrained on images and their captions. Symmetric InfoNCE with
the learned logit scale, AdamW, on one device (the demo CLIP is tiny).
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from victr_jax import clip


def contrastive_loss(model, params, images, tokens):
  """Symmetric cross-entropy over the image-text similarity matrix (N, N). Pairs whose
  captions are token-for-token equal are all positives (target mass shared equally): in a
  small world of descriptions the same caption recurs within a batch, and pushing it away
  from its own image would be wrong."""
  logits, _, _ = model.apply({"params": params}, images, tokens)
  same = jnp.all(tokens[:, None, :] == tokens[None, :, :], axis=-1).astype(jnp.float32)
  targets = same / same.sum(axis=1, keepdims=True)
  return 0.5 * (optax.softmax_cross_entropy(logits, targets).mean() +
                optax.softmax_cross_entropy(logits.T, targets).mean())


def pretrain(cfg: clip.CLIPConfig, batches, steps: int, lr: float = 1e-3, seed: int = 0,
             log_every: int = 50, log=print):
  """batches: iterator of (images (N, S, S, 3) normalised, tokens (N, L)). -> params."""
  model, params = clip.init(cfg, jax.random.key(seed))
  sched = optax.warmup_cosine_decay_schedule(0.0, lr, min(50, steps // 5), steps, lr * 0.05)
  tx = optax.adamw(sched, b1=0.9, b2=0.98, weight_decay=0.01)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, images, tokens):
    loss, grads = jax.value_and_grad(lambda p: contrastive_loss(model, p, images, tokens))(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  t0, losses = time.time(), []
  for i in range(steps):
    images, tokens = next(batches)
    params, opt, loss = step(params, opt, jnp.asarray(images), jnp.asarray(tokens))
    losses.append(float(loss))
    if (i + 1) % log_every == 0 or i + 1 == steps:
      rate = (i + 1) / (time.time() - t0)
      log(f"[pretrain] step {i + 1}/{steps} loss {np.mean(losses[-log_every:]):.3f} "
          f"{rate:.1f} steps/s ETA {(steps - i - 1) / rate:.0f}s")
  return model, params, losses
