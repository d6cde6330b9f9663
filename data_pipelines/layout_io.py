"""Reading a dataset layout's files: annotations, class lists and the videos on disk.

Shared by the layout parsers (data_pipelines/layouts.py): the annotation readers
(`read_lines`, `read_csv`, `read_json`) and the class list (`ClassIndex`) raise
`PrepareError` naming the file and line; `VideoIndex` is the one walker that finds videos
below a folder (by relative path, file name or file stem).
"""
import bisect
import csv
import json
import os
import re
from collections.abc import Iterator, Sequence
from typing import Optional

from data_pipelines import gpath, splits

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validate": "val", "validation": "val", "test": "test", "testing": "test"}
VIDEO_EXTS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv",
              ".wmv", ".3gp", ".ogv")


class PrepareError(ValueError):
  """A problem with the inputs (options, annotations), found before any video is decoded."""


def split_of(name: str, where: str) -> str:
  """A split name or alias ('validation', 'validate' ...) -> train|val|test."""
  split = SPLIT_ALIASES.get(name.strip().lower())
  if split is None:
    raise PrepareError(f"{where}: unknown split {name!r} (expected train, val or test)")
  return split


def split_from_filename(path: str) -> str:
  """train / val / test from an annotation file name (e.g. Charades_v1_test.csv)."""
  words = re.split(r"[^a-z]+", os.path.basename(path).lower())
  found = {SPLIT_ALIASES[w] for w in words if w in SPLIT_ALIASES}
  if len(found) != 1:
    raise PrepareError(f"{path}: cannot tell the split from the file name (expected one of "
                       "train, val/validation, test in it)")
  return found.pop()


def _need_file(path: str) -> None:
  if not gpath.isfile(path):
    raise PrepareError(f"{path}: no such file")


def read_lines(path: str) -> list[tuple[int, str]]:
  """(1-based line number, stripped text) of the non-blank lines of a text file."""
  _need_file(path)
  with gpath.open(path, encoding="utf-8-sig") as f:
    return [(i, line.strip()) for i, line in enumerate(f, start=1) if line.strip()]


def read_csv(path: str, columns: Sequence[str], hint: str = "") -> Iterator[tuple[str, dict]]:
  """Yields (`file:line`, row dict) of a CSV file with a header naming `columns` (at least).

  hint: added to the error for a missing column.
  """
  _need_file(path)
  with gpath.open(path, newline="", encoding="utf-8-sig") as f:
    reader = csv.DictReader(f)
    for col in columns:
      if col not in (reader.fieldnames or []):
        raise PrepareError(f"{path}:1: no {col!r} column{hint}")
    for number, row in enumerate(reader, start=2):
      yield f"{path}:{number}", row


def read_json(path: str):
  """A JSON annotation file's contents (PrepareError when missing or not JSON)."""
  _need_file(path)
  with gpath.open(path, encoding="utf-8") as f:
    try:
      return json.load(f)
    except ValueError as e:
      raise PrepareError(f"{path}: not valid JSON ({e})") from None


def is_video(name: str) -> bool:
  return name.lower().endswith(VIDEO_EXTS) and not name.startswith(".")


class ClassIndex:
  """Class names in label order; looks names up by splits.class_key.

  names: the dataset's own classes in its own order. class_file: an optional list (line i
  = label i, or a shipped list's name) that replaces that order and those names; every
  dataset class must be in it.
  """

  def __init__(self, names: Sequence[str], class_file: Optional[str] = None):
    self.names = list(names)
    source = "the dataset's classes"
    if class_file:
      source = splits.classnames_path(class_file)
      _need_file(source)
      try:
        self.names = splits.read_classnames(source)
      except ValueError as e:
        raise PrepareError(str(e)) from None
    self._index = {}
    for i, name in enumerate(self.names):
      key = splits.class_key(name)
      if key in self._index:
        raise PrepareError(f"{source}: classes {self.names[self._index[key]]!r} and {name!r} "
                           "are the same name up to case and punctuation")
      self._index[key] = i
    for name in names:
      if splits.class_key(name) not in self._index:
        raise PrepareError(f"class {name!r} of the annotations is not in --classes {source}")

  def lookup(self, name: str, where: str) -> int:
    """Label index of a class name; PrepareError naming `where` if unknown."""
    index = self._index.get(splits.class_key(name))
    if index is None:
      raise PrepareError(f"{where}: unknown class {name!r}")
    return index


class VideoIndex:
  """The videos below a folder, from one walk (sorted, symlinks followed, done lazily).

  `find(relpath)` for layouts that name a file, `stem(...)` / `stem_prefix(...)` for those
  that name a video id, `paths` for all of them.
  """

  def __init__(self, root: str):
    self.root = root
    self._paths = None

  def _walk(self) -> None:
    """Walks the folder once (the first lookup does it)."""
    if self._paths is not None:
      return
    self._paths, self._by_name, self._by_stem = [], {}, {}
    for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
      dirnames.sort()
      for name in sorted(filter(is_video, filenames)):
        path = os.path.join(dirpath, name)
        self._paths.append(path)
        self._by_name.setdefault(name.lower(), path)
        self._by_stem.setdefault(os.path.splitext(name)[0], path)
    self._stems = sorted(self._by_stem)

  @property
  def paths(self) -> list[str]:
    """Every video below the folder, in walk order (folders and files sorted)."""
    self._walk()
    return self._paths

  def find(self, relpath: str) -> Optional[str]:
    """ROOT/relpath if it exists, else a video of that file name (any case) below ROOT."""
    direct = os.path.join(self.root, relpath)
    if os.path.isfile(direct):
      return direct
    self._walk()
    return self._by_name.get(os.path.basename(relpath).lower())

  def stem(self, stem: str) -> Optional[str]:
    """The video whose file name without extension is `stem` (case-sensitive)."""
    self._walk()
    return self._by_stem.get(stem)

  def stem_prefix(self, prefix: str) -> Optional[str]:
    """The video with the first (sorted) file stem that starts with `prefix`."""
    self._walk()
    i = bisect.bisect_left(self._stems, prefix)
    if i < len(self._stems) and self._stems[i].startswith(prefix):
      return self._by_stem[self._stems[i]]
    return None
