"""Config building blocks shared by configs/*.py, the checks run before any compile, and
where the shipped config files are (`shipped_config`, `load_config`).

A config is an ml_collections.ConfigDict with fields:
  config_version the layout of this config (config_version.py upgrades older ones)
  model          models.get_config(size) (+ name, head switches); model.num_frames is also
                 data.num_frames (one field, two names); model.clip_act is the activation
                 the model runs ('' the preset's), and the one a checkpoint that does not
                 record its own (an open_clip state dict) is read with: set it for one
  clip_checkpoint             CLIP weights to start from ('' = random init); the CLIP's
                              shape is read from it unless the config names a model
  init_from      a work directory whose trained parameters (towers and head) start this run
  prompt_template             class prompt, '{}' is the class name
  aux_vocab      '' (shipped vocabulary), 'synthetic', 'none', or a directory of <category>.txt
  data           pipeline settings and `train` (a data set, see victr_jax/data.py);
                 data.image_size 0 is the CLIP's (`resolve`), the class count comes from
                 the class names
  evals          name -> data set evaluated (with `group`: sets of one protocol averaged)
  optim          optimiser (victr_jax/optim.py)
  num_train_steps or num_epochs (x train records / batch), log/eval/checkpoint cadence,
  mesh           {data, fsdp, model} sizes (-1: the rest; fsdp > 1: a group size), fsdp_params
"""
import math
import os

import ml_collections

from data_pipelines import gpath, records, synthetic
from victr_jax import models, sharding
from victr_jax.config_version import CONFIG_VERSION

DATA_ROOT = os.environ.get("VICTR_DATA", "/data/victr")
# Peak learning rates of the head and of its gates, absolute (victr_jax/optim.py); chosen
# by experiments/recipe_dynamics.py.
HEAD_LR = 1e-3
GATE_LR = 5e-2


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """'dataset=hmdb51,shots=2' -> ConfigDict with typed defaults (big_vision style). Every
  config also takes evals= (see `select_evals`)."""
  defaults.setdefault("evals", "")
  out = ml_collections.ConfigDict(defaults)
  for kv in (arg or "").split(","):
    if not kv.strip():
      continue
    if "=" not in kv:
      raise ValueError(f"config argument {kv!r}: expected key=value")
    k, v = (s.strip() for s in kv.split("=", 1))
    if k not in defaults:
      raise ValueError(f"config argument {k!r} unknown; known: {sorted(defaults)}")
    out[k] = typed(v, defaults[k])
  return out


def typed(text: str, like):
  """A command-line value as the type of `like` (bools: 1 / true / yes)."""
  return text.lower() in ("1", "true", "yes") if isinstance(like, bool) else type(like)(text)


def set_field(c, path: str, value, from_text: bool = False):
  """Sets dotted field `path` of config c ('model.head.attention'); from_text: `value` is
  text, converted to the field's type."""
  *parents, leaf = path.split(".")
  node = c
  for p in parents:
    node = node[p]
  node[leaf] = typed(value, node[leaf]) if from_text else value


def dataset(source="records", pattern="", classnames="", classes=(), group="", split="",
            tfds_name="", tfds_split="", data_dir="", shots=0, shot_seed=0, list_file=""):
  """A data set (fields: victr_jax/data.py). list_file: a published video list (ours,
  X-CLIP's or ViFi-CLIP's `video LABEL` lines) to keep instead of drawing `shots`."""
  return ml_collections.ConfigDict(dict(
      source=source, pattern=pattern, classnames=classnames, classes=list(classes), group=group,
      split=split, tfds_name=tfds_name, tfds_split=tfds_split, data_dir=data_dir, shots=shots,
      shot_seed=shot_seed, list_file=list_file))


def records_set(path_glob: str, classnames: str, **kw):
  return dataset("records", pattern=path_glob, classnames=classnames, **kw)


# The transfer data sets of few_shot.py and base_to_novel.py: name -> (classnames, train
# glob, test glob) under the data root (victr-prepare's --out folders).
TRANSFER_DATASETS = {
    "hmdb51": ("hmdb51", "hmdb51/split1/train.tfrecord-*", "hmdb51/split1/test.tfrecord-*"),
    "ucf101": ("ucf101", "ucf101/split1/train.tfrecord-*", "ucf101/split1/test.tfrecord-*"),
    "k400": ("kinetics400", "kinetics400/train.tfrecord-*", "kinetics400/val.tfrecord-*"),
    "ssv2": ("ssv2", "ssv2/train.tfrecord-*", "ssv2/val.tfrecord-*"),
}


