"""Optimiser groups: each group moves at its own peak learning rate (AdamW's first step
moves a parameter by about its learning rate, whatever the gradient's size)."""
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from victr_jax import config_lib, optim


def _params():
  return {"clip": {"visual": {"kernel": jnp.ones((2, 2))}, "token_embedding": jnp.ones((3, 2)),
                   "logit_scale": jnp.ones(())},
          "head": {"gate_video": jnp.zeros(()), "gate_text": jnp.zeros(()),
                   "layers_0": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros((2,))}},
          "gamma": jnp.zeros((3,))}


def _step(ocfg, grad_scale=1e-3):
  params = _params()
  tx = optim.make(ocfg, params, total_steps=100)
  grads = jax_tree_map(lambda p: grad_scale * jnp.ones_like(p), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  return jax_tree_map(lambda u: np.abs(np.asarray(u)).max(), updates)


def jax_tree_map(f, t):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.map(f, t)


def _ocfg(**kw):
  c = config_lib.base("tiny").optim
  c.warmup_steps = 0
  c.weight_decay = 0.0
  c.clip_grad_norm = 0.0
  c.update(kw)
  return c


def test_groups_of_the_model_params():
  assert optim.group_of(("clip", "visual", "x")) == "visual"
  assert optim.group_of(("clip", "logit_scale")) == "text"
  assert optim.group_of(("head", "gate_video")) == "gates"
  assert optim.group_of(("gamma",)) == "gates"
  assert optim.group_of(("head", "layers_0", "mlp", "c_fc", "kernel")) == "head"


def test_each_group_moves_at_its_own_rate():
  u = _step(_ocfg(lr=2e-6, head_lr=1e-3, gate_lr=1e-2))
  np.testing.assert_allclose(u["clip"]["visual"]["kernel"], 2e-6, rtol=1e-3)
  np.testing.assert_allclose(u["clip"]["token_embedding"], 2e-6, rtol=1e-3)
  np.testing.assert_allclose(u["head"]["layers_0"]["kernel"], 1e-3, rtol=1e-3)
  np.testing.assert_allclose(u["head"]["gate_video"], 1e-2, rtol=1e-3)
  np.testing.assert_allclose(u["gamma"], 1e-2, rtol=1e-3)


def test_a_version_1_work_directory_config_is_migrated(tmp_path):
  """A config.json from before versions: head_lr 0 meant lr x head_lr_mult, clip_act sat at
  the top, and head fields added later take the values its model computed with."""
  import json
  from victr_jax import config_version
  old = config_lib.base("tiny").to_dict()
  del old["config_version"]
  old["optim"].update(lr=2e-6, head_lr=0.0, head_lr_mult=10.0)
  old["clip_act"] = "gelu"
  for k in ("link", "affinity_standardize", "temporal_init_std", "reweight_pooled"):
    del old["model"]["head"][k]
  (tmp_path / "config.json").write_text(json.dumps(old))
  c = config_version.read_workdir_config(str(tmp_path))
  assert c.config_version == config_version.CONFIG_VERSION
  assert "head_lr_mult" not in c.optim and "clip_act" not in c
  np.testing.assert_allclose(optim.peak_lrs(c.optim)["head"], 2e-5)
  assert c.model.clip_act == "gelu"
  h = c.model.head
  assert (h.link, h.affinity_standardize, h.temporal_init_std) == ("embeddings", False, 0.02)
  assert h.reweight_pooled is False  # a field that changes nothing: today's default
  config_lib.check_config(c, "compile", num_devices=1)  # a config of this version
  (tmp_path / "config.json").write_text(json.dumps(dict(old, config_version=99)))
  with pytest.raises(ValueError, match=r"config\.json.*config_version 99"):
    config_version.read_workdir_config(str(tmp_path))


def test_gates_get_no_weight_decay_and_freeze_with_the_head():
  c = _ocfg(lr=0.0, visual_lr_mult=0.0, text_lr_mult=0.0, head_lr=1e-3, gate_lr=1e-2,
            weight_decay=0.5)
  params = _params()
  params["head"]["gate_video"] = jnp.ones(())
  tx = optim.make(c, params, 100)
  zero = jax_tree_map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  assert float(updates["head"]["gate_video"]) == 0.0  # scalars: no decay
  assert float(np.abs(updates["head"]["layers_0"]["kernel"]).max()) > 0  # matrices decay
  frozen = _step(_ocfg(head_lr=1e-3, gate_lr=1e-2, freeze=("head",)))
  assert float(frozen["head"]["gate_video"]) == 0.0 and float(frozen["gamma"]) == 0.0
  zero = _step(_ocfg(head_lr=0.0, gate_lr=1e-2))  # head off: gates off
  assert float(zero["head"]["gate_video"]) == 0.0 and float(zero["gamma"].max()) == 0.0


def test_warmup_in_epochs_is_the_recipes_share():
  import importlib
  import os
  import sys
  sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
  few = importlib.import_module("configs.few_shot").get_config("dataset=hmdb51,shots=2")
  # The peers: 5 of 50 epochs warm up (timm CosineLRScheduler, lr_min = lr / 100).
  assert config_lib.optim_config(few, 80).warmup_steps == 8
  assert config_lib.optim_config(few, 1263).warmup_steps == 126
  assert few.optim.end_lr_ratio == 0.01
  c = config_lib.base("tiny")  # warmup_epochs 0: warmup_steps as given
  assert config_lib.optim_config(c, 1000).warmup_steps == c.optim.warmup_steps
  c.optim.warmup_epochs, c.num_epochs = 1.0, 0.0
  with pytest.raises(ValueError, match="warmup_epochs"):
    config_lib.optim_config(c, 10)
