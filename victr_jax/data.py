"""From config to data: record sources, class prompts and auxiliary prompts.

A data set in the config (`config.data.train`, each of `config.evals`) names:
  source      'records' (pattern: comma-separated globs of TFRecord/ArrayRecord shards),
              'tfds' (tfds_name, tfds_split, data_dir) or 'synthetic' (generated into
              synthetic_dir on first use)
  classnames  a shipped list ('kinetics400', 'ucf101', ...), a path, or 'synthetic'
  classes     optional list of class indices to keep (base / novel / zero-shot subsets);
              labels are renumbered into this subset
  shots       optional K videos per class (few-shot, base-to-novel), drawn with shot_seed
  list_file   optional list of the videos to keep (a published few-shot or base-to-novel
              list, instead of our own `shots` draw; see `splits.read_video_list`)
"""
import collections
import os

import numpy as np

from data_pipelines import gpath, records, splits, synthetic
from data_pipelines.layout_io import VIDEO_EXTS
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


def video_key(name: str) -> str:
  """A video's name for matching list lines to record ids: '/'-separated, without a video
  file extension ('brush_hair\\x_0.avi' -> 'brush_hair/x_0')."""
  name = name.strip().replace("\\", "/")
  while name.startswith("./"):
    name = name[2:]
  stem, ext = os.path.splitext(name)
  return stem if ext.lower() in VIDEO_EXTS else name


def listed_records(list_file: str, ids, labels, classes=None) -> list[int]:
  """Indices of the records (video ids, label lists) that `list_file` names, in record order.

  A line matches the record whose id is the line's video without its extension, or else
  the records whose id has that file name ('train/x.mp4', 'Class/x.avi' and 'x' all match
  id 'x'). Raises ValueError naming the file (and lines) when a listed video is not in the
  records, or when the list's labels disagree with the records'. Labels agree when they
  are the records' labels, their positions in `classes`, or a consistent one-to-one
  relabelling of them (UCF101's 1-based trainlist, ViFi-CLIP's base/novel label order);
  the records' labels are the ones used.
  """
  by_key, by_name = collections.defaultdict(list), collections.defaultdict(list)
  for i, vid in enumerate(ids):
    key = video_key(vid)
    by_key[key].append(i)
    by_name[key.rsplit("/", 1)[-1]].append(i)
  keep, missing = set(), []
  to_rec, to_list = {}, {}  # list labels -> (record labels, line, video), and back
  for number, video, want in splits.read_video_list(list_file):
    key = video_key(video)
    found = by_key.get(key)
    if not found:  # by file name alone: must name one record
      found = by_name.get(key.rsplit("/", 1)[-1], [])
      if len(found) > 1:
        raise ValueError(f"{list_file}:{number}: video {video!r} matches {len(found)} records "
                         f"by file name ({', '.join(repr(ids[i]) for i in found[:3])}); list "
                         "it with its directory")
    if not found:
      missing.append(f"line {number} {video!r}")
      continue
    keep.update(found)
    if want is None:
      continue
    want = tuple(sorted(want))
    for i in found:
      got = tuple(sorted(labels[i]))
      prev_got, m, v = to_rec.setdefault(want, (got, number, video))
      prev_want, m2, v2 = to_list.setdefault(got, (want, number, video))
      if prev_got != got or prev_want != want:
        other = (f"line {m} ({v!r}) gives label {list(want)} to a video labelled "
                 f"{list(prev_got)}" if prev_got != got else
                 f"line {m2} ({v2!r}) gives label {list(prev_want)} to a video labelled "
                 f"{list(got)}")
        raise ValueError(f"{list_file}:{number}: video {video!r} is listed with label "
                         f"{list(want)} but labelled {list(got)} in the records, and {other}: "
                         "the list's labels do not match the records'")
  if missing:
    raise ValueError(f"{list_file}: {len(missing)} listed videos are not among the "
                     f"{len(ids)} records of the data set: {', '.join(missing[:5])}"
                     + (" ..." if len(missing) > 5 else ""))
  pos = {int(c): i for i, c in enumerate(classes or ())}
  if to_rec and not (all(w == g[0] for w, g in to_rec.items()) or all(
      w == tuple(sorted(pos.get(l, -1) for l in g[0])) for w, g in to_rec.items())):
    print(f"{list_file}: its labels number the classes differently from the records "
          "(consistently); the records' labels are used", flush=True)
  return sorted(keep)


class SubsetSource:
  """A view of a source: the records whose first label is in `classes` (renumbered to the
  subset's order), optionally only `shots` per class (drawn like splits.few_shot, by video
  id, with `shot_seed`) or only the videos of `list_file` (see `listed_records`). Random
  access like the wrapped source; built by one pass over the records' labels (no frames
  are decoded)."""

  def __init__(self, source, classes=None, shots: int = 0, shot_seed: int = 0,
               list_file: str = ""):
    if shots and list_file:
      raise ValueError(f"shots={shots} and list_file={list_file!r}: the list is the shots")
    self.source = source
    ids, all_labels = [], []
    for i in range(len(source)):
      rec = records.as_record(source[i])
      all_labels.append(list(rec.labels))
      ids.append(rec.video_id or source.where(i))
    labels = [l[0] if l else -1 for l in all_labels]  # the first label decides the class
    keep = list(classes) if classes else sorted({l for l in labels if l >= 0})
    self.remap = {int(c): i for i, c in enumerate(keep)} if classes else None
    index = [i for i, l in enumerate(labels) if l in set(keep)]
    if list_file:
      listed = set(listed_records(list_file, ids, all_labels, classes))
      index = [i for i in index if i in listed]
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
  seed, kind = dcfg.synthetic_seed, dcfg.get("synthetic_kind", "actions")
  if jax.process_index() == 0 and not synthetic.written_as(out, per_class, num_frames, size,
                                                           seed, kind):
    if gpath.exists(os.path.join(out, "manifest.json")):
      print(f"synthetic_actions in {out} were written with other settings or an older "
            "generator: writing them again", flush=True)
    synthetic.write(out, per_class, num_frames=num_frames, size=size, seed=seed, kind=kind)
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
  if dset.get("classes") or dset.get("shots") or dset.get("list_file"):
    src = SubsetSource(src, list(dset.classes), dset.shots, dset.shot_seed,
                       dset.get("list_file", ""))
  return src


def subset_names(dset) -> list[str]:
  names = classnames(dset.classnames)
  return [names[i] for i in dset.classes] if dset.get("classes") else names


def with_classes(dcfg, num_classes: int):
  """A copy of the data config with num_classes set (multi-hot labels need it)."""
  e = dcfg.copy_and_resolve_references()
  e.num_classes = num_classes
  return e