def config_dir() -> str:
  """The folder of the shipped config files: victr_jax/configs/ in an installed wheel,
  else the repository's configs/ beside the victr_jax package."""
  here = os.path.dirname(os.path.abspath(__file__))
  shipped = os.path.join(here, "configs")
  return shipped if os.path.isdir(shipped) else os.path.join(os.path.dirname(here), "configs")


def shipped_config(path: str) -> str:
  """A config argument 'FILE[:args]' with FILE made a file that exists: FILE itself when it
  exists (relative to the current directory), else the shipped config of that name
  ('configs/few_shot.py', 'few_shot.py' or 'few_shot' -> config_dir()/few_shot.py).
  FileNotFoundError naming FILE when neither exists."""
  file, sep, arg = path.partition(":")
  if os.path.isfile(file):
    return path
  folder, name = os.path.split(os.path.normpath(file))
  if folder in ("", "configs"):
    name = name if name.endswith(".py") else name + ".py"
    found = os.path.join(config_dir(), name)
    if os.path.isfile(found):
      return found + sep + arg
  known = sorted(f for f in os.listdir(config_dir()) if f.endswith(".py") and
                 not f.startswith("_")) if os.path.isdir(config_dir()) else []
  raise FileNotFoundError(f"config file {file!r} not found (neither that path nor a shipped "
                          f"config in {config_dir()}: {', '.join(known) or 'none'})")


def load_config(path: str):
  """`get_config(args)` of the config file 'FILE[:args]' (FILE found by `shipped_config`),
  loaded by its path as ml_collections' config_flags does (no package context)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  file, sep, arg = shipped_config(path).partition(":")
  name = "victr_config_" + os.path.splitext(os.path.basename(file))[0]
  spec = importlib.util.spec_from_file_location(name, file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if sep else module.get_config()


# Paper ablations (Tables 1 and 2) and baselines, as named variants of a config.
VARIANTS = {
    "victr": {},
    "no_aux": {"model.head.aux_text": False},
    "clip_text": {"model.head.text_embedding": "clip"},
    "clip_video": {"model.head.video_embedding": "clip"},
    "no_reweight": {"model.head.affinity_reweighting": False},
    "no_boost": {"model.head.token_boosting": False},
    "joint": {"model.head.attention": "joint"},
    "classifier_text": {"model.head.classifier": "text"},
    "classifier_visual": {"model.head.classifier": "visual"},
    "clip_zero_shot": {"model.name": "clip_zero_shot", "num_train_steps": -1},
    "mean_pool": {"model.name": "mean_pool"},
    # The paper's structure with the fewest of our additions (docs/method.md, section 11):
    # no gated link to CLIP (so no norm matching), g = J softmax(s cos) on raw cosines, the
    # auxiliary term unscaled with gamma starting at 1, a small absolute temporal embedding.
    "paper": {"model.head.gated_residual": False, "model.head.gate_norm_matched": False,
              "model.head.affinity_standardize": False, "model.head.affinity_temperature": 0.0,
              "model.head.aux_logit_scale": False, "model.head.gamma_init": 1.0,
              "model.head.temporal_init_std": 0.02, "model.head.temporal_relative": False},
}


def select_evals(c, spec: str):
  """Keeps the eval sets that `spec` names, in place: '' keeps all, 'none' none, else
  '+'-separated words, each an eval set's name or its group ('ucf101' keeps ucf101_split1-3
  of zero_shot.py, 'hmdb51+k600' two groups). Raises ValueError naming an unknown word."""
  if not spec:
    return c
  words = [] if spec == "none" else [w.strip() for w in spec.split("+") if w.strip()]
  known = {name: e.get("group") or name for name, e in c.evals.items()}
  unknown = [w for w in words if w not in known and w not in known.values()]
  if unknown:
    raise ValueError(f"config argument evals={spec!r}: {unknown} is neither an eval set nor a "
                     f"group; known sets {sorted(known)}, groups {sorted(set(known.values()))}")
  for name, group in known.items():
    if name not in words and group not in words:
      del c.evals[name]
  return c


def trains(config, mode: str = "train_and_eval") -> bool:
  """Whether a run of `config` in `mode` trains (and so opens its train set): not in eval
  mode, and not for a config that trains nothing (num_train_steps < 0: clip_zero_shot)."""
  return mode != "eval" and config.num_train_steps >= 0


def finish(c, a):
  """The end of every transfer config's get_config: the variant, then evals= (and the
  model's CLIP read from clip_checkpoint when the config argument model= was not given)."""
  c.model.clip_from_checkpoint = not a.model
  return select_evals(apply_variant(c, a.variant), a.evals)


