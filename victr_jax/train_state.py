"""The train state of a config, built for real or only as shapes, and the step that
advances it.

  text = prompts(config)                  # class and auxiliary prompt tokens
  st = init_state(config, model, mesh, rules, num_steps, text)            # materialised
  st = init_state(..., abstract=True)     # ShapeDtypeStructs only: nothing is allocated
  st.state, st.shardings, st.tx, st.param_shardings
  train_step = make_train_step(model, st.tx, config.optim, num_classes, multi_label)

The state is {'step': int32, 'params', 'opt_state', 'rng': key data}; parameters are laid
out by the logical axis rules of `sharding.py` and the optimiser state like its
parameters. The trainer, `restore` and `--mode=compile`-style tools share these.
"""
import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from victr_jax import config_lib, data, losses, metrics, optim, sharding


@dataclasses.dataclass
class Prompts:
  """The text the model sees every step: train class prompts (n, L) and the auxiliary
  prompts (m, L) with their categories (m,) (None when off)."""
  names: list
  tokens: np.ndarray
  aux_tokens: Optional[np.ndarray]
  aux_cats: Optional[np.ndarray]


def prompts(config) -> Prompts:
  aux_tokens, aux_cats, _ = data.aux_prompts(config)
  names = data.subset_names(config.data.train)
  return Prompts(names, data.class_tokens(names, config.prompt_template), aux_tokens, aux_cats)


@dataclasses.dataclass
class TrainState:
  state: Any        # the state pytree (arrays, or ShapeDtypeStructs when abstract)
  shardings: Any    # its shardings, same tree
  tx: optax.GradientTransformation
  param_shardings: Any
  num_params: int


def _dummy_inputs(config, model, text: Prompts):
  c = model.clip_cfg
  return (jnp.zeros((1, config.data.num_frames, c.image_size, c.image_size, 3)),
          jnp.asarray(text.tokens),
          None if text.aux_tokens is None else jnp.asarray(text.aux_tokens),
          None if text.aux_cats is None else jnp.asarray(text.aux_cats))


def init_state(config, model, mesh, rules, num_steps: int, text: Prompts,
               clip_params=None, abstract: bool = False) -> TrainState:
  """The initial train state on `mesh`: parameters from `config.seed` (the CLIP towers
  from `clip_params` when given), optimiser for `num_steps`, step 0. With abstract=True
  only shapes, dtypes and shardings are computed (jax.eval_shape)."""
  dummy = _dummy_inputs(config, model, text)
  boxed = jax.eval_shape(model.init, jax.random.key(0), *dummy)
  param_sh = sharding.param_shardings(boxed, mesh, rules)["params"]
  tx = optim.make(config_lib.optim_config(config, num_steps), boxed["params"], num_steps)
  repl = sharding.replicated(mesh)

  params_shape = nn.unbox(boxed)["params"]  # shapes only; the CLIP towers as given
  if clip_params is not None:
    params_shape = dict(params_shape, clip=jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), clip_params))
  shapes = {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": params_shape,
            "opt_state": jax.eval_shape(tx.init, params_shape),
            "rng": jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))}

  with sharding.use(mesh, rules):
    opt_sh = sharding.shardings_like_params(shapes["opt_state"], shapes["params"], param_sh,
                                            mesh)
    state_sh = {"step": repl, "params": param_sh, "opt_state": opt_sh, "rng": repl}
    if abstract:
      state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                           shapes, state_sh)
    else:  # the same calls, in the same order, as every earlier version: same numbers
      params = jax.jit(lambda k: nn.unbox(model.init(k, *dummy))["params"],
                       out_shardings=param_sh)(jax.random.key(config.seed))
      if clip_params is not None:
        params = dict(params, clip=jax.device_put(clip_params, param_sh["clip"]))
      state = {"step": jax.device_put(jnp.zeros((), jnp.int32), repl), "params": params,
               "opt_state": jax.jit(tx.init, out_shardings=opt_sh)(params),
               "rng": jax.device_put(jax.random.key_data(jax.random.key(config.seed + 1)),
                                     repl)}
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))
  return TrainState(state, state_sh, tx, param_sh, n_params)


def make_train_step(model, tx, ocfg, num_classes: int, multi_label: bool):
  """(state, batch, class_tokens, aux_tokens, aux_cats) -> (state, metrics): soft targets,
  optional Mixup / CutMix, the loss, one optimiser update. Metrics: loss, grad_norm (the
  trainer stops when either is not finite) and, single-label, top1 on the mixed batch."""

  def train_step(state, batch, class_tokens, aux_tokens, aux_cats):
    rng, mix_rng = jax.random.split(jax.random.wrap_key_data(state["rng"]))
    frames, labels = batch["frames"], batch["label"]
    targets = losses.soft_targets(labels, num_classes, multi_label, ocfg.label_smoothing)
    mixup_alpha, cutmix_alpha = ocfg.mixup_alpha, ocfg.get("cutmix_alpha", 0.0)
    if mixup_alpha > 0 or cutmix_alpha > 0:
      frames, targets = losses.mix_batch(frames, targets, mix_rng, mixup_alpha, cutmix_alpha,
                                         ocfg.get("mixup_switch_prob", 0.5))

    def loss_of(params):
      out = model.apply({"params": params}, frames, class_tokens, aux_tokens, aux_cats,
                        train=True)
      logits = out["logits"].astype(jnp.float32)
      return losses.loss_fn(logits, targets, multi_label), logits

    (loss, logits), grads = jax.value_and_grad(loss_of, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    out = {"loss": loss, "grad_norm": optax.global_norm(grads)}
    if not multi_label:
      hits, count = metrics.topk_correct(logits, labels, 1)
      out["top1"] = hits / count
    new = {"step": state["step"] + 1, "params": params, "opt_state": opt_state,
           "rng": jax.random.key_data(rng)}
    return new, out

  return train_step
