"""DMVR-style video records: `tf.train.SequenceExample` in TFRecord or ArrayRecord shards.

Layout (the keys DMVR tools write and read):
  feature_lists['image/encoded']     one JPEG per frame (a bytes feature per frame)
  context['clip/label/index']        int64, one or more labels
  context['clip/label/text']         bytes, the label names (one per label)
  context['video/id']                bytes, a key for the video (DMVR's own tools write
                                     'video/filename'; either is read)
  context['clip/start/timestamp']    int64 microseconds (optional, also end)

Building: `video_to_record` decodes a video file (PyAV) into a VideoRecord of JPEG frames,
for victr-prepare and the TFDS builders alike.

Reading is random access over both formats: ArrayRecord natively, TFRecord through an
index of record offsets built by one scan of each file (`RecordSource`). Writing is atomic
per shard (`ShardWriter`): records go to a temporary file renamed into place on close, so a
killed writer never leaves a shard that reads as complete.

Shards may be local or on gs:// (data_pipelines/gpath.py): a gs:// TFRecord record is one
ranged read; a gs:// shard is written to a local temporary file (TMPDIR) and uploaded on
close, one object upload being atomic. ArrayRecord's reader takes local files only, so
gs:// ArrayRecord shards cannot be read (an error names the file): use TFRecord there.
"""
import dataclasses
import os
import struct
import tempfile
import threading
from typing import Optional, Sequence

import numpy as np

from data_pipelines import gpath

FRAMES_KEY = "image/encoded"
LABEL_INDEX_KEY = "clip/label/index"
LABEL_TEXT_KEY = "clip/label/text"
ID_KEYS = ("video/id", "video/filename", "clip/key")
START_KEY, END_KEY = "clip/start/timestamp", "clip/end/timestamp"


def _example_pb2():
  # The protobuf class without importing all of TensorFlow (fast, fork-friendly).
  from tensorflow.core.example import example_pb2  # pylint: disable=g-import-not-at-top
  return example_pb2


@dataclasses.dataclass
class VideoRecord:
  """One decoded record: JPEG frames (not yet decoded) and labels."""
  frames: list[bytes]
  labels: list[int]
  label_texts: list[str] = dataclasses.field(default_factory=list)
  video_id: str = ""
  start_us: Optional[int] = None
  end_us: Optional[int] = None


def encode(rec: VideoRecord) -> bytes:
  """VideoRecord -> serialized SequenceExample."""
  ex = _example_pb2().SequenceExample()
  ctx = ex.context.feature
  ctx[LABEL_INDEX_KEY].int64_list.value[:] = [int(x) for x in rec.labels]
  if rec.label_texts:
    ctx[LABEL_TEXT_KEY].bytes_list.value[:] = [t.encode("utf-8") for t in rec.label_texts]
  if rec.video_id:
    ctx["video/id"].bytes_list.value[:] = [rec.video_id.encode("utf-8")]
  if rec.start_us is not None:
    ctx[START_KEY].int64_list.value[:] = [int(rec.start_us)]
  if rec.end_us is not None:
    ctx[END_KEY].int64_list.value[:] = [int(rec.end_us)]
  frames = ex.feature_lists.feature_list[FRAMES_KEY]
  for jpeg in rec.frames:
    frames.feature.add().bytes_list.value.append(jpeg)
  return ex.SerializeToString()


def decode(serialized: bytes, where: str = "record") -> VideoRecord:
  """Serialized SequenceExample (ours or any DMVR tool's) -> VideoRecord."""
  ex = _example_pb2().SequenceExample()
  try:
    ex.ParseFromString(serialized)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"{where}: not a tf.train.SequenceExample ({e})") from e
  ctx = ex.context.feature
  if FRAMES_KEY not in ex.feature_lists.feature_list:
    raise ValueError(f"{where}: no '{FRAMES_KEY}' feature list")
  frames = [f.bytes_list.value[0] for f in ex.feature_lists.feature_list[FRAMES_KEY].feature
            if f.bytes_list.value]
  labels = list(ctx[LABEL_INDEX_KEY].int64_list.value) if LABEL_INDEX_KEY in ctx else []
  texts = [t.decode("utf-8", "replace") for t in ctx[LABEL_TEXT_KEY].bytes_list.value] if (
      LABEL_TEXT_KEY in ctx) else []
  vid = next((ctx[k].bytes_list.value[0].decode("utf-8", "replace") for k in ID_KEYS
              if k in ctx and ctx[k].bytes_list.value), "")
  get = lambda k: int(ctx[k].int64_list.value[0]) if k in ctx and ctx[k].int64_list.value else None
  return VideoRecord(frames, labels, texts, vid, get(START_KEY), get(END_KEY))


