"""Optimiser: AdamW with warm-up + cosine decay, per-group learning-rate multipliers,
frozen groups, gradient clipping and accumulation (optax).

Parameter groups: 'visual' (CLIP image tower), 'text' (CLIP text tower incl. logit_scale),
'head' (everything outside the CLIP towers: the VicTR head and classifier) and 'gates'
(the head's scalar links to CLIP: gate_video, gate_text or gate_logits, the auxiliary
weights gamma, and the multi-label logit_bias).
A group with multiplier 0, or named in `freeze`, gets no update and keeps no state.

Peak learning rates: the towers `lr` x visual/text_lr_mult (the peers' fine-tuning
rates); the head `head_lr`; the gates `gate_lr` (a frozen head freezes its gates).
The head and gates start from scratch, so their rates are absolute rather than tied to the
towers' fine-tuning rate: under AdamW a parameter moves by about its learning rate per
step, so at lr 2e-6 a zero-initialised gate could not open within a few-shot recipe's 80
steps. Every group follows the same warm-up + cosine shape. No weight decay on biases,
LayerNorms, scalars and gates.
"""
import flax
import jax
import optax

GROUPS = ("visual", "text", "head", "gates")
GATES = ("gate_video", "gate_text", "gate_logits", "gamma", "logit_bias")


def group_of(path: tuple[str, ...]) -> str:
  if path and path[0] == "clip":
    return "visual" if len(path) > 1 and path[1] == "visual" else "text"
  return "gates" if path and path[-1] in GATES else "head"


def peak_lrs(cfg) -> dict:
  """Each group's peak learning rate (see module doc)."""
  head = cfg.head_lr
  gates = cfg.gate_lr if head else 0.0  # a frozen head freezes its gates
  return {"visual": cfg.lr * cfg.visual_lr_mult, "text": cfg.lr * cfg.text_lr_mult,
          "head": head, "gates": gates}


def schedule(cfg, total_steps: int, peak=None):
  """Linear warm-up to `peak` (default cfg.lr) over cfg.warmup_steps, then cosine to
  peak * cfg.end_lr_ratio."""
  peak = cfg.lr if peak is None else peak
  warm = min(int(cfg.warmup_steps), max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0 if warm else peak, peak_value=peak, warmup_steps=warm,
      decay_steps=max(total_steps, warm + 1), end_value=peak * cfg.end_lr_ratio)


def make(cfg, params, total_steps: int) -> optax.GradientTransformation:
  """cfg: the config's `optim` field. params: a (possibly abstract) param tree."""
  peaks = peak_lrs(cfg)
  frozen = set(cfg.freeze)
  if "head" in frozen:  # freezing the head freezes its gates too
    frozen.add("gates")
  unknown = frozen - set(GROUPS)
  if unknown:
    raise ValueError(f"config field optim.freeze: unknown group(s) {sorted(unknown)}; "
                     f"groups are {GROUPS}")

  def labels(tree):
    flat = flax.traverse_util.flatten_dict(tree)
    return flax.traverse_util.unflatten_dict({
        k: ("frozen" if group_of(k) in frozen or peaks[group_of(k)] == 0 else group_of(k))
        for k in flat})

  def decay_mask(tree):  # no weight decay on biases, LayerNorms, scalars
    return jax.tree.map(lambda x: x.ndim >= 2, tree)

  def adamw(peak):
    return optax.adamw(schedule(cfg, total_steps, peak), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                       weight_decay=cfg.weight_decay, mask=decay_mask)

  transforms = {g: adamw(peaks[g]) for g in GROUPS}
  transforms["frozen"] = optax.set_to_zero()
  tx = optax.multi_transform(transforms, labels)
  if cfg.clip_grad_norm:
    tx = optax.chain(optax.clip_by_global_norm(cfg.clip_grad_norm), tx)
  if cfg.grad_accum_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=cfg.grad_accum_steps)
  return tx

