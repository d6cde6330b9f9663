"""From config to data: record sources, class prompts and auxiliary prompts.

A data set in the config (`config.data.train`, each of `config.evals`) names:
  source      'records' (pattern: comma-separated globs of TFRecord/ArrayRecord shards),
              'tfds' (tfds_name, tfds_split, data_dir) or 'synthetic' (generated into
              synthetic_dir on first use)
  classnames  a shipped list ('kinetics400', 'ucf101', ...), a path, or 'synthetic'
  classes     optional list of class indices to keep (base / novel / zero-shot subsets);
              labels are renumbered into this subset
  shots       optional K videos per class (few-shot, base-to-novel), drawn with shot_seed
"""
import os

import numpy as np

from data_pipelines import records, splits, synthetic
from victr_jax import clip


def classnames(spec: str) -> list[str]:
  if spec == "synthetic":
    return synthetic.classes()
  return splits.read_classnames(spec)


def class_tokens(names, template: str) -> np.ndarray:
  """(n, L) int32, one prompt per class, trimmed to the longest prompt."""
  return clip.trim_tokens(clip.tokenize([template.format(n) for n in names]))


def aux_prompts(cfg):
  """(tokens (m, L), categories (m,), category names) or (None, None, []) when off."""
  if not cfg.model.head.aux_text or cfg.aux_vocab == "none":
    return None, None, []
  if cfg.aux_vocab == "synthetic":
    phrases, cats, names = synthetic.aux_vocab()
  else:
    phrases, cats, names = splits.read_aux_vocab(cfg.aux_vocab or None)
  if len(names) > cfg.model.head.num_aux_categories:
    raise ValueError(f"config field aux_vocab has {len(names)} categories {names}, more than "
                     f"model.head.num_aux_categories={cfg.model.head.num_aux_categories}")
  return clip.trim_tokens(clip.tokenize(phrases)), np.asarray(cats, np.int32), names


class SubsetSource:
  """A view of a source: the records whose first label is in `classes` (renumbered to the
  subset's order), optionally only `shots` per class (drawn like splits.few_shot, by video
  id, with `shot_seed`). Random access like the wrapped source; built by one pass over
  the records' labels (no frames are decoded)."""

  def __init__(self, source, classes=None, shots: int = 0, shot_seed: int = 0):
    self.source = source
    labels, ids = [], []
    for i in range(len(source)):
      rec = records.as_record(source[i])
      labels.append(rec.labels[0] if rec.labels else -1)
      ids.append(rec.video_id or source.where(i))
    keep = list(classes) if classes else sorted({l for l in labels if l >= 0})
    self.remap = {int(c): i for i, c in enumerate(keep)} if classes else None
    index = [i for i, l in enumerate(labels) if l in set(keep)]
    if shots:
      chosen = {vid for vid, _ in splits.few_shot([(ids[i], labels[i]) for i in index], shots,
                                                  shot_seed)}
      index = [i for i in index if ids[i] in chosen]
    self.index = index

  def __len__(self):
    return len(self.index)

  def __getitem__(self, i):
    rec = records.as_record(self.source[self.index[i]])
    if self.remap is not None:
      rec.labels = [self.remap[l] for l in rec.labels if l in self.remap]
    return rec

  def where(self, i):
    return self.source.where(self.index[i])


def ensure_synthetic(dcfg, per_class: dict, num_frames=16, size=64) -> str:
  """Writes the synthetic_actions records (process 0) unless the directory already holds
  them as these settings and this generator would write them; returns the directory."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  out = dcfg.synthetic_dir
  seed = dcfg.synthetic_seed
  if jax.process_index() == 0 and not synthetic.written_as(out, per_class, num_frames, size, seed):
    if os.path.exists(os.path.join(out, "manifest.json")):
      print(f"synthetic_actions in {out} were written with other settings or an older "
            "generator: writing them again", flush=True)
    synthetic.write(out, per_class, num_frames=num_frames, size=size, seed=seed)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("synthetic_actions written")
  return out


def open_source(dset, dcfg):
  """The random-access source of one data set config (see module doc)."""
  if dset.source == "records":
    src = records.RecordSource(dset.pattern)
  elif dset.source == "tfds":
    from data_pipelines import tfds_builders  # pylint: disable=g-import-not-at-top
    src = tfds_builders.TFDSSource(dset.tfds_name, dset.tfds_split, dset.data_dir or None)
  elif dset.source == "synthetic":
    out = ensure_synthetic(dcfg, dict(dcfg.synthetic_per_class), dcfg.synthetic_frames,
                           dcfg.synthetic_size)
    src = records.RecordSource(os.path.join(out, f"{dset.split}*"))
  else:
    raise ValueError(f"data source {dset.source!r}: expected records | tfds | synthetic")
  if dset.get("classes") or dset.get("shots"):
    src = SubsetSource(src, list(dset.classes), dset.shots, dset.shot_seed)
  return src


def subset_names(dset) -> list[str]:
  names = classnames(dset.classnames)
  return [names[i] for i in dset.classes] if dset.get("classes") else names
