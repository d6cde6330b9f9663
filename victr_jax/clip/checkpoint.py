"""CLIP checkpoint import: OpenAI TorchScript, open_clip state dicts, Hugging Face, ours.

Every source is first read into a flat {name: np.ndarray} state dict in OpenAI naming
(`visual.transformer.resblocks.0.attn.in_proj_weight`, ...): a torch file's `state_dict`
or `model` wrapper is unwrapped, a `module.` prefix stripped, and Hugging Face names are
renamed, with their q/k/v packed and projections transposed (`hf_to_openai`). Entries that are not
parameters are dropped: OpenAI's `input_resolution`, `context_length` and `vocab_size`, a
top-level `attn_mask` buffer, and Hugging Face's `position_ids`. That dict then maps onto
the Flax tree by one rule set (`openai_to_flax`), and is checked against the shapes the
model expects: an unknown key, a missing key or a shape mismatch raises `CheckpointError`
naming the key (and both shapes).

Formats and where the activation comes from (the weights cannot show it):
  * OpenAI TorchScript archive (.pt, fp16): QuickGELU. Needs torch to read.
  * OpenAI-layout state dict (a file of any of the formats below holding all three of
    OpenAI's `input_resolution`, `context_length`, `vocab_size` entries, which
    open_clip's lack): QuickGELU.
  * open_clip state dict (.safetensors without torch; any other file, e.g. .pt/.pth/.bin,
    via torch): pass `act=` ('gelu' for open_clip models without -quickgelu, 'quick_gelu'
    otherwise).
  * Hugging Face CLIP directory (config.json + model.safetensors or pytorch_model.bin):
    `hidden_act` of config.json, which also gives the head counts and LayerNorm epsilon.
    A Hugging Face state dict in a single file (`vision_model.*` / `text_model.*` keys)
    is read too, but records no activation: pass `act=`.
  * A directory written by `victr-convert-clip`: clip_config.json (keys `config`, the
    CLIPConfig with its activation; `source`; `format`) + params.msgpack. Loading it
    needs no torch.
"""
import json
import os
import re
import shutil
import tempfile
import warnings
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import gpath
from victr_jax.clip.config import CLIPConfig
from victr_jax.clip.model import CLIP

CONFIG_FILE = "clip_config.json"
PARAMS_FILE = "params.msgpack"
# Buffers of some formats that are not parameters.
_OPENAI_KEYS = ("input_resolution", "context_length", "vocab_size")
_DROP = {*_OPENAI_KEYS, "attn_mask"}
_FORMAT_NAMES = {"openai": "OpenAI TorchScript archive",
                 "openai_state_dict": "OpenAI-layout state dict (QuickGELU by definition)",
                 "hf": "Hugging Face CLIP (config.json hidden_act)"}
_HF_ACTS = {"quick_gelu": "quick_gelu", "gelu": "gelu"}


class CheckpointError(ValueError):
  """A checkpoint that does not fit the model, or cannot be read."""


# ----------------------------------------------------------------------------- reading


def _require_torch(path):
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise CheckpointError(
        f"{path}: reading this PyTorch file needs torch (pip install 'victr-jax[torch]'), "
        "or convert it once with victr-convert-clip and load the result") from e
  return torch


def _to_numpy(sd) -> dict[str, np.ndarray]:
  out = {}
  for k, v in sd.items():
    if hasattr(v, "detach"):  # torch tensor
      v = v.detach().cpu().float().numpy() if v.is_floating_point() else v.cpu().numpy()
    out[k] = np.asarray(v)
  return out


def _read_torch_file(path) -> tuple[dict[str, np.ndarray], str]:
  """Returns (state dict, 'openai' for a TorchScript archive else 'state_dict')."""
  torch = _require_torch(path)
  try:
    with warnings.catch_warnings():  # torch's deprecation notice of jit.load: not the user's
      warnings.simplefilter("ignore", FutureWarning)
      archive = torch.jit.load(path, map_location="cpu")
    return _to_numpy(archive.state_dict()), "openai"
  except RuntimeError:
    pass  # Not TorchScript: a pickled state dict.
  try:
    sd = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e})") from e
  for wrapper in ("state_dict", "model"):
    if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
      sd = sd[wrapper]
  if not isinstance(sd, dict):
    raise CheckpointError(f"{path}: expected a state dict, found {type(sd).__name__}")
  return _to_numpy(sd), "state_dict"


