"""Optimiser: AdamW with warm-up + cosine decay, per-group learning-rate multipliers,
frozen groups, gradient clipping and accumulation (optax).

Parameter groups: 'visual' (CLIP image tower), 'text' (CLIP text tower incl. logit_scale),
'head' (everything outside the CLIP towers: the VicTR head and classifier). A group with
multiplier 0, or named in `freeze`, gets no update and keeps no optimiser state.
"""
import flax
import jax
import optax

GROUPS = ("visual", "text", "head")


def group_of(path: tuple[str, ...]) -> str:
  if path and path[0] == "clip":
    return "visual" if len(path) > 1 and path[1] == "visual" else "text"
  return "head"


def schedule(cfg, total_steps: int):
  """Linear warm-up to cfg.lr over cfg.warmup_steps, then cosine to cfg.lr * cfg.end_lr_ratio."""
  warm = min(int(cfg.warmup_steps), max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0 if warm else cfg.lr, peak_value=cfg.lr, warmup_steps=warm,
      decay_steps=max(total_steps, warm + 1), end_value=cfg.lr * cfg.end_lr_ratio)


def make(cfg, params, total_steps: int) -> optax.GradientTransformation:
  """cfg: the config's `optim` field. params: a (possibly abstract) param tree."""
  base = schedule(cfg, total_steps)
  mults = {"visual": cfg.visual_lr_mult, "text": cfg.text_lr_mult, "head": cfg.head_lr_mult}
  frozen = set(cfg.freeze)
  unknown = frozen - set(GROUPS)
  if unknown:
    raise ValueError(f"config field optim.freeze: unknown group(s) {sorted(unknown)}; "
                     f"groups are {GROUPS}")

  def labels(tree):
    flat = flax.traverse_util.flatten_dict(tree)
    return flax.traverse_util.unflatten_dict({
        k: ("frozen" if group_of(k) in frozen or mults[group_of(k)] == 0 else group_of(k))
        for k in flat})

  def decay_mask(tree):  # no weight decay on biases, LayerNorms, scalars
    return jax.tree.map(lambda x: x.ndim >= 2, tree)

  def adamw(mult):
    return optax.adamw(lambda step: base(step) * mult, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                       weight_decay=cfg.weight_decay, mask=decay_mask)

  transforms = {g: adamw(mults[g]) for g in GROUPS}
  transforms["frozen"] = optax.set_to_zero()
  tx = optax.multi_transform(transforms, labels)
  if cfg.clip_grad_norm:
    tx = optax.chain(optax.clip_by_global_norm(cfg.clip_grad_norm), tx)
  if cfg.grad_accum_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=cfg.grad_accum_steps)
  return tx

