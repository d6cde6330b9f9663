"""victr-prepare: raw videos -> sharded DMVR records (TFRecord or ArrayRecord).

  victr-prepare --layout LAYOUT --src DIR [layout options] --out OUT_DIR [--split all]
      [--short_side 256] [--fps 0] [--jpeg_quality 90] [--num_shards 0] [--format tfrecord]
      [--workers 2] [--max_frames 0]

Layouts (each parsed into items per split plus the class list, before any decoding):
  generic   SRC/<split>/<class>/<video>; classes: sorted class folder names of all splits.
  ucf101    SRC/<Class>/v_<Class>_gXX_cYY.avi (or flat); --annotations DIR with classInd.txt,
            trainlist0N.txt (`Class/v_...avi 1`, 1-based) and testlist0N.txt; --split_id N.
  hmdb51    SRC/<class>/<video>.avi; --annotations DIR with <class>_test_splitN.txt
            (`video.avi 1|2|0`: train, test, unused); classes sorted by name; --split_id N.
  kinetics  --csv FILE (repeatable): label,youtube_id,time_start,time_end,split[,is_cc];
            videos anywhere below SRC as <youtube_id>_<start:06d>_<end:06d>.<ext> or
            <youtube_id>*.<ext>; missing videos are listed in the manifest; --trim cuts
            files named just <youtube_id>.<ext> to [time_start, time_end].
  charades  --csv Charades_v1_train.csv / Charades_v1_test.csv (id, actions =
            `c092 11.90 21.20;c147 0.00 12.60`); SRC/<id>.mp4; multi-label; the action
            spans go to the manifest; --classes Charades_v1_classes.txt (`c000 name`).
  ssv2      --labels something-something-v2-labels.json, --json (repeatable)
            something-something-v2-{train,validation}.json; SRC/<id>.webm.

--classes FILE (or a bundled list name: kinetics400, ucf101, hmdb51, ...) fixes the class
order and names: line i names label i; the dataset's class names are matched to it
ignoring case, spaces and punctuation (`ApplyEyeMakeup` = `Apply Eye Makeup`).

Output in OUT_DIR: `<split>.tfrecord-0000i-of-0000N` shards, classes.txt, manifest.json and
sidecars/<shard>.json (one per finished shard). Item i of a split's sorted item list goes to
shard i % N, so reruns make the same shards; a rerun skips shards that are in place with a
matching sidecar (resume after a kill). Undecodable videos are listed, never fatal;
annotation problems (unknown labels, malformed lines) stop the run before any work.
"""
import argparse
import concurrent.futures
import csv
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import queue
import re
import sys
from typing import Callable, Optional

from data_pipelines import records

LAYOUTS = ("generic", "ucf101", "hmdb51", "kinetics", "charades", "ssv2")
SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validate": "val", "validation": "val", "test": "test", "testing": "test"}
VIDEO_EXTS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv",
              ".wmv", ".3gp", ".ogv")
CHARADES_NUM_CLASSES = 157
SIDECAR_DIR = "sidecars"
CLASSNAMES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "classnames")


class PrepareError(ValueError):
  """A problem with the inputs (options, annotations), found before any video is decoded."""


@dataclasses.dataclass
class Item:
  """One video to convert."""
  path: str
  labels: list[int]
  texts: list[str]
  video_id: str
  start_s: Optional[float] = None  # decode window; None: the whole file
  end_s: Optional[float] = None
  start_us: Optional[int] = None  # clip times stored in the record
  end_us: Optional[int] = None


@dataclasses.dataclass
class Dataset:
  """A parsed layout: class names, items per split, missing videos, extra manifest data."""
  classes: list[str]
  splits: dict[str, list[Item]]
  missing: dict[str, list[dict]] = dataclasses.field(default_factory=dict)
  extra: dict[str, dict] = dataclasses.field(default_factory=dict)


# ----------------------------------------------------------------------------- helpers


def norm_name(name: str) -> str:
  """Class name key for matching: lower case letters and digits only."""
  return re.sub(r"[^0-9a-z]", "", name.lower())


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


