"""The layout version of a config, and the one function that upgrades an older work
directory's config.json to it.

  config = config_version.read_workdir_config(WORKDIR)   # migrated to CONFIG_VERSION
  raw = config_version.migrate(json_dict)

Every config carries `config_version` (config_lib.base); the trainer writes it into the work
directory's config.json, and whatever reads a work directory (victr-classify, the
Predictor, `init_from`) reads it through `read_workdir_config`.
"""
import copy
import json
import os

import ml_collections

from data_pipelines import gpath

# The layout of a config (written into every work directory's config.json). 1: before
# versions (head fields missing, optim.head_lr 0 meaning lr x head_lr_mult, a top-level
# clip_act); 2: this one.
CONFIG_VERSION = 2
# What a version-1 work directory's model computed where its config lacks a head field:
# the values from before each field existed.
_V1_HEAD = {"temporal_init_std": 0.02, "temporal_relative": False,
            "affinity_standardize": False, "affinity_temperature": 0.0,
            "gate_norm_matched": False, "aux_logit_scale": False, "link": "embeddings"}


def migrate(raw: dict) -> dict:
  """A work directory's config.json (as parsed JSON) in this version's layout
  (CONFIG_VERSION): version 1 gets the head fields it lacks with the values its model
  computed with (_V1_HEAD, then the current defaults for fields that change nothing),
  optim.head_lr from its old rule (0: lr x head_lr_mult), and its top-level clip_act
  moved to model.clip_act. A newer version than this code knows is an error."""
  from victr_jax import config_lib, models  # pylint: disable=g-import-not-at-top
  raw = copy.deepcopy(raw)
  version = int(raw.get("config_version", 1))
  if version > CONFIG_VERSION:
    raise ValueError(f"config_version {version} is newer than this victr-jax reads "
                     f"({CONFIG_VERSION}): upgrade victr-jax")
  if version == 1:
    model = raw.setdefault("model", {})
    head = model.setdefault("head", {})
    for k, v in _V1_HEAD.items():
      head.setdefault(k, v)
    ref = models.get_config("tiny").to_dict()  # any size: only fields it lacks are read
    for k, v in ref["head"].items():
      head.setdefault(k, v)
    for k, v in ref.items():
      if k != "head":
        model.setdefault(k, v)
    o = raw.setdefault("optim", {})
    mult = o.pop("head_lr_mult", 10.0)
    if not o.get("head_lr"):
      o["head_lr"] = o.get("lr", config_lib.base().optim.lr) * mult
    o["gate_lr"] = o.get("gate_lr") or o["head_lr"]  # 0 meant the head's
    if "clip_act" in raw:
      act = raw.pop("clip_act")
      if act and not model.get("clip_act"):
        model["clip_act"] = act
    # Fields added since, which change nothing for an old run: today's defaults (e.g.
    # data.test_resize 0, num_test_clips 1, view_aggregation '').
    ref = config_lib.base().to_dict()
    for k, v in ref.items():
      if k == "model":
        continue
      raw.setdefault(k, v)
      if isinstance(v, dict) and isinstance(raw[k], dict) and k not in ("evals",):
        for kk, vv in v.items():
          raw[k].setdefault(kk, vv)
    raw["config_version"] = CONFIG_VERSION
  return raw


def read_workdir_config(workdir: str) -> ml_collections.ConfigDict:
  """WORKDIR/config.json, migrated to this version's layout (`migrate`)."""
  path = os.path.join(workdir, "config.json")
  try:
    raw = json.loads(gpath.read_text(path))
  except (OSError, ValueError) as e:
    raise ValueError(f"{path}: not a readable work directory config ({e})") from e
  try:
    return ml_collections.ConfigDict(migrate(raw))
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from e