def as_record(item) -> VideoRecord:
  """A VideoRecord from either a VideoRecord (TFDS sources) or serialized bytes."""
  return item if isinstance(item, VideoRecord) else decode(item)


def video_to_record(path: str, labels: Sequence[int], texts: Sequence[str], video_id: str,
                    short_side: int = 256, fps: float = 0.0, quality: int = 90,
                    start_s: Optional[float] = None, end_s: Optional[float] = None,
                    max_frames: int = 0, start_us: Optional[int] = None,
                    end_us: Optional[int] = None) -> VideoRecord:
  """Decodes a video file into a record of JPEG frames (victr-prepare and TFDS builders).

  short_side: resize so the shorter side is this (0: keep the size); fps: resample to this
  frame rate (0: every frame); quality: JPEG quality; [start_s, end_s]: the part of the file
  to decode (None: from the start / to the end); max_frames: keep at most this many frames
  (0: all). start_us / end_us: the clip's times stored in the record (e.g. a Kinetics
  clip's place in its YouTube video), independent of the decode window.
  Raises ValueError naming the file when it cannot be decoded or holds no frames.
  """
  from data_pipelines import video_io  # pylint: disable=g-import-not-at-top
  frames, _ = video_io.decode_video(path, fps=fps or None, short_side=short_side or None,
                                    start_s=start_s or 0.0, end_s=end_s,
                                    max_frames=max_frames or None)
  return VideoRecord([video_io.encode_jpeg(f, quality) for f in frames], list(labels),
                     list(texts), video_id, start_us, end_us)


# ----------------------------------------------------------------------------- reading


def tfrecord_offsets(path: str) -> np.ndarray:
  """Byte offsets of every record of a TFRecord file (one scan, headers only).

  Each record is: uint64 length, uint32 crc, data, uint32 crc.
  """
  offsets, size = [], gpath.getsize(path)
  with gpath.open(path, "rb") as f:
    pos = 0
    while pos < size:
      head = f.read(12)
      if len(head) < 12:
        raise ValueError(f"{path}: truncated TFRecord header at byte {pos}")
      (length,) = struct.unpack("<Q", head[:8])
      offsets.append(pos)
      pos += 12 + length + 4
      if pos > size:
        raise ValueError(f"{path}: truncated TFRecord (record at byte {offsets[-1]} runs past "
                         "the end)")
      f.seek(pos)
  return np.asarray(offsets, np.int64)


def expand_pattern(pattern: str | Sequence[str]) -> list[str]:
  """Comma-separated globs or a list of them -> sorted file list (errors if empty)."""
  pats = pattern.split(",") if isinstance(pattern, str) else list(pattern)
  files = sorted({f for p in pats for f in gpath.glob(p.strip())})
  if not files:
    raise FileNotFoundError(f"no record files match {pattern!r}")
  return files


def file_format(path: str) -> str:
  return "array_record" if ".array_record" in os.path.basename(path) else "tfrecord"


