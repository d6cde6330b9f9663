"""Dataset layouts: raw videos + official annotation files -> items per split, class list.

One parser per layout, each taking typed keyword arguments and returning a `Dataset`
before any video is decoded (victr-prepare and the TFDS builders both call them):

  parse_generic(src)                         SRC/<split>/<class>/<video>
  parse_ucf101(src, annotations, split_id)   classInd.txt, trainlist0N.txt, testlist0N.txt
  parse_hmdb51(src, annotations, split_id)   <class>_test_splitN.txt (1 train, 2 test, 0 unused)
  parse_kinetics(src, csv_files, trim)       label,youtube_id,time_start,time_end[,split]
  parse_charades(src, csv_files)             Charades_v1_{train,test}.csv (multi-label)
  parse_ssv2(src, labels, json_files)        something-something-v2-*.json

Every parser also takes `classes`: a class list file or the name of a shipped list
(splits.read_classnames) that fixes the class order and names; the dataset's class names
are matched to it by splits.class_key (`ApplyEyeMakeup` = `Apply Eye Makeup`).

Videos are found with one `layout_io.VideoIndex` per source folder (a direct path first,
else by file name anywhere below it); items whose video is not found are listed in
`Dataset.missing`. Annotation problems (unknown labels, malformed lines, missing columns)
raise `layout_io.PrepareError` naming the file and line.
"""
import dataclasses
import os
import re
from collections.abc import Sequence
from typing import Optional

from data_pipelines import gpath, records, splits
from data_pipelines.layout_io import (SPLIT_ALIASES, ClassIndex, PrepareError, VideoIndex,
                                      read_csv, read_json, read_lines, split_from_filename,
                                      split_of)

LAYOUTS = ("generic", "ucf101", "hmdb51", "kinetics", "charades", "ssv2")
CHARADES_NUM_CLASSES = 157


@dataclasses.dataclass
class VideoItem:
  """One video to convert into a record."""
  path: str
  labels: list[int]
  texts: list[str]
  video_id: str
  start_s: Optional[float] = None  # decode window; None: the whole file
  end_s: Optional[float] = None
  start_us: Optional[int] = None  # clip times stored in the record
  end_us: Optional[int] = None

  def to_record(self, short_side: int = 256, fps: float = 0.0, quality: int = 90,
                max_frames: int = 0) -> records.VideoRecord:
    """The video decoded into a record (records.video_to_record; ValueError if it fails)."""
    return records.video_to_record(self.path, self.labels, self.texts, self.video_id,
                                   short_side=short_side, fps=fps, quality=quality,
                                   start_s=self.start_s, end_s=self.end_s,
                                   max_frames=max_frames, start_us=self.start_us,
                                   end_us=self.end_us)


@dataclasses.dataclass
class Dataset:
  """A parsed layout: class names, items per split, missing videos, extra manifest data."""
  classes: list[str]
  splits: dict[str, list[VideoItem]]
  missing: dict[str, list[dict]] = dataclasses.field(default_factory=dict)
  extra: dict[str, dict] = dataclasses.field(default_factory=dict)

  def add(self, split: str, item: VideoItem, found: Optional[str], expected: str,
          where: str) -> None:
    """Adds an item with its video path `found`, or lists it as missing (None)."""
    if found is None:
      self.missing.setdefault(split, []).append(
          {"video_id": item.video_id, "path": expected, "where": where})
      return
    item.path = found
    self.splits.setdefault(split, []).append(item)


def _item(ids: ClassIndex, labels: list[int], video_id: str, **kw) -> VideoItem:
  """An item (path still unset) with the label texts from the class list."""
  return VideoItem("", labels, [ids.names[i] for i in labels], video_id, **kw)


def parse_generic(src: str, classes: Optional[str] = None) -> Dataset:
  """SRC/<split>/<class>/<video>; classes: sorted class folder names of all splits."""
  split_dirs = {}
  for name in sorted(os.listdir(src)):
    if os.path.isdir(os.path.join(src, name)) and name.lower() in SPLIT_ALIASES:
      split_dirs[split_of(name, src)] = os.path.join(src, name)
  if not split_dirs:
    raise PrepareError(f"{src}: no split folders (train, val, test)")
  names = sorted({c for d in split_dirs.values() for c in os.listdir(d)
                  if os.path.isdir(os.path.join(d, c))})
  ids = ClassIndex(names, classes)
  ds = Dataset(ids.names, {s: [] for s in split_dirs})
  for split, sdir in split_dirs.items():
    for cname in sorted(os.listdir(sdir)):
      cdir = os.path.join(sdir, cname)
      if not os.path.isdir(cdir):
        continue
      label = ids.lookup(cname, cdir)
      for path in VideoIndex(cdir).paths:
        rel = os.path.relpath(path, sdir)
        item = _item(ids, [label], os.path.splitext(rel)[0].replace(os.sep, "/"))
        ds.add(split, item, path, rel, cdir)
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


