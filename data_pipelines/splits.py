"""Protocol splits: video lists, class names, few-shot, zero-shot and base-to-novel sets.

Video lists use the peers' (X-CLIP, ViFi-CLIP) text format: one video per line,
`relative/path/video.mp4 LABEL`, several labels comma-separated for multi-label data
(`path 3,17`); blank lines are skipped, and every other line is a video (`#` starts no
comment: HMDB51 has videos whose names begin with it). An item is a
`(path, labels)` pair (a `ListEntry`) with `labels` a list of class indices.

Class names: `read_classnames` reads the shipped lists (CLASSNAMES_DIR) or a file (line i
names label i); `class_key` is the one key for matching names across lists and datasets
(victr-prepare's --classes matching too).

Protocols (the peers', as X-CLIP and ViFi-CLIP run them; docs/method.md, "Evaluation
protocols", has them with the configs that run them):
- few-shot: K videos per class from split-1 train (`few_shot`).
- zero-shot Kinetics-600: the 220 classes not in Kinetics-400
  (`kinetics600_novel_classes`), three draws of 160 (`kinetics600_zero_shot_splits`, or
  the peers' fixed draws, `kinetics600_peer_zero_shot_splits`).
- base-to-novel: classes halved into base / novel (`base_novel_classes`), 16 shots per base
  class for each of three seeds (`base_to_novel`), reported with the harmonic mean
  (`victr_jax.metrics.harmonic_mean`).

Also the prompt templates and the auxiliary vocabulary (`read_templates`, `read_aux_vocab`).
"""
import collections
import os
import re
import warnings
from collections.abc import Iterable, Sequence

import numpy as np

from data_pipelines import fileio, gpath

_HERE = os.path.dirname(os.path.abspath(__file__))
CLASSNAMES_DIR = os.path.join(_HERE, "classnames")
TEMPLATES_PATH = os.path.join(_HERE, "prompts", "templates.txt")
AUX_VOCAB_DIR = os.path.join(_HERE, "prompts", "aux_vocab")
DATASETS = ("kinetics400", "kinetics600", "ucf101", "hmdb51", "ssv2")

ListEntry = tuple[str, list[int]]  # (video path, labels): one line of a video list


def class_key(name: str) -> str:
  """The key class names are matched by: lower-case letters and digits only.

  Case, spaces, punctuation and parentheses do not count, so UCF101's folder
  'ApplyEyeMakeup' matches 'Apply Eye Makeup' and 'passing American football (in game)'
  matches 'passing american football in game'.
  """
  return re.sub(r"[^0-9a-z]", "", name.lower())


# Kinetics-400 classes that Kinetics-600 renamed (class_key of the K400 name -> class_key of
# the K600 name). Matching by class_key alone leaves 231 K600 classes "not in K400"; these 11
# renames (from the K600 release notes: e.g. "dying hair" became "dyeing hair", "hugging"
# became "hugging (not baby)") bring it to the 220 novel classes of the peers' zero-shot
# protocol (ER-ZSAR's split, used by X-CLIP / ViFi-CLIP).
K400_TO_K600_RENAMES = {class_key(k400): class_key(k600) for k400, k600 in {
    "baby waking up": "waking up",
    "balloon blowing": "inflating balloons",
    "changing wheel": "changing wheel not on bike",
    "cooking sausages": "cooking sausages not on barbeque",
    "dying hair": "dyeing hair",
    "garbage collecting": "person collecting garbage",
    "hugging": "hugging not baby",
    "making bed": "making the bed",
    "opening bottle": "opening bottle not wine",
    "throwing ball": "throwing ball not baseball or american football",
    "tying tie": "tying necktie",
}.items()}