def apply_variant(c, variant: str):
  """Sets the fields of a named variant (see VARIANTS) on config c."""
  if variant not in VARIANTS:
    raise ValueError(f"config argument variant={variant!r}: known {sorted(VARIANTS)}")
  for path, value in VARIANTS[variant].items():
    set_field(c, path, value)
  if variant == "classifier_visual":
    c.model.head.num_classes = len(_names_of(c.data.train))
  return c


def _names_of(dset):
  from victr_jax import data  # pylint: disable=g-import-not-at-top
  return data.subset_names(dset)


def base(model_size: str = "B/16") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.config_version = CONFIG_VERSION
  c.model = models.get_config(model_size)
  c.clip_checkpoint = ""
  c.init_from = ""
  c.prompt_template = "a photo of a {}."  # the peers' prompt (victr-classify's default too)
  c.aux_vocab = ""
  c.seed = 0
  c.data = ml_collections.ConfigDict(dict(
      train=dataset(), num_frames=c.model.get_ref("num_frames"), sampling="stride", stride=2,
      image_size=0,  # 0: the CLIP's (resolve)
      train_aug="random_resized_crop",
      crop_scale=(0.4, 1.0), flip=True, multi_label=False, num_classes=0, batch_size=64,
      eval_batch_size=64, num_test_clips=1, num_test_crops=1, seed=0, num_threads=4,
      synthetic_dir="", synthetic_seed=0, synthetic_per_class={"train": 30, "test": 10},
      synthetic_frames=16, synthetic_size=64,
      synthetic_kind="actions",  # 'actions' | 'sequences' (two motions in turn, 2 labels)
      test_resize=0,  # short side before the test crops; 0: image_size
      color_jitter=0.0, grayscale=0.0))  # per-clip probabilities (train); 0: off
  c.evals = ml_collections.ConfigDict()
  c.view_aggregation = ""  # test views combined by metrics.aggregate_views: '' = the mean of
  # softmax (multi-label: sigmoid) probabilities, as the peers do; 'mean_logits', 'max'
  c.optim = ml_collections.ConfigDict(dict(
      lr=8e-6, warmup_steps=500, warmup_epochs=0.0, end_lr_ratio=0.0, b1=0.9, b2=0.98, eps=1e-8,
      weight_decay=0.001, visual_lr_mult=1.0, text_lr_mult=1.0,
      head_lr=HEAD_LR, gate_lr=GATE_LR, freeze=(),
      clip_grad_norm=1.0, grad_accum_steps=1, label_smoothing=0.1, mixup_alpha=0.0,
      cutmix_alpha=0.0, mixup_switch_prob=0.5))  # both alphas > 0: CutMix w.p. switch_prob
  c.num_train_steps = 0
  c.num_epochs = 10.0
  c.train_size = 0  # records in the train set; 0: counted at start
  c.log_every = 50
  c.eval_every = 0
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, model=1, fsdp_params=True))
  return c


def peer_recipe(c) -> ml_collections.ConfigDict:
  """The peers' (X-CLIP, ViFi-CLIP) data and augmentation recipe on config c, in place
  (the table in configs/README.md): one frame per segment, test short side 256/224 of the
  crop then a centre crop, colour jitter 0.8, greyscale 0.2, label smoothing 0.1 with
  mixup 0.8 / CutMix 1.0 (switch 0.5), 5 warm-up epochs and a cosine to lr / 100 (the
  peers' timm CosineLRScheduler, lr_min = LR / 100), "a photo of a {}.", bfloat16 compute."""
  d = c.data
  d.sampling = "segments"
  d.test_resize = -1  # the peers' 256 / 224 of the crop (resolve)
  d.color_jitter, d.grayscale = 0.8, 0.2
  o = c.optim
  o.warmup_epochs, o.end_lr_ratio = 5.0, 0.01  # 5 warm-up epochs, cosine to lr / 100
  o.label_smoothing, o.mixup_alpha, o.cutmix_alpha, o.mixup_switch_prob = 0.1, 0.8, 1.0, 0.5
  c.prompt_template = "a photo of a {}."
  c.model.dtype = "bfloat16"  # params stay float32
  return c


