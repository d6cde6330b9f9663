"""The train state, the prompts every step sees, and the initial state of a config (built
for real or only as shapes).

  names, text = prompts(config)           # class names; Prompts(tokens, aux_tokens, aux_cats)
  init = init_state(config, model, layout, num_steps, text)           # materialised
  init = init_state(..., abstract=True)   # ShapeDtypeStructs only: nothing is allocated
  init.state (a TrainState), init.shardings (the same tree of NamedShardings), init.tx,
  init.param_shardings, init.num_params

Parameters are laid out by the logical axis rules of `sharding.py` and the optimiser state
like its parameters. The trainer, the evaluator, `--mode=compile` and the pod planner
share these (through `programs.py`).
"""
import dataclasses
from typing import Any, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from victr_jax import config_lib, data, optim, sharding


@flax.struct.dataclass
class TrainState:
  """What a training step advances. step () int32; params and opt_state pytrees (the
  optimiser's laid out like the parameters); rng (2,) uint32 key data."""
  step: Any
  params: Any
  opt_state: Any
  rng: Any

  def as_tree(self) -> dict:
    """The dict a checkpoint stores ({'step', 'params', 'opt_state', 'rng'})."""
    return {"step": self.step, "params": self.params, "opt_state": self.opt_state,
            "rng": self.rng}

  @classmethod
  def from_tree(cls, tree: dict) -> "TrainState":
    return cls(**{k: tree[k] for k in ("step", "params", "opt_state", "rng")})


@flax.struct.dataclass
class Prompts:
  """The text the model sees: class prompts (n, L) int32 and the auxiliary prompts
  (m, L) int32 with their categories (m,) int32 (both None when off). One pytree: what a
  step takes, replicated on every device."""
  tokens: Any
  aux_tokens: Optional[Any] = None
  aux_cats: Optional[Any] = None

  @property
  def num_classes(self) -> int:
    return int(self.tokens.shape[0])

  @property
  def num_aux(self) -> int:
    return 0 if self.aux_tokens is None else int(self.aux_tokens.shape[0])

  def with_classes(self, names, template: str) -> "Prompts":
    """These prompts with the classes `names` instead (an eval set's)."""
    return self.replace(tokens=data.class_tokens(names, template))


def prompts(config) -> tuple[list[str], Prompts]:
  """(train class names, their Prompts with the config's auxiliary prompts)."""
  aux_tokens, aux_cats, _ = data.aux_prompts(config)
  names = data.subset_names(config.data.train)
  return names, Prompts(data.class_tokens(names, config.prompt_template), aux_tokens, aux_cats)


@dataclasses.dataclass
class Initial:
  """A config's initial train state on a layout, with what is needed to step it."""
  state: TrainState      # arrays, or ShapeDtypeStructs with shardings when abstract
  shardings: TrainState  # the state's NamedShardings, same tree
  tx: optax.GradientTransformation
  param_shardings: Any
  num_params: int


def _dummy_inputs(config, model, text: Prompts):
  c = model.clip_cfg
  return (jnp.zeros((1, config.data.num_frames, c.image_size, c.image_size, 3)),
          jnp.asarray(text.tokens),
          None if text.aux_tokens is None else jnp.asarray(text.aux_tokens),
          None if text.aux_cats is None else jnp.asarray(text.aux_cats))


def init_state(config, model, layout: sharding.Layout, num_steps: int, text: Prompts,
               clip_params=None, abstract: bool = False) -> Initial:
  """The initial train state on `layout`: parameters from `config.seed` (the CLIP towers
  from `clip_params` when given), optimiser for `num_steps`, step 0. With abstract=True
  only shapes, dtypes and shardings are computed (jax.eval_shape)."""
  dummy = _dummy_inputs(config, model, text)
  boxed = jax.eval_shape(model.init, jax.random.key(0), *dummy)
  param_sh = sharding.param_shardings(boxed, layout.mesh, layout.rules)["params"]
  tx = optim.make(config_lib.optim_config(config, num_steps), boxed["params"], num_steps)
  repl = layout.replicated

  params_shape = nn.unbox(boxed)["params"]  # shapes only; the CLIP towers as given
  if clip_params is not None:
    params_shape = dict(params_shape, clip=jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), clip_params))
  shapes = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params_shape,
                      opt_state=jax.eval_shape(tx.init, params_shape),
                      rng=jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0))))

  with layout.use():
    opt_sh = sharding.shardings_like_params(shapes.opt_state, shapes.params, param_sh,
                                            layout.mesh)
    state_sh = TrainState(step=repl, params=param_sh, opt_state=opt_sh, rng=repl)
    if abstract:
      state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                           shapes, state_sh)
    else:  # the same calls, in the same order, as every earlier version: same numbers
      params = jax.jit(lambda k: nn.unbox(model.init(k, *dummy))["params"],
                       out_shardings=param_sh)(jax.random.key(config.seed))
      if clip_params is not None:
        params = dict(params, clip=jax.device_put(clip_params, param_sh["clip"]))
      state = TrainState(
          step=jax.device_put(jnp.zeros((), jnp.int32), repl), params=params,
          opt_state=jax.jit(tx.init, out_shardings=opt_sh)(params),
          rng=jax.device_put(jax.random.key_data(jax.random.key(config.seed + 1)), repl))
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes.params))
  return Initial(state, state_sh, tx, param_sh, n_params)