def read_lines(path: str) -> list[tuple[int, str]]:
  """(1-based line number, stripped text) of the non-blank lines of a text file."""
  if not os.path.isfile(path):
    raise PrepareError(f"{path}: no such file")
  with open(path, encoding="utf-8-sig") as f:
    return [(i, line.strip()) for i, line in enumerate(f, start=1) if line.strip()]


def class_file_path(name: str) -> str:
  """--classes value -> a file: a path, or the name of a bundled list (e.g. 'hmdb51')."""
  bundled = os.path.join(CLASSNAMES_DIR, name + ".txt")
  if not os.path.isfile(name) and os.path.isfile(bundled):
    return bundled
  return name


def is_video(name: str) -> bool:
  return name.lower().endswith(VIDEO_EXTS) and not name.startswith(".")


class ClassIndex:
  """Class names in label order; looks names up ignoring case, spaces and punctuation.

  names: the dataset's own classes in its own order. class_file: an optional list (line i
  = label i) that replaces that order and those names; every dataset class must be in it.
  """

  def __init__(self, names: list[str], class_file: Optional[str] = None):
    self.names = list(names)
    source = "the dataset's classes"
    if class_file:
      source = class_file_path(class_file)
      self.names = [line for _, line in read_lines(source)]
    self._index = {}
    for i, name in enumerate(self.names):
      key = norm_name(name)
      if key in self._index:
        raise PrepareError(f"{source}: classes {self.names[self._index[key]]!r} and {name!r} "
                           "are the same name up to case and punctuation")
      self._index[key] = i
    for name in names:
      if norm_name(name) not in self._index:
        raise PrepareError(f"class {name!r} of the annotations is not in --classes {source}")

  def lookup(self, name: str, where: str) -> int:
    """Label index of a class name; PrepareError naming `where` if unknown."""
    index = self._index.get(norm_name(name))
    if index is None:
      raise PrepareError(f"{where}: unknown class {name!r}")
    return index


class FileIndex:
  """Finds videos under a root: a direct path first, else by file name (one walk, lazy)."""

  def __init__(self, root: str):
    self.root, self._by_name = root, None

  def _build(self):
    self._by_name = {}
    for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
      dirnames.sort()
      for name in sorted(filenames):
        self._by_name.setdefault(name.lower(), os.path.join(dirpath, name))

  def find(self, relpath: str) -> Optional[str]:
    """SRC/relpath if it exists, else a file of the same name anywhere below SRC."""
    direct = os.path.join(self.root, relpath)
    if os.path.isfile(direct):
      return direct
    if self._by_name is None:
      self._build()
    return self._by_name.get(os.path.basename(relpath).lower())


def add_item(ds: Dataset, split: str, item: Item, found: Optional[str], expected: str,
             where: str):
  """Adds an item to a split, or lists it as missing when its video was not found."""
  if found is None:
    ds.missing.setdefault(split, []).append(
        {"video_id": item.video_id, "path": expected, "where": where})
    return
  item.path = found
  ds.splits.setdefault(split, []).append(item)


def make_item(ids: ClassIndex, labels: list[int], video_id: str, **kw) -> Item:
  """An item with label texts from the class list."""
  return Item("", labels, [ids.names[i] for i in labels], video_id, **kw)


# ----------------------------------------------------------------------------- layouts


def parse_generic(args) -> Dataset:
  """SRC/<split>/<class>/<video>; classes: sorted class folders across all splits."""
  split_dirs = {}
  for name in sorted(os.listdir(args.src)):
    if os.path.isdir(os.path.join(args.src, name)) and name.lower() in SPLIT_ALIASES:
      split_dirs[split_of(name, args.src)] = os.path.join(args.src, name)
  if not split_dirs:
    raise PrepareError(f"{args.src}: no split folders (train, val, test)")
  names = sorted({c for d in split_dirs.values() for c in os.listdir(d)
                  if os.path.isdir(os.path.join(d, c))})
  ids = ClassIndex(names, args.classes)
  ds = Dataset(ids.names, {s: [] for s in split_dirs})
  for split, sdir in split_dirs.items():
    for cname in sorted(os.listdir(sdir)):
      cdir = os.path.join(sdir, cname)
      if not os.path.isdir(cdir):
        continue
      label = ids.lookup(cname, cdir)
      for root, dirnames, files in os.walk(cdir, followlinks=True):
        dirnames.sort()
        for f in sorted(filter(is_video, files)):
          rel = os.path.relpath(os.path.join(root, f), sdir)
          item = make_item(ids, [label], os.path.splitext(rel)[0].replace(os.sep, "/"))
          add_item(ds, split, item, os.path.join(root, f), rel, cdir)
  return ds


