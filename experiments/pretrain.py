"""Contrastive (CLIP) pretraining of a small CLIP on image-caption pairs, and the demo
CLIP the main job starts from.

  pretrain(cfg, batches, steps)            # any CLIP config on (images, tokens) batches
  pretrain_clip(cfg, out_dir, steps)       # on synthetic frames + descriptions -> checkpoint
  attribute_accuracy(model, params)        # its zero-shot accuracy per attribute

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

from data_pipelines import synthetic, video_ops
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


def pretrain_clip(cfg, out_dir, steps, batch_size=256, lr=1e-3, pool=6144, per_video=4,
                  seed=0, log=print):
  """Contrastive pretraining of the CLIP architecture `cfg` on frames + descriptions ->
  checkpoint dir. A batch is whole groups of `per_video` frames of one video, each group
  followed by its mirror images (flipped left-right, top-bottom or across the diagonal,
  place words swapped): pairs that differ only in place. Without them the place words
  never ground: image and text towers both start blind to where a shape is (a flip changes
  neither embedding), and the contrastive gradient cannot break that symmetry on its own;
  size words, which the pixels show without any position, ground either way. The diagonal
  mirror (x and y swapped: 'at the left' becomes 'at the top') is what tells a horizontal
  place from a vertical one: without it the CLIP scores 0.54 on that test, and VicTR
  confuses the left/right and top/bottom motion axes."""
  frames, _, attrs = synthetic.frames_and_captions("pretrain", pool, cfg.image_size, seed,
                                                   per_video)
  rng = np.random.default_rng(seed)
  both = ([], [])
  for g in range(0, pool, per_video):
    axis = synthetic.MIRRORS[int(rng.integers(len(synthetic.MIRRORS)))]
    flips = [synthetic.mirrored(frames[i], attrs[i], axis) for i in range(g, g + per_video)]
    both[0].extend(list(frames[g:g + per_video]) + [f for f, _ in flips])
    both[1].extend(attrs[g:g + per_video] + [a for _, a in flips])
  images = video_ops.normalize(np.stack(both[0]))
  tokens = clip.trim_tokens(clip.tokenize([synthetic.describe(**a) for a in both[1]]))
  group = 2 * per_video

  def batches():
    while True:
      groups = rng.choice(len(images) // group, batch_size // group, replace=False)
      idx = (groups[:, None] * group + np.arange(group)).ravel()
      yield images[idx], tokens[idx]

  model, params, losses = pretrain(cfg, batches(), steps, lr=lr, seed=seed,
                                            log_every=max(steps // 5, 1), log=log)
  clip.save_converted(cfg, params, out_dir, overwrite=True)
  return model, params, losses


MIRROR_TESTS = (("x", "left_right"), ("y", "top_bottom"), ("d", "horizontal_vertical"))


def attribute_accuracy(model, params, n=240, seed=0) -> dict:
  """Zero-shot accuracy of the CLIP on held-out frames, per attribute: the true description
  against the same description with that attribute swapped for each other value; beside it
  the share of the most frequent value (what always guessing it would score)."""
  frames, _, attrs = synthetic.frames_and_captions("val", n, model.cfg.image_size, seed)
  images = jnp.asarray(video_ops.normalize(frames))
  img = model.apply({"params": params}, images, method=model.encode_image)
  img = clip.l2_normalize(img)
  out = {}
  for name, values in synthetic.ATTRIBUTES.items():
    texts = [synthetic.describe(**dict(a, **{name: v})) for a in attrs for v in values]
    txt = model.apply({"params": params}, clip.trim_tokens(clip.tokenize(texts)),
                      method=model.encode_text).reshape(n, len(values), -1)
    txt = clip.l2_normalize(txt)
    pred = np.asarray(jnp.einsum("nd,nvd->nv", img, txt).argmax(-1))
    truth = [a[name] for a in attrs]
    out[name] = {"accuracy": float(np.mean([values[p] == t for p, t in zip(pred, truth)])),
                 "majority": max(truth.count(v) for v in values) / len(truth)}
  for axis, name in MIRROR_TESTS:  # the place against its mirror image's
    mirror = [synthetic.mirrored(f, a, axis)[1] for f, a in zip(frames, attrs)]
    off = [k for k, (a, b) in enumerate(zip(attrs, mirror)) if a != b]
    texts = [synthetic.describe(**a) for k in off for a in (attrs[k], mirror[k])]
    txt = model.apply({"params": params}, clip.trim_tokens(clip.tokenize(texts)),
                      method=model.encode_text).reshape(len(off), 2, -1)
    sim = jnp.einsum("nd,nvd->nv", img[np.asarray(off)], clip.l2_normalize(txt))
    out[name] = {"accuracy": float(np.mean(np.asarray(sim.argmax(-1)) == 0)), "majority": 0.5}
  return out


# ------------------------------------------------------------------ 3. runs
