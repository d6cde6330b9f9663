"""Model configs: `get_config(size)` -> ml_collections.ConfigDict, size one of 'tiny', 'demo',
'B/32', 'B/16', 'L/14', 'L/14-336'.

Every choice the paper leaves open is a field here (each field and what it switches off:
docs/method.md#6-configuration-switches-and-ablations); `validate` rejects a bad value
before anything is built, naming the field.
"""
import ml_collections

from victr_jax.clip import config as clip_config
from victr_jax.models import head as H

MODEL_NAMES = ("victr", "clip_zero_shot", "mean_pool")
CHOICES = {
    "head.attention": ("divided", "joint"),
    "head.affinity_fn": ("softmax", "sigmoid", "none"),
    "head.classifier": ("affinity", "text", "visual"),
    "head.aux_aggregation": ("softmax", "mean"),
    "head.link": ("embeddings", "logits"),
    "head.video_embedding": ("victr", "clip"),
    "head.text_embedding": ("victr", "clip"),
    "dtype": ("float32", "bfloat16"),
    "name": MODEL_NAMES,
}
_SIZES = {  # model size -> (CLIP preset, head heads)
    "tiny": ("tiny", 2),
    "demo": ("demo", 2),
    "B/32": ("ViT-B/32", 8),
    "B/16": ("ViT-B/16", 8),
    "L/14": ("ViT-L/14", 12),
    "L/14-336": ("ViT-L/14-336", 12),
}


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  """A VicTR model config for a size ('tiny', 'demo', 'B/32', 'B/16', 'L/14', 'L/14-336')."""
  if arg not in _SIZES:
    raise KeyError(f"unknown model size {arg!r}; known: {sorted(_SIZES)}")
  clip_name, heads = _SIZES[arg]
  c = ml_collections.ConfigDict()
  c.name = "victr"                 # 'victr' | 'clip_zero_shot' | 'mean_pool'
  c.clip = clip_name               # CLIP preset (architecture; weights come from a checkpoint)
  c.clip_act = ""                  # '' keeps the preset's activation; or 'gelu' / 'quick_gelu'
  c.clip_from_checkpoint = False   # take clip / clip_act (and the head's default heads) from
                                   # the run's CLIP checkpoint (adopt_clip); False: they must
                                   # match it
  c.num_frames = 8                 # T the temporal embedding is sized for (others interpolate)
  c.dtype = "float32"              # compute dtype; params stay float32
  c.remat = False                  # rematerialise tower blocks and head layers (saves memory)
  c.scan_layers = False            # tower blocks in one lax.scan, same parameters and result:
                                   # 1.5x faster on CPU (configs/demo.py sets it); on a TPU
                                   # slice less memory and a faster compile, its step time
                                   # unmeasured (docs/cpu_performance.md)
  c.logit_bias = False             # a learnable scalar added to the logits (multi-label)
  c.logit_bias_init = -10.0        # its start: sigmoids start small (SigLIP's -10)
  c.freeze_image_tower = False
  c.freeze_text_tower = False
  c.freeze_logit_scale = False
  c.head = ml_collections.ConfigDict(dict(
      H.DEFAULTS,                  # the head module's switches (models/head.py)
      num_heads=heads,
      width=0,                     # 0: the CLIP embedding size D
      classifier="affinity",       # 'affinity' | 'text' | 'visual'
      aux_text=True,
      aux_aggregation="softmax",   # per category: softmax_j(s cos(zv, zx_j)) | 'mean'
      gamma_init=0.0,              # the auxiliary weights' start (0: the term starts off)
      video_embedding="victr",     # 'victr' | 'clip' (frame mean), paper Table 1
      text_embedding="victr",      # 'victr' | 'clip', paper Table 1
      gated_residual=True,         # a zero-initialised gate joins the head to CLIP
      link="logits",               # where: the embeddings (clip + gate |clip| head^) or
                                   # the logits (CLIP's zero-shot logits + gate x the head's)
      aux_logit_scale=True,        # auxiliary term on the CLIP logit scale (False: unscaled)
      num_aux_categories=3,        # k
      num_classes=0,               # only for classifier='visual' (closed set)
      video_chunk=0,               # > 0: the head runs on this many videos of the global
                                   # batch at a time (bounded memory; same result)
  ))
  return c


def clip_config_of(cfg) -> clip_config.CLIPConfig:
  """The CLIPConfig a model config builds: its CLIP preset, with `clip_act` if set."""
  over = {"act": cfg.clip_act} if cfg.get("clip_act") else {}
  return clip_config.get_config(cfg.clip, **over)


