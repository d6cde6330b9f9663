"""The training objective: soft targets, label smoothing, Mixup / CutMix, and the loss.

  targets = soft_targets(labels, C, multi_label, smoothing)       # (B,) -> (B, C)
  frames, targets = mix_batch(frames, targets, rng, 0.8, 1.0, 0.5)  # optional
  loss = loss_fn(logits, targets, multi_label)

Smoothing comes before mixing (the peers' and timm's order). See docs/method.md,
"Training objective".
"""
import jax
import jax.numpy as jnp
import optax


def soft_targets(labels, num_classes: int, multi_label: bool, smoothing: float = 0.0):
  """(B,) int labels -> (B, C) one-hot smoothed to (1 - s) y + s / C; (B, C) multi-hot
  (multi-label) pass through unsmoothed."""
  if multi_label:
    return labels.astype(jnp.float32)
  y = jax.nn.one_hot(labels, num_classes)
  return optax.smooth_labels(y, smoothing) if smoothing else y


def loss_fn(logits, targets, multi_label: bool):
  """Mean over the batch of softmax cross-entropy against soft targets (B, C), or of
  sigmoid BCE (multi-label)."""
  if multi_label:
    return optax.sigmoid_binary_cross_entropy(logits, targets).mean()
  return optax.softmax_cross_entropy(logits, targets).mean()


def cutmix_box(lam, cx, cy, height: int, width: int):
  """The CutMix box of side sqrt(1 - lam) x (H, W) centred at (cx, cy), clipped to the
  frame. Returns (keep (H, W) float32: 0 inside the box, 1 outside; the kept area
  fraction, the corrected lam)."""
  cut = jnp.sqrt(1.0 - lam)
  half_w = jnp.floor(width * cut).astype(jnp.int32) // 2
  half_h = jnp.floor(height * cut).astype(jnp.int32) // 2
  x1, x2 = jnp.clip(cx - half_w, 0, width), jnp.clip(cx + half_w, 0, width)
  y1, y2 = jnp.clip(cy - half_h, 0, height), jnp.clip(cy + half_h, 0, height)
  ys, xs = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
  inside = (ys >= y1) & (ys < y2) & (xs >= x1) & (xs < x2)
  area = ((x2 - x1) * (y2 - y1)).astype(jnp.float32)
  return 1.0 - inside.astype(jnp.float32), 1.0 - area / (height * width)


def mix_batch(frames, targets, rng, mixup_alpha: float, cutmix_alpha: float = 0.0,
              switch_prob: float = 0.5):
  """Mixup or CutMix of each clip with the batch reversed (one choice and one lam per
  batch; with both on, CutMix with probability switch_prob). frames (B, T, H, W, 3),
  targets (B, C) soft -> the mixed (frames, targets); CutMix uses one box for all frames
  and weighs the targets by the kept area."""
  k_mix, k_cut, k_x, k_y, k_switch = jax.random.split(rng, 5)
  h, w = frames.shape[-3:-1]
  if mixup_alpha > 0:
    lam_mix = jax.random.beta(k_mix, mixup_alpha, mixup_alpha)
  if cutmix_alpha > 0:
    keep, lam_cut = cutmix_box(jax.random.beta(k_cut, cutmix_alpha, cutmix_alpha),
                               jax.random.randint(k_x, (), 0, w),
                               jax.random.randint(k_y, (), 0, h), h, w)
  if mixup_alpha > 0 and cutmix_alpha > 0:
    use_cut = jax.random.uniform(k_switch) < switch_prob
    weight = jnp.where(use_cut, keep, lam_mix)  # (H, W)
    lam = jnp.where(use_cut, lam_cut, lam_mix)
  elif cutmix_alpha > 0:
    weight, lam = keep, lam_cut
  elif mixup_alpha > 0:
    weight, lam = jnp.full((h, w), lam_mix), lam_mix
  else:
    raise ValueError("mix_batch needs mixup_alpha > 0 or cutmix_alpha > 0")
  weight = weight[:, :, None].astype(frames.dtype)  # (H, W, 1), broadcasts over B, T
  frames = weight * frames + (1 - weight) * frames[::-1]
  return frames, lam * targets + (1 - lam) * targets[::-1]