def parse_ucf101(src: str, annotations: str, split_id: int = 1,
                 classes: Optional[str] = None) -> Dataset:
  """UCF101: videos SRC/<Class>/v_<Class>_gXX_cYY.avi (or flat); `annotations` the folder
  with the official classInd.txt, trainlist0N.txt (`Class/v_...avi LABEL`, 1-based) and
  testlist0N.txt (`Class/v_...avi`), N = split_id."""
  own = _ucf_classes(os.path.join(annotations, "classInd.txt"))
  ids = ClassIndex(own, classes)
  ds, videos = Dataset(ids.names, {"train": [], "test": []}), VideoIndex(src)
  for split in ("train", "test"):
    path = os.path.join(annotations, f"{split}list{split_id:02d}.txt")
    for number, line in read_lines(path):
      where = f"{path}:{number}"
      fields = line.split()
      folder = fields[0].replace("\\", "/").split("/")[0] if "/" in fields[0] else None
      if split == "train":
        if len(fields) != 2 or not fields[1].isdigit() or not 1 <= int(fields[1]) <= len(own):
          raise PrepareError(f"{where}: expected 'Class/video.avi LABEL' with LABEL in "
                             f"1..{len(own)} (classInd.txt), got {line!r}")
        name = own[int(fields[1]) - 1]
        if folder is not None and splits.class_key(folder) != splits.class_key(name):
          raise PrepareError(f"{where}: label {fields[1]} is {name!r} but the video is in "
                             f"folder {folder!r}")
      else:
        if folder is None:
          raise PrepareError(f"{where}: expected 'Class/video.avi', got {line!r}")
        name = folder
      item = _item(ids, [ids.lookup(name, where)],
                      os.path.splitext(os.path.basename(fields[0]))[0])
      ds.add(split, item, videos.find(fields[0]), fields[0], where)
  return ds


def parse_hmdb51(src: str, annotations: str, split_id: int = 1,
                 classes: Optional[str] = None) -> Dataset:
  """HMDB51: videos SRC/<class>/<video>.avi; `annotations` the folder with the official
  <class>_test_splitN.txt files (`video.avi 1|2|0`: train, test, unused), N = split_id.
  The dataset's classes are the file names' classes, sorted."""
  suffix = f"_test_split{split_id}.txt"
  split_files = sorted(f for f in gpath.listdir(annotations) if f.endswith(suffix))
  if not split_files:
    raise PrepareError(f"{annotations}: no *{suffix} files")
  own = sorted(f[:-len(suffix)] for f in split_files)
  ids = ClassIndex(own, classes)
  ds, videos = Dataset(ids.names, {"train": [], "test": []}), VideoIndex(src)
  for cname in own:
    path = os.path.join(annotations, cname + suffix)
    label = ids.lookup(cname, path)
    for number, line in read_lines(path):
      where = f"{path}:{number}"
      fields = line.split()
      if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
        raise PrepareError(f"{where}: expected 'video.avi 0|1|2', got {line!r}")
      if fields[1] == "0":
        continue
      split = "train" if fields[1] == "1" else "test"
      item = _item(ids, [label], os.path.splitext(fields[0])[0])
      rel = os.path.join(cname, fields[0])
      ds.add(split, item, videos.find(rel), rel, where)
  return ds


def find_kinetics_video(videos: VideoIndex, youtube_id: str, start: int,
                        end: int) -> tuple[Optional[str], bool]:
  """(path, whether the file is the whole YouTube video), or (None, False).

  Tried in order: <youtube_id>_<start:06d>_<end:06d>.<ext> (a clip), <youtube_id>.<ext> (the
  whole video), any <youtube_id>*.<ext> (a clip named some other way).
  """
  path = videos.stem(f"{youtube_id}_{start:06d}_{end:06d}")
  if path:
    return path, False
  path = videos.stem(youtube_id)
  if path:
    return path, True
  return videos.stem_prefix(youtube_id), False