def adopt_clip(config, ccfg, path: str):
  """`config` with the CLIP of checkpoint `path` (its CLIPConfig `ccfg`) when the config
  did not name a model (`model.clip_from_checkpoint`): model.clip / clip_act / the head's
  default heads (models.adopt_clip); the image size follows (`resolve`). A config that
  names a model is returned unchanged (the trainer's check then names both when they
  differ)."""
  model = models.adopt_clip(config.model, ccfg, path)
  if model is config.model:
    return config
  c = config.copy_and_resolve_references()
  c.model = model
  print(f"model.clip={model.clip!r} (clip_act {model.clip_act or 'as the preset'}), read from "
        f"{path}", flush=True)
  return c


def resolve(config) -> ml_collections.ConfigDict:
  """A copy of `config` with its derived fields filled in: data.image_size 0 -> the
  CLIP's, data.test_resize -1 -> 256 / 224 of it (the peers' short side). What the
  trainer runs and writes to config.json."""
  c = config.copy_and_resolve_references()
  size = models.clip_config_of(c.model).image_size
  d = c.data
  if not d.image_size:
    d.image_size = size
  if d.test_resize == -1:
    d.test_resize = round(d.image_size * 256 / 224)
  return c


def optim_config(config, num_steps: int) -> ml_collections.ConfigDict:
  """config.optim with warmup_steps resolved: with optim.warmup_epochs > 0 the warm-up is
  that share of num_epochs (the peers count it in epochs), else optim.warmup_steps."""
  o = config.optim.copy_and_resolve_references()
  if o.get("warmup_epochs", 0.0) > 0:
    if config.num_epochs <= 0:
      raise ValueError("config field optim.warmup_epochs needs num_epochs > 0")
    o.warmup_steps = int(round(num_steps * o.warmup_epochs / config.num_epochs))
  return o


def total_steps(config, train_records: int | None = None) -> int:
  """num_train_steps if > 0; none if < 0 (evaluation only); else epochs x records / batch."""
  if config.num_train_steps < 0:
    return 0
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  n = config.train_size or train_records
  if not n:
    raise ValueError("config fields num_train_steps / train_size: set num_train_steps, or "
                     "num_epochs with a train set whose size is known")
  return max(1, math.ceil(config.num_epochs * n / config.data.batch_size))


def _check_keys(cfg, ref, prefix=""):
  for k in cfg.keys():
    if prefix in ("evals.",) or (prefix == "data.synthetic_per_class."):
      continue
    if k not in ref:
      raise ValueError(f"config field {prefix}{k} is unknown; known: {sorted(ref.keys())}")
    if isinstance(cfg[k], ml_collections.ConfigDict) and isinstance(ref[k], ml_collections.ConfigDict):
      _check_keys(cfg[k], ref[k], f"{prefix}{k}.")


def _check_dataset(name, d):
  ref = dataset()
  for k in d.keys():
    if k not in ref:
      raise ValueError(f"config field {name}.{k} is unknown; known: {sorted(ref.keys())}")
  if d.source == "records":
    if not d.pattern:
      raise ValueError(f"config field {name}.pattern is empty")
    try:
      records.expand_pattern(d.pattern)
    except FileNotFoundError as e:
      raise ValueError(f"config field {name}.pattern: {e} (prepare the data with victr-prepare, "
                       "see configs/README.md)") from e
  elif d.source == "tfds":
    if not d.tfds_name:
      raise ValueError(f"config field {name}.tfds_name is empty")
    if d.data_dir and not gpath.isdir(d.data_dir):
      raise ValueError(f"config field {name}.data_dir: {d.data_dir} is not a directory")
  elif d.source == "synthetic":
    if not d.split:
      raise ValueError(f"config field {name}.split is empty (train | test)")
  else:
    raise ValueError(f"config field {name}.source={d.source!r}: expected records | tfds | synthetic")
  if not d.classnames:
    raise ValueError(f"config field {name}.classnames is empty")
  from victr_jax import data  # pylint: disable=g-import-not-at-top
  try:
    names = data.classnames(d.classnames)
  except (OSError, ValueError, KeyError) as e:
    raise ValueError(f"config field {name}.classnames={d.classnames!r}: {e}") from e
  bad = [i for i in d.classes if not 0 <= i < len(names)]
  if bad:
    raise ValueError(f"config field {name}.classes has indices {bad[:5]} outside the "
                     f"{len(names)} classes of {d.classnames}")
  if d.get("list_file"):
    if not gpath.isfile(d.list_file):
      raise ValueError(f"config field {name}.list_file: {d.list_file} does not exist")
    if d.shots:
      raise ValueError(f"config field {name}.shots={d.shots} with {name}.list_file: the list "
                       "already chooses the videos (set shots=0)")