def _read_safetensors(path) -> dict[str, np.ndarray]:
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  try:
    sd = load_file(path)
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
  return {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in sd.items()}


def read_state_dict(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Reads any supported source into (OpenAI-named state dict, facts).

  facts: {'format': 'openai' | 'openai_state_dict' | 'open_clip' | 'hf', 'act': str or
  None, 'vision_heads', 'text_heads', 'ln_eps': float or None}. A gs:// source is read
  from a temporary local copy (torch and safetensors read local files).
  """
  if not gpath.exists(path):
    raise CheckpointError(f"{path}: no such file or directory")
  if gpath.is_remote(path):
    with gpath.local_copy(path) as local:
      return read_state_dict(local)
  facts = {"act": None, "vision_heads": None, "text_heads": None, "ln_eps": None}
  if os.path.isdir(path):
    cfg_path = os.path.join(path, "config.json")
    if not os.path.exists(cfg_path):
      raise CheckpointError(f"{path}: a directory, but neither a victr-convert-clip output "
                            f"({CONFIG_FILE}) nor a Hugging Face CLIP ({cfg_path} missing)")
    for name, reader in (("model.safetensors", _read_safetensors),
                         ("pytorch_model.bin", lambda p: _read_torch_file(p)[0])):
      if os.path.exists(os.path.join(path, name)):
        sd = reader(os.path.join(path, name))
        break
    else:
      raise CheckpointError(f"{path}: Hugging Face directory without model.safetensors or "
                            "pytorch_model.bin")
    facts.update(_hf_facts(cfg_path), format="hf")
  elif path.endswith(".safetensors"):
    sd = _read_safetensors(path)
    facts["format"] = "open_clip"
  else:
    sd, kind = _read_torch_file(path)
    facts["format"] = "openai" if kind == "openai" else "open_clip"
    if kind == "openai":
      facts["act"] = "quick_gelu"
  sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
  if facts["format"] == "open_clip" and all(k in sd for k in _OPENAI_KEYS):
    facts.update(format="openai_state_dict", act="quick_gelu")
  if any(k.startswith(("vision_model.", "text_model.")) for k in sd):
    sd = hf_to_openai(sd)
    if facts["format"] == "open_clip":
      facts["format"] = "hf"
  return sd, facts


def _hf_facts(cfg_path) -> dict[str, Any]:
  try:
    with open(cfg_path) as f:
      hf = json.load(f)
    t, v = hf["text_config"], hf["vision_config"]
  except (OSError, ValueError, KeyError) as e:
    raise CheckpointError(f"{cfg_path}: not a Hugging Face CLIPModel config ({e!r})") from e
  acts = {t.get("hidden_act", "quick_gelu"), v.get("hidden_act", "quick_gelu")}
  if len(acts) != 1 or not acts <= set(_HF_ACTS):
    raise CheckpointError(f"{cfg_path}: hidden_act {sorted(acts)} not supported; the port "
                          f"runs one of {sorted(_HF_ACTS)} in both towers")
  eps = {t.get("layer_norm_eps", 1e-5), v.get("layer_norm_eps", 1e-5)}
  if len(eps) != 1:
    raise CheckpointError(f"{cfg_path}: layer_norm_eps differs between towers {sorted(eps)}")
  return {"act": _HF_ACTS[acts.pop()], "vision_heads": v.get("num_attention_heads"),
          "text_heads": t.get("num_attention_heads"), "ln_eps": eps.pop()}


# ----------------------------------------------------------------------------- renaming

_HF_RENAMES = [
    (r"^text_model\.embeddings\.token_embedding\.", "token_embedding."),
    (r"^text_model\.embeddings\.position_embedding\.weight$", "positional_embedding"),
    (r"^text_model\.encoder\.layers\.", "transformer.resblocks."),
    (r"^text_model\.final_layer_norm\.", "ln_final."),
    (r"^vision_model\.embeddings\.class_embedding$", "visual.class_embedding"),
    (r"^vision_model\.embeddings\.patch_embedding\.", "visual.conv1."),
    (r"^vision_model\.embeddings\.position_embedding\.weight$", "visual.positional_embedding"),
    (r"^vision_model\.pre_layrnorm\.", "visual.ln_pre."),
    (r"^vision_model\.encoder\.layers\.", "visual.transformer.resblocks."),
    (r"^vision_model\.post_layernorm\.", "visual.ln_post."),
    (r"\.self_attn\.out_proj\.", ".attn.out_proj."),
    (r"\.layer_norm1\.", ".ln_1."),
    (r"\.layer_norm2\.", ".ln_2."),
    (r"\.mlp\.fc1\.", ".mlp.c_fc."),
    (r"\.mlp\.fc2\.", ".mlp.c_proj."),
]


def hf_to_openai(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Renames a Hugging Face CLIPModel state dict to OpenAI names; packs q/k/v; transposes
  the projections (HF stores them as Linear weights (E, W), OpenAI as matrices (W, E))."""
  out, qkv = {}, {}
  for key, value in sd.items():
    if key.endswith("position_ids"):
      continue
    if key == "visual_projection.weight":
      out["visual.proj"] = value.T
      continue
    if key == "text_projection.weight":
      out["text_projection"] = value.T
      continue
    name = key
    for pattern, repl in _HF_RENAMES:
      name = re.sub(pattern, repl, name)
    m = re.match(r"^(.*)\.self_attn\.([qkv])_proj\.(weight|bias)$", name)
    if m:
      qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = (key, value)
      continue
    out[name] = value
  for (prefix, kind), parts in qkv.items():
    if set(parts) != {"q", "k", "v"}:
      missing = sorted({"q", "k", "v"} - set(parts))
      raise CheckpointError(f"{parts[next(iter(parts))][0]}: missing {missing}_proj beside it")
    out[f"{prefix}.attn.in_proj_{kind}"] = np.concatenate([parts[c][1] for c in "qkv"], 0)
  return out


def _flax_path(key: str) -> tuple[tuple[str, ...], Any]:
  """OpenAI key -> (Flax param path, transform of the array)."""
  parts = re.sub(r"resblocks\.(\d+)", r"resblocks_\1", key).split(".")
  *mods, leaf = parts
  module = mods[-1] if mods else ""
  if leaf in ("in_proj_weight", "in_proj_bias"):
    return (*mods, "in_proj", "kernel" if leaf.endswith("weight") else "bias"), (
        np.transpose if leaf.endswith("weight") else None)
  if leaf == "weight":
    if module.startswith("ln"):
      return (*mods, "scale"), None
    if module == "conv1":  # (O, I, kh, kw) -> (kh, kw, I, O)
      return (*mods, "kernel"), lambda w: np.transpose(w, (2, 3, 1, 0))
    if module == "token_embedding":
      return (*mods, "embedding"), None
    return (*mods, "kernel"), np.transpose
  return (*mods, leaf), None


def openai_to_flax(sd: dict[str, np.ndarray], expected: dict[tuple, tuple]) -> dict:
  """Maps an OpenAI-named state dict onto the Flax tree with shapes `expected` (flat)."""
  flat = {}
  for key, value in sd.items():
    if key in _DROP:
      continue
    path, fn = _flax_path(key)
    if path not in expected:
      raise CheckpointError(f"unknown checkpoint key {key!r} (would be Flax param "
                            f"{'/'.join(path)}); the ViT CLIP port has no such parameter")
    value = fn(value) if fn is not None else value
    if expected.get(path) == () and value.size == 1:  # logit_scale stored as [x]
      value = value.reshape(())
    if tuple(value.shape) != tuple(expected[path]):
      raise CheckpointError(f"shape mismatch for {key!r}: checkpoint {tuple(value.shape)} "
                            f"(as Flax {'/'.join(path)}), model expects {tuple(expected[path])}")
    flat[path] = np.asarray(value, np.float32)
  missing = sorted("/".join(p) for p in expected if p not in flat)
  if missing:
    raise CheckpointError(f"checkpoint lacks {len(missing)} parameter(s), first: "
                          f"{missing[:5]} (OpenAI names: "
                          f"{[openai_name(m) for m in missing[:5]]})")
  return flax.traverse_util.unflatten_dict(flat)


def openai_name(flax_path: str) -> str:
  """Flax path 'visual/transformer/resblocks_0/ln_1/scale' -> its OpenAI state-dict key."""
  key = re.sub(r"resblocks_(\d+)", r"resblocks.\1", flax_path).replace("/", ".")
  key = re.sub(r"\.in_proj\.kernel$", ".in_proj_weight", key)
  key = re.sub(r"\.in_proj\.bias$", ".in_proj_bias", key)
  return re.sub(r"\.(kernel|scale|embedding)$", ".weight", key)


# ----------------------------------------------------------------------------- config


def infer_config(sd: dict[str, np.ndarray], act: Optional[str], vision_heads=None,
                 text_heads=None, ln_eps=None) -> CLIPConfig:
  """Reads the architecture off OpenAI-named weights. Heads default to width // 64."""
  def get(key):
    if key not in sd:
      if any(k.startswith("visual.layer1.") for k in sd):
        raise CheckpointError("this is a ResNet CLIP (visual.layer1.*); only ViT CLIPs are "
                              "supported")
      raise CheckpointError(f"checkpoint lacks {key!r}; is this a CLIP (ViT) checkpoint?")
    return sd[key]

  def layers(prefix):
    return len({m.group(1) for k in sd for m in [re.match(prefix + r"\.(\d+)\.", k)] if m})

  if act is None:
    raise CheckpointError("this checkpoint format does not record the activation: pass "
                          "act='gelu' (open_clip models without -quickgelu) or "
                          "act='quick_gelu' (OpenAI weights, *-quickgelu models)")
  conv = get("visual.conv1.weight")
  pos = get("visual.positional_embedding")
  vw, tw = conv.shape[0], get("ln_final.weight").shape[0]
  grid = int(round((pos.shape[0] - 1) ** 0.5))
  return CLIPConfig(
      embed_dim=get("text_projection").shape[1],
      image_size=conv.shape[-1] * grid,
      patch_size=conv.shape[-1],
      vision_width=vw,
      vision_layers=layers(r"visual\.transformer\.resblocks"),
      vision_heads=vision_heads or max(vw // 64, 1),
      vision_mlp_dim=get("visual.transformer.resblocks.0.mlp.c_fc.weight").shape[0],
      context_length=get("positional_embedding").shape[0],
      vocab_size=get("token_embedding.weight").shape[0],
      text_width=tw,
      text_layers=layers(r"transformer\.resblocks"),
      text_heads=text_heads or max(tw // 64, 1),
      text_mlp_dim=get("transformer.resblocks.0.mlp.c_fc.weight").shape[0],
      act=act,
      ln_eps=ln_eps or 1e-5)


def expected_shapes(cfg: CLIPConfig) -> dict[tuple, tuple]:
  """Flat {Flax path: shape} of a model built from cfg (no compute, no memory)."""
  model = CLIP(cfg)
  shapes = jax.eval_shape(
      model.init, jax.random.key(0), jnp.zeros((1, cfg.image_size, cfg.image_size, 3)),
      jnp.zeros((1, cfg.context_length), jnp.int32))
  flat = flax.traverse_util.flatten_dict(flax.linen.unbox(shapes["params"]))
  return {k: v.shape for k, v in flat.items()}


# ----------------------------------------------------------------------------- public


def load_converted(path: str) -> tuple[CLIPConfig, dict]:
  """Reads a victr-convert-clip directory (no torch needed)."""
  cfg_path, params_path = os.path.join(path, CONFIG_FILE), os.path.join(path, PARAMS_FILE)
  for p in (cfg_path, params_path):
    if not gpath.exists(p):
      raise CheckpointError(f"{path}: incomplete converted checkpoint, {p} is missing")
  try:
    meta = json.loads(gpath.read_text(cfg_path))
    cfg = CLIPConfig.from_dict(meta["config"])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise CheckpointError(f"{cfg_path}: unreadable CLIP config ({e!r})") from e
  try:
    tree = flax.serialization.msgpack_restore(gpath.read_bytes(params_path))
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f"{params_path}: unreadable parameters ({e!r})") from e
  expected = expected_shapes(cfg)
  flat = flax.traverse_util.flatten_dict(tree)
  for p in sorted(set(expected) | set(flat)):
    name = "/".join(p)
    if p not in flat:
      raise CheckpointError(f"{params_path}: missing parameter {name}")
    if p not in expected:
      raise CheckpointError(f"{params_path}: unknown parameter {name}")
    if tuple(flat[p].shape) != tuple(expected[p]):
      raise CheckpointError(f"{params_path}: shape mismatch for {name}: file "
                            f"{tuple(flat[p].shape)}, model expects {tuple(expected[p])}")
  return cfg, tree


def load_params(path: str, act: Optional[str] = None, config: Optional[CLIPConfig] = None,
                default_act: Optional[str] = None, **overrides) -> tuple[CLIPConfig, dict]:
  """Reads any supported checkpoint into (CLIPConfig, float32 numpy param tree).

  act: activation for formats that do not record it (open_clip state dicts); for other
    formats it must agree with the format's own (or be None).
  default_act: the activation for a format that does not record it, ignored by one that
    does (the trainer passes the model's: the checkpoint is then checked against it).
  config: a CLIPConfig to load into instead of the one inferred from the weights (its
    shapes are then checked against the checkpoint).
  overrides: CLIPConfig fields to change on the inferred config (e.g. vision_heads).
  """
  if gpath.isdir(path) and gpath.exists(os.path.join(path, CONFIG_FILE)):
    cfg, tree = load_converted(path)
    if act is not None and act != cfg.act:
      raise CheckpointError(f"{path}: act={act!r} given, but this converted checkpoint "
                            f"records {cfg.act!r}")
    return cfg, tree
  sd, facts = read_state_dict(path)
  if act is not None and facts["act"] is not None and act != facts["act"]:
    raise CheckpointError(f"{path}: act={act!r} given, but this "
                          f"{_FORMAT_NAMES.get(facts['format'], facts['format'])} uses "
                          f"{facts['act']!r}")
  try:
    return from_state_dict(sd, act or facts["act"] or default_act, config, vision_heads=facts["vision_heads"],
                           text_heads=facts["text_heads"], ln_eps=facts["ln_eps"], **overrides)
  except CheckpointError as e:
    raise CheckpointError(f"{path}: {e}") from e


def from_state_dict(sd: dict[str, Any], act: Optional[str],
                    config: Optional[CLIPConfig] = None, vision_heads=None, text_heads=None,
                    ln_eps=None, **overrides) -> tuple[CLIPConfig, dict]:
  """An in-memory OpenAI/open_clip-named state dict (numpy or torch) -> (config, params)."""
  sd = _to_numpy(sd)
  if config is None:
    config = infer_config(sd, act, vision_heads, text_heads, ln_eps)
  config = config.replace(**overrides) if overrides else config
  return config, openai_to_flax(sd, expected_shapes(config))


def load(path: str, act: Optional[str] = None, config: Optional[CLIPConfig] = None,
         dtype=jnp.float32, remat: bool = False, **overrides) -> tuple[CLIP, dict]:
  """Loads a CLIP checkpoint of any supported format: returns (model, params).

  params are float32 jax arrays; `dtype` is the model's compute dtype.
  """
  cfg, tree = load_params(path, act=act, config=config, **overrides)
  return CLIP(cfg, dtype=dtype, remat=remat), jax.tree.map(jnp.asarray, tree)


def save_converted(cfg: CLIPConfig, params, dst: str, source: str = "",
                   overwrite: bool = False) -> str:
  """Writes (config, params) to `dst` as clip_config.json + params.msgpack, atomically:
  files go to a temporary directory beside dst that is renamed into place at the end, so a
  killed conversion never leaves a directory that loads. On gs:// (no renames) the files
  are uploaded whole, clip_config.json last: a checkpoint without it does not load."""
  params = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
  meta = json.dumps({"config": cfg.to_dict(), "source": source, "format": "victr-clip-v1"},
                    indent=2, sort_keys=True)
  if gpath.is_remote(dst):
    if gpath.exists(dst) and not overwrite:
      raise FileExistsError(f"{dst} exists; pass overwrite=True (--overwrite) to replace it")
    gpath.rmtree(dst)
    gpath.atomic_write(os.path.join(dst, PARAMS_FILE), flax.serialization.msgpack_serialize(params))
    gpath.atomic_write(os.path.join(dst, CONFIG_FILE), meta)
    return dst
  dst = os.path.abspath(dst)
  if os.path.exists(dst) and not overwrite:
    raise FileExistsError(f"{dst} exists; pass overwrite=True (--overwrite) to replace it")
  parent = os.path.dirname(dst)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=os.path.basename(dst) + ".tmp-", dir=parent)
  try:
    with open(os.path.join(tmp, PARAMS_FILE), "wb") as f:
      f.write(flax.serialization.msgpack_serialize(params))
    with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
      f.write(meta)
    if os.path.exists(dst):
      shutil.rmtree(dst)
    os.replace(tmp, dst)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return dst