# The peers' fixed data, stored as bit masks (hex; bit i set = element i chosen) to keep it
# short. Decoded and spot-checked by name in tests/test_splits.py.
# ViFi-CLIP `labels/{kinetics_400,hmdb_51,ucf_101,ssv2_174}_base_labels.csv`: base classes
# as bits over the shipped class lists (novel = the rest). The peers' halves are not index
# halves (HMDB51's base is the second half, the others are scattered).
_PEER_BASE_MASKS = {
    "kinetics400": (400, "c6e85c2ab150741b4cee7a1f6c5a6d6a2165fffd0f6bbe7372a330d252d683b8d874f8"
                         "18398a21d9e87019870f34a94d5863"),
    "hmdb51": (51, "7fffffe000000"),
    "ucf101": (101, "c4a196a497c818a5f86eb8fed"),
    "ssv2": (174, "8d12bff90c6af052dfc60ce071c0982ef31f81fde61"),
}
# ViFi-CLIP `labels/ZS_split{1,2,3}_K600.csv` (ER-ZSAR's draws): bits over the 220 novel
# classes, in Kinetics-600 index order.
_PEER_K600_SPLIT_MASKS = (
    "ed71edaff5b6b5f7dffeb6efefdf3fd2f1df6afe9fbf967637b7fd3",
    "39cfb77fef977bf9f9bbff77ffc8d78fff6dd7733feffad9d9e57b1",
    "7f5bf9ef8fd1fa95bfdfa3276d5ff4dffff7df1ee967bf73ff79dfe",
)


# ---------------------------------------------------------------------------------------
# Text files.


def _content_lines(path: str) -> Iterable[tuple[int, str]]:
  """Yields (1-based line number, stripped text), skipping blank and `#` comment lines
  (templates and vocabularies; never video lists, where `#` can begin a file name)."""
  with gpath.open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      line = line.strip()
      if line and not line.startswith("#"):
        yield number, line


def _as_labels(labels: int | Iterable[int]) -> list[int]:
  """One label or several, as a list of non-negative ints."""
  labels = [labels] if isinstance(labels, (int, np.integer)) else list(labels)
  if not labels or any(int(l) != l or l < 0 for l in labels):
    raise ValueError(f"labels must be one or more non-negative ints, got {labels!r}")
  return [int(l) for l in labels]


def read_video_list(path: str, labels: bool = False) -> list[tuple[int, str, list[int] | None]]:
  """A video list as (line number, video, labels or None), one video a line.

  Every non-blank line is a video: `#` starts no comment (HMDB51 has videos named
  `#20_Rhythm_clap_u_nm_np1_fr_goo_2.avi`). Accepted lines:
    `video LABEL[,LABEL...]`  ours (`write_list`), X-CLIP's and ViFi-CLIP's few-shot and
                              base-to-novel lists (`brush_hair/x_0.avi 0`,
                              `train/c1O_FxuKCI0_000110_000120.mp4 0`, `82469.webm 0`) and
                              UCF101's trainlist0N.txt (1-based labels)
    `video`                   no label (UCF101's testlist0N.txt); an error with labels=True
  The label is the last field when it is comma-separated integers, so a video's name may
  contain spaces. HMDB51's `<class>_test_splitN.txt` (`video.avi 0|1|2`: split tags, not
  labels) are victr-prepare's input, not such a list. Raises ValueError naming the file
  and line for a malformed line, and for a list with no video.
  """
  out = []
  with gpath.open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      line = line.strip()
      if not line:
        continue
      fields = line.rsplit(None, 1)
      if len(fields) == 2 and re.fullmatch(r"\d+(,\d+)*", fields[1]):
        out.append((number, fields[0], [int(l) for l in fields[1].split(",")]))
      elif labels:
        raise ValueError(f"{path}:{number}: malformed line {line!r} (expected 'video LABEL' "
                         "with LABEL one or more comma-separated non-negative integers)")
      else:
        out.append((number, line, None))
  if not out:
    raise ValueError(f"{path}: no videos listed")
  return out


def read_list(path: str) -> list[ListEntry]:
  """A `video LABEL[,LABEL...]` list as (video, labels) items (`read_video_list` with
  labels required)."""
  return [(video, labels) for _, video, labels in read_video_list(path, labels=True)]


def write_list(path: str, items: Iterable[tuple[str, int | Iterable[int]]]) -> None:
  """Writes (video, labels) items in `read_list`'s format, atomically."""
  lines = []
  for video, labels in items:
    if not video or video != video.strip() or "\n" in video:
      raise ValueError(f"video path {video!r} cannot be written to a list file")
    lines.append(f"{video} {','.join(map(str, _as_labels(labels)))}")
  fileio.atomic_write(path, "".join(line + "\n" for line in lines))