def preset_of(ccfg: clip_config.CLIPConfig) -> str:
  """The name of the preset whose architecture is `ccfg` (any activation); ValueError
  when none is."""
  for name, preset in clip_config.PRESETS.items():
    if preset.replace(act=ccfg.act) == ccfg:
      return name
  raise ValueError(f"a CLIP of {ccfg} is none of the presets {sorted(clip_config.PRESETS)}")


def adopt_clip(cfg, ccfg: clip_config.CLIPConfig, path: str):
  """Model config `cfg` with its CLIP taken from checkpoint `path`'s `ccfg` when
  `cfg.clip_from_checkpoint` (the head's heads follow when they were the old size's
  default); otherwise `cfg` unchanged and `check_clip_checkpoint` decides. Returns a copy."""
  if not cfg.get("clip_from_checkpoint") or ccfg == clip_config_of(cfg):
    return cfg
  heads = {preset: h for preset, h in _SIZES.values()}  # each preset's default head heads
  try:
    name = preset_of(ccfg)
  except ValueError as e:
    raise ValueError(f"config field model.clip: clip_checkpoint {path}: {e}") from e
  out = cfg.copy_and_resolve_references()
  out.clip = name
  out.clip_act = "" if clip_config.PRESETS[name].act == ccfg.act else ccfg.act
  if name in heads and out.head.num_heads == heads.get(cfg.clip):
    out.head.num_heads = heads[name]
  return out


def check_clip_checkpoint(cfg, ckpt_cfg: clip_config.CLIPConfig, path: str,
                          read_act: str = "") -> None:
  """Raises ValueError unless the CLIPConfig of checkpoint `path` (activation included) is
  the one model config `cfg` builds. read_act: the act the checkpoint was read with."""
  c = clip_config_of(cfg)
  if ckpt_cfg.act != c.act:
    read = f" (read with clip_act={read_act!r})" if read_act else ""
    fix = f", or correct clip_act if the checkpoint is not {ckpt_cfg.act!r}" if read_act else ""
    raise ValueError(
        f"config field model.clip_act: clip_checkpoint {path} is a {ckpt_cfg.act!r} CLIP"
        f"{read}, but the model (model.clip={cfg.clip!r}, model.clip_act="
        f"{cfg.get('clip_act', '')!r}) runs {c.act!r}: set model.clip_act={ckpt_cfg.act!r}{fix}")
  if ckpt_cfg != c:
    try:
      name = preset_of(ckpt_cfg)
      theirs, fix = f"a {name} CLIP", f", or name {name!r}"
    except ValueError:
      theirs, fix = f"a CLIP of {ckpt_cfg}", ""
    raise ValueError(f"config field model.clip: clip_checkpoint {path} is {theirs}, but the "
                     f"config names model.clip={cfg.clip!r} ({c}); leave the config's model= "
                     f"argument out to take the checkpoint's{fix}")


def validate(cfg) -> None:
  """Raises ValueError naming the first bad field."""
  for field, choices in CHOICES.items():
    value = cfg
    for part in field.split("."):
      if part not in value:
        raise ValueError(f"model config lacks field {field!r}")
      value = value[part]
    if value not in choices:
      raise ValueError(f"model config field {field}={value!r}: expected one of {choices}")
  try:
    clip_config_of(cfg)
  except (KeyError, ValueError) as e:
    raise ValueError(f"model config field clip={cfg.clip!r} / clip_act: {e}") from e
  h = cfg.head
  d = clip_config_of(cfg).embed_dim
  width = h.width or d
  for field, value in (("head.num_layers", h.num_layers), ("head.num_heads", h.num_heads),
                       ("num_frames", cfg.num_frames),
                       ("head.num_aux_categories", h.num_aux_categories)):
    if int(value) < 1:
      raise ValueError(f"model config field {field}={value}: must be >= 1")
  if int(h.get("video_chunk", 0)) < 0:
    raise ValueError(f"model config field head.video_chunk={h.video_chunk}: must be >= 0 "
                     "(0: the whole batch at once)")
  if int(h.get("attention_chunk", 0)) < 0:
    raise ValueError(f"model config field head.attention_chunk={h.attention_chunk}: must be "
                     ">= 0 (0: every attention in one step)")
  if h.get("affinity_temperature", 0.0) < 0:
    raise ValueError(f"model config field head.affinity_temperature="
                     f"{h.affinity_temperature}: must be >= 0 (0: the CLIP logit scale)")
  if width % h.num_heads:
    raise ValueError(f"model config field head.num_heads={h.num_heads} does not divide the "
                     f"head width {width}")
  if h.classifier == "visual" and h.num_classes < 1:
    raise ValueError("model config field head.num_classes must be set for "
                     "head.classifier='visual'")