def parse_kinetics(src: str, csv_files: Sequence[str], trim: bool = False,
                   classes: Optional[str] = None) -> Dataset:
  """Kinetics-400/600/700: CSVs `label,youtube_id,time_start,time_end[,split[,is_cc]]` (the
  split from the column, else from the file name); videos anywhere below SRC (see
  find_kinetics_video). trim: cut whole YouTube videos to [time_start, time_end]."""
  rows = []
  for path in csv_files:
    for where, row in read_csv(path, ("label", "youtube_id", "time_start", "time_end"),
                               hint=" (a test CSV without labels cannot be prepared)"):
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
  ids = ClassIndex(sorted({r[1] for r in rows}), classes)
  ds = Dataset(ids.names, {s: [] for s in sorted({r[5] for r in rows})})
  videos = VideoIndex(src)
  for where, label, yid, t0, t1, split in rows:
    vid = f"{yid}_{int(t0):06d}_{int(t1):06d}"
    path, whole = find_kinetics_video(videos, yid, int(t0), int(t1))
    window = dict(start_s=t0, end_s=t1) if whole and trim else {}
    item = _item(ids, [ids.lookup(label, where)], vid, start_us=round(t0 * 1e6),
                    end_us=round(t1 * 1e6), **window)
    ds.add(split, item, path, f"{vid}.mp4", where)
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


def parse_charades(src: str, csv_files: Sequence[str],
                   classes: Optional[str] = None) -> Dataset:
  """Charades v1: Charades_v1_{train,test}.csv (`id`, `actions` = `c092 11.90 21.20;...`),
  videos SRC/<id>.mp4; multi-label items, the action spans kept for the manifest
  (Dataset.extra[split]['spans']). classes: Charades_v1_classes.txt (`c000 name`) for the
  class names; without it the names are c000..c156."""
  names = _charades_classes(classes)
  ds, videos = Dataset(names, {}), VideoIndex(src)
  for path in csv_files:
    split = split_from_filename(path)
    ds.splits.setdefault(split, [])
    spans_of = ds.extra.setdefault(split, {}).setdefault("spans", {})
    for where, row in read_csv(path, ("id", "actions")):
      vid = row["id"].strip()
      spans = _charades_actions(row["actions"], len(names), where)
      spans_of[vid] = spans
      labels = sorted({s[0] for s in spans})
      item = VideoItem("", labels, [names[i] for i in labels], vid)
      ds.add(split, item, videos.find(vid + ".mp4"), vid + ".mp4", where)
  return ds


def _ssv2_classes(path: str) -> list[str]:
  """something-something-v2-labels.json ({template: "id"}) -> names in id order."""
  by_id = {}
  for template, index in read_json(path).items():
    if not str(index).isdigit():
      raise PrepareError(f"{path}: label id {index!r} of {template!r} is not an integer")
    by_id[int(index)] = template.replace("[", "").replace("]", "")
  if sorted(by_id) != list(range(len(by_id))):
    raise PrepareError(f"{path}: label ids are not 0..{len(by_id) - 1}")
  return [by_id[i] for i in range(len(by_id))]


def parse_ssv2(src: str, labels: str, json_files: Sequence[str],
               classes: Optional[str] = None) -> Dataset:
  """Something-Something-v2: `labels` something-something-v2-labels.json, `json_files` the
  something-something-v2-{train,validation}.json files; videos SRC/<id>.webm. An item's
  class is its template without brackets."""
  ids = ClassIndex(_ssv2_classes(labels), classes)
  ds, videos = Dataset(ids.names, {}), VideoIndex(src)
  for path in json_files:
    split = split_from_filename(path)
    ds.splits.setdefault(split, [])
    for k, entry in enumerate(read_json(path)):
      vid = str(entry.get("id", "")).strip()
      where = f"{path}: entry {k} (id {vid!r})"
      template = entry.get("template")
      if not vid or not template:
        raise PrepareError(f"{where}: needs 'id' and 'template' (a test file without labels "
                           "cannot be prepared)")
      item = _item(ids, [ids.lookup(template.replace("[", "").replace("]", ""), where)], vid)
      ds.add(split, item, videos.find(vid + ".webm"), vid + ".webm", where)
  return ds