def classnames_path(name_or_path: str) -> str:
  """The file of a class list: a shipped list by dataset name (DATASETS), else the path."""
  if name_or_path in DATASETS:
    return os.path.join(CLASSNAMES_DIR, name_or_path + ".txt")
  return name_or_path


def read_classnames(name_or_path: str) -> list[str]:
  """Class names in label index order: a dataset in DATASETS, or a one-name-a-line file.

  Blank lines at the end are ignored; a blank line before a name is an error (it would
  shift the labels of all the names after it).
  """
  path = classnames_path(name_or_path)
  with gpath.open(path, encoding="utf-8-sig") as f:
    names = [line.strip() for line in f.read().splitlines()]
  while names and not names[-1]:
    names.pop()
  if not names or not all(names):
    raise ValueError(f"{path}: empty, or a blank line (line i must name label i)")
  return names


def write_classnames(path: str, names: Sequence[str]) -> None:
  """Writes class names one a line (line i = label i), atomically."""
  if not names or any(not n.strip() or "\n" in n for n in names):
    raise ValueError("class names must be non-empty single lines")
  fileio.atomic_write(path, "".join(n.strip() + "\n" for n in names))


# ---------------------------------------------------------------------------------------
# Few-shot.


def _single_label(item: ListEntry) -> int:
  labels = _as_labels(item[1])
  if len(labels) != 1:
    raise ValueError(f"few-shot sampling needs single-label items, got {item!r}")
  return labels[0]


def few_shot(items: Iterable[tuple[str, int | Iterable[int]]], shots: int,
             seed: int) -> list[ListEntry]:
  """K = `shots` videos per class, drawn without replacement, reproducibly.

  Each class draws from its videos sorted by path with its own numpy Generator, seeded by
  (seed, label): the result does not depend on the input order, nor on which other classes
  are present. Classes with fewer than K videos keep them all, with a warning listing them.
  Returns items sorted by (label, path).
  """
  if shots < 1:
    raise ValueError(f"shots must be >= 1, got {shots}")
  by_class = collections.defaultdict(list)
  for item in items:
    by_class[_single_label(item)].append(item[0])
  chosen, short = [], []
  for label in sorted(by_class):
    paths = sorted(by_class[label])
    if len(paths) < shots:
      short.append(label)
      picked = paths
    else:
      rng = np.random.default_rng([seed, label])
      picked = [paths[i] for i in rng.choice(len(paths), size=shots, replace=False)]
    chosen.extend((p, [label]) for p in sorted(picked))
  if short:
    warnings.warn(f"{len(short)} classes have fewer than {shots} videos, kept all: {short}")
  return chosen


# ---------------------------------------------------------------------------------------
# Zero-shot on Kinetics-600.


def _decode_mask(hex_mask: str, size: int) -> list[int]:
  """Indices of the set bits of a hex bit mask over `size` elements."""
  bits = int(hex_mask, 16)
  if bits >> size:
    raise ValueError(f"bit mask has bits beyond {size}")
  return [i for i in range(size) if bits >> i & 1]


def kinetics600_novel_classes(k400_names: Sequence[str] | None = None,
                              k600_names: Sequence[str] | None = None) -> list[int]:
  """Kinetics-600 indices of the classes not in Kinetics-400 (220 with the shipped lists).

  Names are matched by `class_key` after the K400 -> K600 renames of K400_TO_K600_RENAMES.
  Defaults: the shipped class lists.
  """
  k400_names = read_classnames("kinetics400") if k400_names is None else k400_names
  k600_names = read_classnames("kinetics600") if k600_names is None else k600_names
  k400 = {K400_TO_K600_RENAMES.get(k, k) for k in map(class_key, k400_names)}
  return [i for i, n in enumerate(k600_names) if class_key(n) not in k400]


def kinetics600_zero_shot_splits(num_splits: int = 3, size: int = 160,
                                 seed: int = 0) -> list[list[int]]:
  """`num_splits` draws of `size` novel K600 classes; draw i uses seed + i. Sorted indices.

  Our own draws; for numbers comparable with the peers' use
  `kinetics600_peer_zero_shot_splits`.
  """
  novel = np.asarray(kinetics600_novel_classes())
  draws = (np.random.default_rng(seed + i).choice(novel, size, replace=False)
           for i in range(num_splits))
  return [sorted(int(c) for c in draw) for draw in draws]


