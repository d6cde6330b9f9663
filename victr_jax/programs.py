"""The train and eval programs: each step's function, jitted once with its shardings.

  progs = programs.build(config, model, layout, init, num_classes)
  state, metrics = progs.train(state, batch, text)          # donates `state`
  logits = progs.eval(params, frames, text)                 # (B, V, n) float32
  args = progs.abstract_train_args(text)                    # ShapeDtypeStructs
  compiled, flops = programs.compile(progs.train, *args)    # ahead of time

The trainer, the evaluator and `--mode=compile` (compile_report.py) all take their
programs from here, so the compile mode compiles exactly what the trainer runs.
`text` is a `train_state.Prompts` (one pytree, replicated); `batch` is {'frames' (B, T,
S, S, 3) float32, 'label' (B,) int32 or (B, n) float32 multi-hot}, split over the
layout's batch devices.
"""
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from victr_jax import losses, metrics, sharding, train_state
from victr_jax.train_state import Prompts, TrainState


def apply(model, params, frames, text: Prompts, train: bool = False) -> dict:
  """The model's outputs for frames (B, T, S, S, 3) and the prompts `text`."""
  return model.apply({"params": params}, frames, text.tokens, text.aux_tokens, text.aux_cats,
                     train=train)


def make_train_step(model, tx, ocfg, num_classes: int, multi_label: bool):
  """(state, batch, text) -> (state, metrics): soft targets, optional Mixup / CutMix, the
  loss, one optimiser update. Metrics: loss, grad_norm (the trainer stops when either is
  not finite) and, single-label, top1 on the mixed batch."""

  def train_step(state: TrainState, batch, text: Prompts):
    rng, mix_rng = jax.random.split(jax.random.wrap_key_data(state.rng))
    frames, labels = batch["frames"], batch["label"]
    targets = losses.soft_targets(labels, num_classes, multi_label, ocfg.label_smoothing)
    mixup_alpha, cutmix_alpha = ocfg.mixup_alpha, ocfg.get("cutmix_alpha", 0.0)
    if mixup_alpha > 0 or cutmix_alpha > 0:
      frames, targets = losses.mix_batch(frames, targets, mix_rng, mixup_alpha, cutmix_alpha,
                                         ocfg.get("mixup_switch_prob", 0.5))

    def loss_of(params):
      logits = apply(model, params, frames, text, train=True)["logits"].astype(jnp.float32)
      return losses.loss_fn(logits, targets, multi_label), logits

    (loss, logits), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    out = {"loss": loss, "grad_norm": optax.global_norm(grads)}
    if not multi_label:
      hits, count = metrics.topk_correct(logits, labels, 1)
      out["top1"] = hits / count
    return TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                      opt_state=opt_state, rng=jax.random.key_data(rng)), out

  return train_step


def apply_views(model, params, frames, text: Prompts) -> dict:
  """Every view of every video through the model, eval mode: frames (B, V, T, S, S, 3) ->
  {'logits' (B, V, n) float32, 'affinities' (L+1, B, V, T, n+m) float32 or None}."""
  b, v = frames.shape[:2]
  out = apply(model, params, frames.reshape(b * v, *frames.shape[2:]), text)
  a = out.get("affinities")
  return {"logits": out["logits"].astype(jnp.float32).reshape(b, v, -1),
          "affinities": None if a is None else a.astype(jnp.float32).reshape(
              a.shape[0], b, v, *a.shape[2:])}


def make_eval_step(model):
  """(params, frames (B, V, T, S, S, 3), text) -> logits (B, V, n) float32 (apply_views)."""

  def eval_step(params, frames, text: Prompts):
    return apply_views(model, params, frames, text)["logits"]

  return eval_step


def replicate(text: Prompts, layout: sharding.Layout) -> Prompts:
  """`text` on every device of `layout` (what the steps take)."""
  return jax.device_put(jax.tree.map(jnp.asarray, text), layout.replicated)


@dataclasses.dataclass
class Programs:
  """A config's jitted steps on a layout (see the module docstring)."""
  train: Any
  eval: Any
  layout: sharding.Layout
  init: train_state.Initial
  config: Any
  model: Any
  num_classes: int

  def put(self, text: Prompts) -> Prompts:
    """`text` on every device (what the steps take)."""
    return replicate(text, self.layout)

  def abstract_train_args(self, text: Prompts) -> tuple:
    """(state, batch, text) as ShapeDtypeStructs with their shardings."""
    d, c = self.config.data, self.model.clip_cfg
    b = self.layout.batch
    label = (jax.ShapeDtypeStruct((d.batch_size, self.num_classes), jnp.float32, sharding=b)
             if d.multi_label else jax.ShapeDtypeStruct((d.batch_size,), jnp.int32, sharding=b))
    s = d.image_size or c.image_size  # a resolved config's, else the CLIP's
    batch = {"frames": jax.ShapeDtypeStruct(
        (d.batch_size, d.num_frames, s, s, 3), jnp.float32, sharding=b),
             "label": label}
    state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                         self.init.state, self.init.shardings)
    return state, batch, self._abstract(text)

  def abstract_eval_args(self, text: Prompts, eval_batch: int) -> tuple:
    """(params, frames (eval_batch, V, T, S, S, 3), text) as ShapeDtypeStructs."""
    d, c = self.config.data, self.model.clip_cfg
    views = d.num_test_clips * d.num_test_crops
    s = d.image_size or c.image_size
    frames = jax.ShapeDtypeStruct((eval_batch, views, d.num_frames, s, s, 3), jnp.float32,
                                  sharding=self.layout.batch)
    params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          self.init.state.params, self.init.param_shardings)
    return params, frames, self._abstract(text)

  def _abstract(self, text: Prompts) -> Prompts:
    repl = self.layout.replicated
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.asarray(x).dtype,
                                                       sharding=repl), text)


def build(config, model, layout: sharding.Layout, init: train_state.Initial,
          num_classes: int) -> Programs:
  """The train step (state donated) and the eval step of `config`, jitted with the
  shardings of `init` on `layout`."""
  repl, batch = layout.replicated, layout.batch
  with layout.use():
    p_train = jax.jit(make_train_step(model, init.tx, config.optim, num_classes,
                                      config.data.multi_label),
                      in_shardings=(init.shardings, batch, repl),
                      out_shardings=(init.shardings, repl), donate_argnums=(0,))
    p_eval = jax.jit(make_eval_step(model), in_shardings=(init.param_shardings, batch, repl),
                     out_shardings=repl)
  return Programs(p_train, p_eval, layout, init, config, model, num_classes)


def cost(compiled) -> dict:
  """XLA's cost analysis of a compiled program: flops, bytes accessed, optimal seconds
  (per device; 0 where XLA does not say)."""
  try:
    c = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    c = None
  c = (c[0] if isinstance(c, list) and c else c) or {}
  return {"flops": float(c.get("flops", 0.0)), "bytes": float(c.get("bytes accessed", 0.0)),
          "optimal_seconds": float(c.get("optimal_seconds", 0.0))}


def compile(jitted, *args):  # pylint: disable=redefined-builtin
  """Ahead-of-time compiled `jitted` for these arguments (arrays or ShapeDtypeStructs),
  and XLA's FLOPs of one device's share of a step (0 when XLA does not say)."""
  compiled = jitted.lower(*args).compile()
  return compiled, cost(compiled)["flops"]