def check_config(config, mode: str = "train_and_eval", num_devices: int | None = None) -> None:
  """Raises ValueError naming the field at fault (before anything is compiled)."""
  import jax  # pylint: disable=g-import-not-at-top
  num_devices = num_devices or jax.device_count()
  if mode not in ("train", "eval", "train_and_eval", "compile"):
    raise ValueError(f"mode={mode!r}: expected train | eval | train_and_eval | compile")
  _check_keys(config, base())
  models.validate(config.model)
  shape = sharding.mesh_shape(config.mesh, num_devices)
  batch_devices = shape[0] * shape[1]
  d = config.data
  # Evaluation pads its batch to fit (pipeline.padded_eval_batch); training cannot (the gradient would
  # change), so batch_size must divide.
  if d.batch_size % batch_devices or d.batch_size % jax.process_count():
    raise ValueError(f"config field data.batch_size={d.batch_size} is not divisible by the "
                     f"{batch_devices} data x fsdp devices and {jax.process_count()} processes")
  if d.eval_batch_size < 1:
    raise ValueError(f"config field data.eval_batch_size={d.eval_batch_size} must be >= 1")
  clip_cfg = models.clip_config_of(config.model)
  if d.image_size % clip_cfg.patch_size:
    raise ValueError(f"config field data.image_size={d.image_size} is not a multiple of the "
                     f"patch size {clip_cfg.patch_size} (0: the CLIP's {clip_cfg.image_size})")
  d = resolve(config).data
  for field, choices in (("sampling", ("stride", "segments")),
                         ("train_aug", ("random_resized_crop", "scale_jitter", "none")),
                         ("synthetic_kind", synthetic.KINDS)):
    if d[field] not in choices:
      raise ValueError(f"config field data.{field}={d[field]!r}: expected one of {choices}")
  if d.test_resize and d.test_resize < d.image_size:
    raise ValueError(f"config field data.test_resize={d.test_resize} is below data.image_size="
                     f"{d.image_size} (0: resize the short side to image_size)")
  o = config.optim
  for field, value in (("data.color_jitter", d.color_jitter), ("data.grayscale", d.grayscale),
                       ("optim.mixup_switch_prob", o.mixup_switch_prob),
                       ("optim.label_smoothing", o.label_smoothing)):
    if not 0.0 <= value <= 1.0:
      raise ValueError(f"config field {field}={value}: expected a probability in [0, 1]")
  for field in ("mixup_alpha", "cutmix_alpha"):
    if o[field] < 0:
      raise ValueError(f"config field optim.{field}={o[field]}: expected >= 0 (0: off)")
  if "{}" not in config.prompt_template:
    raise ValueError("config field prompt_template has no '{}' for the class name")
  from victr_jax import metrics  # pylint: disable=g-import-not-at-top
  views = ("",) + metrics.VIEW_AGGREGATIONS
  if config.get("view_aggregation", "") not in views:
    raise ValueError(f"config field view_aggregation={config.view_aggregation!r}: expected "
                     f"one of {views} ('': mean of softmax, or sigmoid multi-label, probabilities)")
  if mode == "compile":  # shapes only: no weights, no data
    return
  if config.clip_checkpoint and not gpath.exists(config.clip_checkpoint):
    raise ValueError(f"config field clip_checkpoint: {config.clip_checkpoint} does not exist")
  if config.get("init_from") and not gpath.exists(os.path.join(config.init_from,
                                                               "config.json")):
    raise ValueError(f"config field init_from: {config.init_from} is not a work directory "
                     "(no config.json)")
  if trains(config, mode):
    _check_dataset("data.train", d.train)
  if mode != "train":
    for name, e in config.evals.items():
      _check_dataset(f"evals.{name}", e)
  if any(s == "synthetic" for s in [d.train.source] + [e.source for e in config.evals.values()]):
    if not d.synthetic_dir:
      raise ValueError("config field data.synthetic_dir is empty (where synthetic_actions "
                       "records are written)")