def kinetics600_peer_zero_shot_splits() -> list[list[int]]:
  """The peers' three fixed draws of 160 novel classes (ER-ZSAR's, via ViFi-CLIP): K600 indices."""
  novel = kinetics600_novel_classes()
  return [[novel[i] for i in _decode_mask(m, len(novel))] for m in _PEER_K600_SPLIT_MASKS]


# ---------------------------------------------------------------------------------------
# Base-to-novel.


def base_novel_classes(num_classes: int,
                       dataset: str | None = None) -> tuple[list[int], list[int]]:
  """(base, novel) class indices.

  With `dataset` (kinetics400, hmdb51, ucf101 or ssv2): the peers' (ViFi-CLIP) halves,
  200/200, 26/25, 51/50 and 87/87. Without: base = the first ceil(n / 2) indices, novel =
  the rest, for datasets the peers do not split.
  """
  if dataset is None:
    half = (num_classes + 1) // 2
    return list(range(half)), list(range(half, num_classes))
  if dataset not in _PEER_BASE_MASKS:
    raise ValueError(f"no base/novel split for {dataset!r}; known: {sorted(_PEER_BASE_MASKS)}")
  size, mask = _PEER_BASE_MASKS[dataset]
  if num_classes != size:
    raise ValueError(f"{dataset} has {size} classes, got num_classes={num_classes}")
  base = _decode_mask(mask, size)
  return base, sorted(set(range(size)) - set(base))


def select_classes(items: Iterable[tuple[str, int | Iterable[int]]], classes: Sequence[int],
                   relabel: bool = False) -> list[ListEntry]:
  """The items whose labels all lie in `classes`, e.g. a test list's base or novel part.

  With relabel, labels become positions in `classes` (for a classifier over that subset).
  """
  position = {c: i for i, c in enumerate(classes)}
  chosen = []
  for path, labels in items:
    labels = _as_labels(labels)
    if all(l in position for l in labels):
      chosen.append((path, [position[l] for l in labels] if relabel else labels))
  return chosen


def base_to_novel(items: Iterable[tuple[str, int | Iterable[int]]], num_classes: int,
                  shots: int = 16, seed: int = 1,
                  dataset: str | None = None) -> list[ListEntry]:
  """Base-to-novel training items: `shots` videos per base class (seeds 1, 2, 3).

  Evaluate on `select_classes(test, base)` and `select_classes(test, novel)`, then
  `victr_jax.metrics.harmonic_mean`. Labels keep their full-dataset indices.
  """
  base, _ = base_novel_classes(num_classes, dataset)
  return few_shot(select_classes(items, base), shots, seed)


# ---------------------------------------------------------------------------------------
# Prompt templates and auxiliary vocabulary.


def read_templates(path: str | None = None) -> list[str]:
  """Prompt templates, one a line, each with exactly one `{}` for the class name."""
  path = TEMPLATES_PATH if path is None else path
  templates = []
  for number, line in _content_lines(path):
    if line.count("{") != 1 or line.count("}") != 1 or "{}" not in line:
      raise ValueError(f"{path}:{number}: template needs exactly one '{{}}': {line!r}")
    templates.append(line)
  if not templates:
    raise ValueError(f"{path}: no templates")
  return templates


def read_aux_vocab(directory: str | None = None) -> tuple[list[str], np.ndarray, list[str]]:
  """The auxiliary vocabulary: every `*.txt` in `directory`, one phrase a line.

  Returns (phrases, categories, category_names): categories[i] (int32) indexes
  category_names, the file stems in sorted order.
  """
  directory = AUX_VOCAB_DIR if directory is None else directory
  files = sorted(f for f in gpath.listdir(directory) if f.endswith(".txt"))
  if not files:
    raise ValueError(f"{directory}: no *.txt vocabulary files")
  phrases, categories = [], []
  for category, name in enumerate(files):
    path = os.path.join(directory, name)
    words = [line for _, line in _content_lines(path)]
    if not words:
      raise ValueError(f"{path}: no phrases")
    phrases.extend(words)
    categories.extend([category] * len(words))
  return phrases, np.asarray(categories, np.int32), [os.path.splitext(f)[0] for f in files]