def _ucf_classes(path: str) -> list[str]:
  """classInd.txt (`1 ApplyEyeMakeup`, 1-based, in order) -> class names."""
  names = []
  for number, line in read_lines(path):
    fields = line.split()
    if len(fields) != 2 or not fields[0].isdigit() or int(fields[0]) != len(names) + 1:
      raise PrepareError(f"{path}:{number}: expected '{len(names) + 1} ClassName', got {line!r}")
    names.append(fields[1])
  return names


def parse_ucf101(args) -> Dataset:
  """UCF101 with the official classInd / trainlist0N / testlist0N files."""
  ann = need(args, "annotations")
  own = _ucf_classes(os.path.join(ann, "classInd.txt"))
  ids = ClassIndex(own, args.classes)
  ds, files = Dataset(ids.names, {"train": [], "test": []}), FileIndex(args.src)
  for split in ("train", "test"):
    path = os.path.join(ann, f"{split}list{args.split_id:02d}.txt")
    for number, line in read_lines(path):
      where = f"{path}:{number}"
      fields = line.split()
      folder = fields[0].replace("\\", "/").split("/")[0] if "/" in fields[0] else None
      if split == "train":
        if len(fields) != 2 or not fields[1].isdigit() or not 1 <= int(fields[1]) <= len(own):
          raise PrepareError(f"{where}: expected 'Class/video.avi LABEL' with LABEL in "
                             f"1..{len(own)} (classInd.txt), got {line!r}")
        name = own[int(fields[1]) - 1]
        if folder is not None and norm_name(folder) != norm_name(name):
          raise PrepareError(f"{where}: label {fields[1]} is {name!r} but the video is in "
                             f"folder {folder!r}")
      else:
        if folder is None:
          raise PrepareError(f"{where}: expected 'Class/video.avi', got {line!r}")
        name = folder
      label = ids.lookup(name, where)
      item = make_item(ids, [label], os.path.splitext(os.path.basename(fields[0]))[0])
      add_item(ds, split, item, files.find(fields[0]), fields[0], where)
  return ds


def parse_hmdb51(args) -> Dataset:
  """HMDB51 with the official <class>_test_splitN.txt files (1 train, 2 test, 0 unused)."""
  ann = need(args, "annotations")
  suffix = f"_test_split{args.split_id}.txt"
  split_files = sorted(f for f in os.listdir(ann) if f.endswith(suffix))
  if not split_files:
    raise PrepareError(f"{ann}: no *{suffix} files")
  own = sorted(f[:-len(suffix)] for f in split_files)
  ids = ClassIndex(own, args.classes)
  ds, files = Dataset(ids.names, {"train": [], "test": []}), FileIndex(args.src)
  for cname in own:
    path = os.path.join(ann, cname + suffix)
    label = ids.lookup(cname, path)
    for number, line in read_lines(path):
      where = f"{path}:{number}"
      fields = line.split()
      if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
        raise PrepareError(f"{where}: expected 'video.avi 0|1|2', got {line!r}")
      if fields[1] == "0":
        continue
      split = "train" if fields[1] == "1" else "test"
      item = make_item(ids, [label], os.path.splitext(fields[0])[0])
      rel = os.path.join(cname, fields[0])
      add_item(ds, split, item, files.find(rel), rel, where)
  return ds