class RecordSource:
  """Random access over the serialized records of TFRecord and/or ArrayRecord shards.

  len(source), source[i] -> bytes; source.where(i) -> 'file:record' for error messages.
  Picklable (files are opened lazily per process).
  """

  def __init__(self, pattern):
    self.files = expand_pattern(pattern)
    self._counts, self._index, self._ends = [], {}, {}
    for fi, path in enumerate(self.files):
      if file_format(path) == "tfrecord":
        self._index[fi] = tfrecord_offsets(path)
        self._counts.append(len(self._index[fi]))
        if gpath.is_remote(path):  # where each record ends: one ranged read per record
          self._ends[fi] = np.append(self._index[fi][1:], gpath.getsize(path))
      elif gpath.is_remote(path):
        raise ValueError(f"{path}: ArrayRecord's reader reads local files only; copy the "
                         "shards to a local disk, or prepare them as TFRecord (victr-prepare "
                         "--format tfrecord), which is read from gs:// directly")
      else:
        reader = self._array_reader(fi)
        self._counts.append(reader.num_records())
        reader.close()
    self._starts = np.concatenate([[0], np.cumsum(self._counts)]).astype(np.int64)
    self._handles, self._lock = {}, threading.Lock()

  def _array_reader(self, fi):
    from array_record.python import array_record_module as arm  # pylint: disable=g-import-not-at-top
    return arm.ArrayRecordReader(self.files[fi], "readahead_buffer_size:0")

  def __len__(self):
    return int(self._starts[-1])

  def _locate(self, i):
    if not 0 <= i < len(self):
      raise IndexError(f"record {i} out of range [0, {len(self)})")
    fi = int(np.searchsorted(self._starts, i, side="right") - 1)
    return fi, int(i - self._starts[fi])

  def where(self, i) -> str:
    fi, j = self._locate(int(i))
    return f"{self.files[fi]}:{j}"

  def __getitem__(self, i) -> bytes:
    """Thread-safe: TFRecord by positional reads (os.pread; on gs:// one ranged read),
    ArrayRecord under a lock."""
    fi, j = self._locate(int(i))
    if file_format(self.files[fi]) == "array_record":
      with self._lock:
        handle = self._handles.get(fi)
        if handle is None:
          handle = self._handles[fi] = self._array_reader(fi)
        return handle.read([j])[0]
    if fi in self._ends:
      return self._remote_record(fi, j)
    fd = self._handles.get(fi)
    if fd is None:
      with self._lock:
        fd = self._handles.setdefault(fi, os.open(self.files[fi], os.O_RDONLY))
    offset = int(self._index[fi][j])
    (length,) = struct.unpack("<Q", os.pread(fd, 8, offset))
    data = os.pread(fd, length, offset + 12)
    if len(data) != length:
      raise ValueError(f"{self.files[fi]}:{j}: truncated record")
    return data

  def _remote_record(self, fi, j) -> bytes:
    """Record j of remote TFRecord file fi: header, data and crc in one ranged read."""
    offset = int(self._index[fi][j])
    blob = gpath.read_range(self.files[fi], offset, int(self._ends[fi][j]) - offset)
    (length,) = struct.unpack("<Q", blob[:8])
    if len(blob) < 12 + length:
      raise ValueError(f"{self.files[fi]}:{j}: truncated record")
    return blob[12:12 + length]

  def __getstate__(self):
    return {k: v for k, v in self.__dict__.items() if k not in ("_handles", "_lock")}

  def __setstate__(self, state):
    self.__dict__.update(state, _handles={}, _lock=threading.Lock())


# ----------------------------------------------------------------------------- writing


class ShardWriter:
  """Writes one shard atomically: to `path + '.tmp'`, renamed to `path` on close(); a
  gs:// shard to a local temporary file, uploaded to `path` on close().

  fmt: 'tfrecord' or 'array_record'. Use as a context manager; on an exception the
  temporary file is removed and `path` is untouched.
  """

  def __init__(self, path: str, fmt: str = "tfrecord"):
    self.path, self.fmt = path, fmt
    if gpath.is_remote(path):  # TF's and ArrayRecord's writers take local files
      fd, self.tmp = tempfile.mkstemp(prefix="victr-shard-", suffix="-" + os.path.basename(path))
      os.close(fd)
    else:
      self.tmp = path + ".tmp"
      os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if fmt == "tfrecord":
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      self._w = tf.io.TFRecordWriter(self.tmp)
    elif fmt == "array_record":
      from array_record.python import array_record_module as arm  # pylint: disable=g-import-not-at-top
      self._w = arm.ArrayRecordWriter(self.tmp, "group_size:1")
    else:
      raise ValueError(f"record format {fmt!r}: expected 'tfrecord' or 'array_record'")
    self.count = 0

  def write(self, serialized: bytes):
    self._w.write(serialized)
    self.count += 1

  def close(self):
    self._w.close()
    if not gpath.is_remote(self.path):
      os.replace(self.tmp, self.path)
      return
    try:
      gpath.upload(self.tmp, self.path)
    finally:
      os.remove(self.tmp)

  def abort(self):
    try:
      self._w.close()
    finally:
      if os.path.exists(self.tmp):
        os.remove(self.tmp)

  def __enter__(self):
    return self

  def __exit__(self, exc_type, *_):
    if exc_type is None:
      self.close()
    else:
      self.abort()


def shard_name(prefix: str, index: int, count: int, fmt: str) -> str:
  ext = "array_record" if fmt == "array_record" else "tfrecord"
  return f"{prefix}.{ext}-{index:05d}-of-{count:05d}"


def write_shards(records, prefix: str, num_shards: int, fmt: str = "tfrecord") -> list[str]:
  """Round-robin serialized records into `num_shards` atomic shards; returns the paths."""
  paths = [shard_name(prefix, i, num_shards, fmt) for i in range(num_shards)]
  writers = [ShardWriter(p, fmt) for p in paths]
  try:
    for i, r in enumerate(records):
      writers[i % num_shards].write(r if isinstance(r, bytes) else encode(r))
  except BaseException:
    for w in writers:
      w.abort()
    raise
  for w in writers:
    w.close()
  return paths