class KineticsIndex:
  """All videos below SRC by file stem, built by one walk."""

  def __init__(self, root: str):
    self.by_stem, self.by_prefix = {}, {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
      dirnames.sort()
      for name in sorted(filter(is_video, filenames)):
        stem, path = os.path.splitext(name)[0], os.path.join(dirpath, name)
        self.by_stem.setdefault(stem, path)
        self.by_prefix.setdefault(stem[:11], []).append((stem, path))

  def find(self, yid: str, start: int, end: int) -> tuple[Optional[str], bool]:
    """(path, whether the file is the whole YouTube video) or (None, False)."""
    path = self.by_stem.get(f"{yid}_{start:06d}_{end:06d}")
    if path:
      return path, False
    if yid in self.by_stem:
      return self.by_stem[yid], True
    for stem, path in self.by_prefix.get(yid[:11], []):
      if stem.startswith(yid):
        return path, False
    return None, False


def _kinetics_rows(path: str):
  """Yields (where, row dict) of a Kinetics CSV, checking its columns."""
  if not os.path.isfile(path):
    raise PrepareError(f"{path}: no such file")
  with open(path, newline="", encoding="utf-8-sig") as f:
    reader = csv.DictReader(f)
    cols = set(reader.fieldnames or [])
    for col in ("label", "youtube_id", "time_start", "time_end"):
      if col not in cols:
        raise PrepareError(f"{path}:1: no {col!r} column (a test CSV without labels cannot be "
                           "prepared)")
    for number, row in enumerate(reader, start=2):
      yield f"{path}:{number}", row


def parse_kinetics(args) -> Dataset:
  """Kinetics-400/600/700 CSVs; videos found by YouTube id anywhere below SRC."""
  rows = []
  for path in need(args, "csv"):
    for where, row in _kinetics_rows(path):
      label = (row.get("label") or "").strip()
      if not label:
        raise PrepareError(f"{where}: empty label")
      try:
        t0, t1 = float(row["time_start"]), float(row["time_end"])
      except (TypeError, ValueError):
        raise PrepareError(f"{where}: bad time_start/time_end {row['time_start']!r}, "
                           f"{row['time_end']!r}") from None
      split = split_of(row["split"], where) if row.get("split") else split_from_filename(path)
      yid = (row.get("youtube_id") or "").strip()
      if not yid:
        raise PrepareError(f"{where}: empty youtube_id")
      rows.append((where, label, yid, t0, t1, split))
  ids = ClassIndex(sorted({r[1] for r in rows}), args.classes)
  ds = Dataset(ids.names, {s: [] for s in sorted({r[5] for r in rows})})
  videos = KineticsIndex(args.src)
  for where, label, yid, t0, t1, split in rows:
    index = ids.lookup(label, where)
    vid = f"{yid}_{int(t0):06d}_{int(t1):06d}"
    path, whole = videos.find(yid, int(t0), int(t1))
    window = dict(start_s=t0, end_s=t1) if whole and args.trim else {}
    item = make_item(ids, [index], vid, start_us=round(t0 * 1e6), end_us=round(t1 * 1e6),
                     **window)
    add_item(ds, split, item, path, f"{vid}.mp4", where)
  return ds


def _charades_classes(class_file: Optional[str]) -> list[str]:
  """Charades_v1_classes.txt (`c000 Holding some clothes`) -> names; default c000..c156."""
  if not class_file:
    return [f"c{i:03d}" for i in range(CHARADES_NUM_CLASSES)]
  names = []
  for number, line in read_lines(class_file):
    code, _, name = line.partition(" ")
    if not re.fullmatch(r"c\d{3}", code) or int(code[1:]) != len(names) or not name.strip():
      raise PrepareError(f"{class_file}:{number}: expected 'c{len(names):03d} name', got "
                         f"{line!r}")
    names.append(name.strip())
  return names


def _charades_actions(text: str, num_classes: int, where: str) -> list[list]:
  """`c092 11.90 21.20;c147 0.00 12.60` -> [[92, 11.9, 21.2], [147, 0.0, 12.6]]."""
  spans = []
  for part in filter(None, (p.strip() for p in (text or "").split(";"))):
    fields = part.split()
    try:
      if len(fields) != 3 or not re.fullmatch(r"c\d+", fields[0]):
        raise ValueError
      spans.append([int(fields[0][1:]), float(fields[1]), float(fields[2])])
    except ValueError:
      raise PrepareError(f"{where}: malformed action {part!r} (expected 'c092 11.90 "
                         "21.20')") from None
    if spans[-1][0] >= num_classes:
      raise PrepareError(f"{where}: unknown class {fields[0]!r} ({num_classes} classes)")
  return spans


def parse_charades(args) -> Dataset:
  """Charades v1 CSVs: multi-label items, the action spans kept for the manifest."""
  names = _charades_classes(args.classes)
  ds, files = Dataset(names, {}), FileIndex(args.src)
  for path in need(args, "csv"):
    split = split_from_filename(path)
    ds.splits.setdefault(split, [])
    spans_of = ds.extra.setdefault(split, {}).setdefault("spans", {})
    if not os.path.isfile(path):
      raise PrepareError(f"{path}: no such file")
    with open(path, newline="", encoding="utf-8-sig") as f:
      reader = csv.DictReader(f)
      if not {"id", "actions"} <= set(reader.fieldnames or []):
        raise PrepareError(f"{path}:1: expected 'id' and 'actions' columns")
      for number, row in enumerate(reader, start=2):
        where, vid = f"{path}:{number}", row["id"].strip()
        spans = _charades_actions(row["actions"], len(names), where)
        spans_of[vid] = spans
        labels = sorted({s[0] for s in spans})
        item = Item("", labels, [names[i] for i in labels], vid)
        add_item(ds, split, item, files.find(vid + ".mp4"), vid + ".mp4", where)
  return ds


def _ssv2_classes(path: str) -> list[str]:
  """something-something-v2-labels.json ({template: "id"}) -> names in id order."""
  with open(path, encoding="utf-8") as f:
    labels = json.load(f)
  by_id = {}
  for template, index in labels.items():
    if not str(index).isdigit():
      raise PrepareError(f"{path}: label id {index!r} of {template!r} is not an integer")
    by_id[int(index)] = template.replace("[", "").replace("]", "")
  if sorted(by_id) != list(range(len(by_id))):
    raise PrepareError(f"{path}: label ids are not 0..{len(by_id) - 1}")
  return [by_id[i] for i in range(len(by_id))]


def parse_ssv2(args) -> Dataset:
  """Something-Something-v2 JSON annotations; label = template without brackets."""
  own = _ssv2_classes(need(args, "labels"))
  ids = ClassIndex(own, args.classes)
  ds, files = Dataset(ids.names, {}), FileIndex(args.src)
  for path in need(args, "json"):
    split = split_from_filename(path)
    ds.splits.setdefault(split, [])
    with open(path, encoding="utf-8") as f:
      entries = json.load(f)
    for k, entry in enumerate(entries):
      vid = str(entry.get("id", "")).strip()
      where = f"{path}: entry {k} (id {vid!r})"
      template = entry.get("template")
      if not vid or not template:
        raise PrepareError(f"{where}: needs 'id' and 'template' (a test file without labels "
                           "cannot be prepared)")
      label = ids.lookup(template.replace("[", "").replace("]", ""), where)
      item = make_item(ids, [label], vid)
      add_item(ds, split, item, files.find(vid + ".webm"), vid + ".webm", where)
  return ds


PARSERS = {"generic": parse_generic, "ucf101": parse_ucf101, "hmdb51": parse_hmdb51,
           "kinetics": parse_kinetics, "charades": parse_charades, "ssv2": parse_ssv2}


def need(args, name: str):
  """A layout-specific option, or PrepareError saying the layout needs it."""
  value = getattr(args, name)
  if not value:
    raise PrepareError(f"--layout {args.layout} needs --{name}")
  return value


def select_splits(ds: Dataset, split: str) -> list[str]:
  """The splits to prepare: all the layout has, or the one asked for (which must exist)."""
  if split == "all":
    return [s for s in SPLITS if s in ds.splits]
  if split not in ds.splits:
    raise PrepareError(f"split {split!r} not in these annotations (have: "
                       f"{', '.join(sorted(ds.splits)) or 'none'})")
  return [split]


def dedupe(items: list[Item]) -> tuple[list[Item], list[str]]:
  """Items sorted by (video id, path), repeated video ids dropped (listed)."""
  out, seen, dupes = [], set(), []
  for item in sorted(items, key=lambda it: (it.video_id, it.path)):
    if item.video_id in seen:
      dupes.append(item.video_id)
      continue
    seen.add(item.video_id)
    out.append(item)
  return out, dupes


# ----------------------------------------------------------------------------- shards


def default_num_shards(n: int) -> int:
  """About sqrt(n) shards, in [1, 1024]."""
  return int(min(1024, max(1, math.ceil(math.sqrt(n)))))


def sidecar_path(shard: str) -> str:
  """sidecars/<shard>.json next to the shard (kept out of `<split>.tfrecord*` globs)."""
  out, name = os.path.split(shard)
  return os.path.join(out, SIDECAR_DIR, name + ".json")


def fingerprint(settings: dict, items: list[Item]) -> str:
  """Hash of the settings and the items of a shard: a sidecar is only valid for these."""
  blob = json.dumps([settings, [dataclasses.asdict(it) for it in items]], sort_keys=True)
  return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def read_json(path: str) -> Optional[dict]:
  """A JSON file's object, or None when missing or unreadable."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def write_json(path: str, obj) -> None:
  """Writes JSON atomically (temporary file, then rename)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


def shard_done(path: str, fp: str) -> bool:
  """Whether a shard is in place with its sidecar for the same settings and items."""
  side = read_json(sidecar_path(path)) if os.path.isfile(path) else None
  return bool(side) and side.get("fingerprint") == fp


def clean_split(out: str, split: str, fmt: str, num_shards: int) -> None:
  """Removes stale .tmp files of a split; refuses shards of another shard count."""
  ext = "array_record" if fmt == "array_record" else "tfrecord"
  pattern = re.compile(rf"{re.escape(split)}\.{ext}-\d{{5}}-of-(\d{{5}})(\.tmp)?$")
  for name in sorted(os.listdir(out)):
    m = pattern.match(name)
    if not m:
      continue
    if m.group(2):
      os.remove(os.path.join(out, name))
    elif int(m.group(1)) != num_shards:
      raise PrepareError(f"{os.path.join(out, name)}: a shard of an earlier run with "
                         f"{int(m.group(1))} shards (now {num_shards}); remove the old "
                         f"{split} shards or choose another --out")


def plan_split(out: str, split: str, items: list[Item], settings: dict,
               num_shards: int) -> tuple[list[str], list[dict]]:
  """Shard paths of a split and the tasks for those not done yet (item i -> shard i % N)."""
  n = num_shards or default_num_shards(len(items))
  clean_split(out, split, settings["format"], n)
  paths = [records.shard_name(os.path.join(out, split), s, n, settings["format"])
           for s in range(n)]
  tasks = []
  for s, path in enumerate(paths):
    shard_items = items[s::n]
    fp = fingerprint(settings, shard_items)
    if not shard_done(path, fp):
      tasks.append({"path": path, "items": shard_items, "settings": settings,
                    "fingerprint": fp})
  return paths, tasks


def encode_item(item: Item, settings: dict) -> tuple[bytes, int]:
  """Decodes, resizes and JPEG-encodes a video -> (serialized record, frame count)."""
  from data_pipelines import video_io  # pylint: disable=g-import-not-at-top
  frames, _ = video_io.decode_video(item.path, fps=settings["fps"] or None,
                                    short_side=settings["short_side"] or None,
                                    start_s=item.start_s or 0.0, end_s=item.end_s,
                                    max_frames=settings["max_frames"] or None)
  jpegs = [video_io.encode_jpeg(f, settings["jpeg_quality"]) for f in frames]
  rec = records.VideoRecord(jpegs, item.labels, item.texts, item.video_id, item.start_us,
                            item.end_us)
  return records.encode(rec), len(jpegs)


def run_shard(task: dict, progress: Callable[[int], None] = lambda k: None) -> dict:
  """Writes one whole shard, then its sidecar; returns the sidecar's contents."""
  counts, failures, written, frames = {}, [], 0, 0
  with records.ShardWriter(task["path"], task["settings"]["format"]) as writer:
    for item in task["items"]:
      try:
        payload, num_frames = encode_item(item, task["settings"])
      except Exception as e:  # pylint: disable=broad-except
        failures.append({"path": item.path, "video_id": item.video_id,
                         "error": f"{type(e).__name__}: {e}"})
      else:
        writer.write(payload)
        written, frames = written + 1, frames + num_frames
        for label in item.labels:
          counts[str(label)] = counts.get(str(label), 0) + 1
      progress(1)
  side = {"shard": os.path.basename(task["path"]), "fingerprint": task["fingerprint"],
          "items": len(task["items"]), "written": written, "frames": frames,
          "class_counts": counts, "failures": failures}
  write_json(sidecar_path(task["path"]), side)
  return side


_PROGRESS: Optional[multiprocessing.Queue] = None


def _warm_up():
  """Loads the record protobuf (imports TensorFlow, seconds) before the clock starts."""
  records.encode(records.VideoRecord([], []))


def _init_worker(progress_queue):
  """Pool initializer: the queue that per-video progress goes to; TensorFlow loaded."""
  global _PROGRESS
  _PROGRESS = progress_queue
  _warm_up()


def _pool_run_shard(task: dict) -> dict:
  return run_shard(task, _PROGRESS.put)


def _drain(q, bar, timeout: float) -> None:
  """Moves the progress counts waiting in the queue to the progress bar."""
  try:
    bar.update(q.get(timeout=timeout))
    while True:
      bar.update(q.get_nowait())
  except queue.Empty:
    pass


def execute(tasks: list[dict], workers: int, progress: bool) -> None:
  """Runs the shard tasks: in this process (workers <= 1) or in a pool of processes."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  total = sum(len(t["items"]) for t in tasks)
  if tasks and (workers <= 1 or len(tasks) <= 1):
    _warm_up()
  with tqdm(total=total, unit="video", desc="victr-prepare", disable=not progress,
            mininterval=0.5, dynamic_ncols=True) as bar:
    if workers <= 1 or len(tasks) <= 1:
      for task in tasks:
        run_shard(task, bar.update)
      return
    ctx = multiprocessing.get_context("spawn")  # fork-safe with TensorFlow / JAX loaded
    q = ctx.Queue()
    with concurrent.futures.ProcessPoolExecutor(min(workers, len(tasks)), mp_context=ctx,
                                                initializer=_init_worker,
                                                initargs=(q,)) as pool:
      pending = {pool.submit(_pool_run_shard, t) for t in tasks}
      try:
        while pending:
          done, pending = concurrent.futures.wait(pending, timeout=0.2)
          for future in done:
            future.result()  # re-raises a worker's error (disk full, killed worker ...)
          _drain(q, bar, timeout=0.01)
      except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
      _drain(q, bar, timeout=0.05)


# ----------------------------------------------------------------------------- manifest


def split_summary(ds: Dataset, split: str, items: list[Item], dupes: list[str],
                  paths: list[str], settings: dict) -> dict:
  """A split's manifest entry, merged from its shards' sidecars."""
  counts, failures, written, frames = [0] * len(ds.classes), [], 0, 0
  for path in paths:
    side = read_json(sidecar_path(path)) or {}
    written += side.get("written", 0)
    frames += side.get("frames", 0)
    failures += side.get("failures", [])
    for label, c in side.get("class_counts", {}).items():
      counts[int(label)] += c
  missing = ds.missing.get(split, [])
  entry = {"items": len(items) + len(dupes) + len(missing), "videos": len(items),
           "written": written, "frames": frames, "failed": len(failures),
           "failures": sorted(failures, key=lambda f: f["video_id"]),
           "missing": len(missing), "missing_files": missing, "duplicates": dupes,
           "class_counts": {name: c for name, c in zip(ds.classes, counts)},
           "shards": [os.path.basename(p) for p in paths], "settings": settings}
  entry.update(ds.extra.get(split, {}))
  return entry


def write_classes(out: str, classes: list[str]) -> None:
  """classes.txt (line i = label i); refuses to change the list of an earlier run."""
  path = os.path.join(out, "classes.txt")
  if os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      old = f.read().splitlines()
    if old != classes:
      raise PrepareError(f"{path}: an earlier run wrote another class list; use a fresh --out "
                         "(or the same --classes)")
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write("".join(c + "\n" for c in classes))
  os.replace(tmp, path)


def write_manifest(out: str, layout: str, ds: Dataset, entries: dict) -> dict:
  """manifest.json, keeping the entries of splits prepared by earlier runs."""
  path = os.path.join(out, "manifest.json")
  old = read_json(path) or {}
  manifest = {"layout": layout, "num_classes": len(ds.classes),
              "splits": {**old.get("splits", {}), **entries}}
  write_json(path, manifest)
  return manifest


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
  """The victr-prepare command line."""
  p = argparse.ArgumentParser(prog="victr-prepare", description=__doc__.split("\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="\n".join(__doc__.split("\n")[6:]))
  p.add_argument("--layout", required=True, choices=LAYOUTS)
  p.add_argument("--src", required=True, help="folder with the videos")
  p.add_argument("--out", required=True, help="output folder")
  p.add_argument("--split", default="all", choices=SPLITS + ("all",))
  p.add_argument("--annotations", help="ucf101, hmdb51: folder with the split files")
  p.add_argument("--split_id", type=int, default=1, choices=(1, 2, 3), help="ucf101, hmdb51")
  p.add_argument("--csv", action="append", help="kinetics, charades: annotation CSV "
                 "(repeatable)")
  p.add_argument("--labels", help="ssv2: something-something-v2-labels.json")
  p.add_argument("--json", action="append", help="ssv2: train/validation JSON (repeatable)")
  p.add_argument("--classes", help="class list file (line i = label i) or a bundled name")
  p.add_argument("--trim", action="store_true",
                 help="kinetics: cut files named <youtube_id>.<ext> to the CSV times")
  p.add_argument("--short_side", type=int, default=256, help="0: keep the size")
  p.add_argument("--fps", type=float, default=0.0, help="0: keep every frame")
  p.add_argument("--jpeg_quality", type=int, default=90)
  p.add_argument("--num_shards", type=int, default=0, help="per split; 0: about sqrt(n)")
  p.add_argument("--format", default="tfrecord", choices=("tfrecord", "array_record"))
  p.add_argument("--workers", type=int, default=2)
  p.add_argument("--max_frames", type=int, default=0, help="0: no limit")
  p.add_argument("--no_progress", action="store_true", help="no progress bar")
  return p


def settings_of(args) -> dict:
  """The options that change the records' contents (part of each shard's fingerprint)."""
  if not 1 <= args.jpeg_quality <= 100:
    raise PrepareError(f"--jpeg_quality {args.jpeg_quality}: expected 1..100")
  if min(args.short_side, args.fps, args.max_frames, args.num_shards) < 0:
    raise PrepareError("--short_side, --fps, --max_frames and --num_shards must be >= 0")
  return {"short_side": args.short_side, "fps": args.fps, "jpeg_quality": args.jpeg_quality,
          "max_frames": args.max_frames, "format": args.format}


def prepare(args) -> dict:
  """Parses the layout, writes the missing shards, classes.txt and manifest.json."""
  if not os.path.isdir(args.src):
    raise PrepareError(f"--src {args.src}: no such folder")
  settings = settings_of(args)
  ds = PARSERS[args.layout](args)
  splits = select_splits(ds, args.split)
  os.makedirs(args.out, exist_ok=True)
  write_classes(args.out, ds.classes)
  plans, tasks = {}, []
  for split in splits:
    items, dupes = dedupe(ds.splits[split])
    paths, todo = plan_split(args.out, split, items, settings, args.num_shards)
    plans[split] = (items, dupes, paths)
    tasks += todo
  done = sum(len(p[2]) for p in plans.values()) - len(tasks)
  print(f"victr-prepare: {len(tasks)} shards to write, {done} already done", file=sys.stderr)
  execute(tasks, args.workers, not args.no_progress)
  entries = {s: split_summary(ds, s, *plans[s], settings) for s in splits}
  return write_manifest(args.out, args.layout, ds, entries)


def main(argv=None) -> int:
  """victr-prepare entry point; 0 on success, 2 on a problem with the inputs."""
  args = build_parser().parse_args(argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # for the worker processes
  try:
    manifest = prepare(args)
  except PrepareError as e:
    print(f"victr-prepare: error: {e}", file=sys.stderr)
    return 2
  for split, entry in manifest["splits"].items():
    print(f"{split}: {entry['written']}/{entry['items']} written, {entry['failed']} failed, "
            f"{entry['missing']} missing, {len(entry['shards'])} shards in {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
