"""Input pipeline: records (or TFDS) -> per-host numpy batches -> global jax.Arrays.

Built on grain's MapDataset over a random-access source, so an iterator's state is a
small dict (`get_state` / `set_state`) and a restored iterator continues with exactly the
batches an uninterrupted one would have given.

Train batches: {'frames': (b, T, S, S, 3) float32 normalised, 'label': (b,) int32 or
(b, C) float32 multi-hot}. Each host reads its own slice of the records (record i goes to
process i % process_count), shuffled with the seed, repeated forever; a record whose video
is corrupt is skipped and counted in the `Stats` passed in (the trainer reports it with
the train metrics).

Eval batches: {'frames': (b, V, T, S, S, 3) with V = num_test_clips x num_test_crops views,
'label', 'mask' (b,), 'index' (b,) record index or -1}. Hosts see disjoint strided slices,
padded with masked entries to the same number of batches, so over all hosts every test
video counts exactly once; a corrupt video gets mask 0 and is reported in `corrupt`.
"""
import dataclasses
import math
import threading
from typing import Any, Optional

import grain
import numpy as np

from data_pipelines import records, video_io, video_ops


@dataclasses.dataclass
class Stats:
  """Corrupt records met by this process (training skips them; eval reports them)."""
  corrupt: int = 0
  where: list = dataclasses.field(default_factory=list)
  _lock: Any = dataclasses.field(default_factory=threading.Lock, repr=False)

  def add(self, where: str, err: Exception):
    with self._lock:
      self.corrupt += 1
      if len(self.where) < 100:
        self.where.append(f"{where}: {err}")


def _as_source(pattern_or_source):
  """A record-file pattern (comma-separated globs) or an existing random-access source."""
  if isinstance(pattern_or_source, (str, list, tuple)):
    return records.RecordSource(pattern_or_source)
  return pattern_or_source


def _labels(rec: records.VideoRecord, cfg) -> np.ndarray:
  if cfg.multi_label:
    y = np.zeros((cfg.num_classes,), np.float32)
    y[[l for l in rec.labels if 0 <= l < cfg.num_classes]] = 1.0
    return y
  if not rec.labels:
    raise ValueError("record has no label")
  return np.int32(rec.labels[0])


def _decode_frames(rec: records.VideoRecord, idx: np.ndarray) -> list[np.ndarray]:
  cache = {i: video_io.decode_jpeg(rec.frames[i]) for i in sorted(set(idx.tolist()))}
  return [cache[i] for i in idx.tolist()]


def train_example(item, rng: np.random.Generator, cfg) -> dict:
  """One training clip (from serialized bytes or a VideoRecord): sampled frames, spatial
  augmentation, flip, colour jitter and greyscale (each with its probability, one draw per
  clip), normalisation."""
  rec = records.as_record(item)
  idx = video_ops.sample_indices(len(rec.frames), cfg.num_frames, mode=cfg.sampling,
                                 stride=cfg.stride, rng=rng)
  frames = _decode_frames(rec, idx)
  if cfg.train_aug == "random_resized_crop":
    clip = video_ops.random_resized_crop(frames, cfg.image_size, rng, scale=tuple(cfg.crop_scale))
  elif cfg.train_aug == "scale_jitter":
    clip = video_ops.scale_jitter_crop(frames, cfg.image_size, rng)
  else:
    clip = video_ops.test_crops(frames, cfg.image_size, 1)[0]
  if cfg.flip and rng.random() < 0.5:
    clip = clip[:, :, ::-1]
  p_jitter, p_grey = cfg.get("color_jitter", 0.0), cfg.get("grayscale", 0.0)
  if p_jitter > 0 and rng.random() < p_jitter:  # no draws when off: old streams unchanged
    clip = video_ops.color_jitter(clip, rng)
  if p_grey > 0 and rng.random() < p_grey:
    clip = video_ops.grayscale(clip)
  return {"frames": video_ops.normalize(clip), "label": _labels(rec, cfg)}


def eval_views(item, cfg) -> dict:
  """All test views of one video: (V, T, S, S, 3), V = clips x crops (clip-major); short
  side resized to test_resize (0: S) before the crops."""
  rec = records.as_record(item)
  views = []
  for c in range(cfg.num_test_clips):
    idx = video_ops.sample_indices(len(rec.frames), cfg.num_frames, mode=cfg.sampling,
                                   stride=cfg.stride, view=c, num_views=cfg.num_test_clips)
    views.append(video_ops.test_crops(_decode_frames(rec, idx), cfg.image_size,
                                      cfg.num_test_crops, cfg.get("test_resize", 0)))
  return {"frames": video_ops.normalize(np.concatenate(views)), "label": _labels(rec, cfg)}


def train_dataset(source, cfg, process_index: int = 0, process_count: int = 1,
                  stats: Optional[Stats] = None) -> grain.IterDataset:
  """Infinite, shuffled per-host batches of `cfg.batch_size // process_count` clips;
  corrupt clips are skipped and counted in `stats`."""
  source = _as_source(source)
  stats = Stats() if stats is None else stats
  local = _local_batch(cfg.batch_size, process_count)
  ds = grain.MapDataset.range(len(source))[process_index::process_count]
  if len(ds) == 0:
    raise ValueError(f"process {process_index} of {process_count} has no training records")

  def load(i, rng):
    try:
      return train_example(source[i], rng, cfg)
    except ValueError as e:
      stats.add(source.where(i), e)
      return None  # grain drops Nones: the clip is skipped

  ds = ds.shuffle(seed=cfg.seed).repeat(None).random_map(load, seed=cfg.seed)
  opts = grain.ReadOptions(num_threads=cfg.num_threads, prefetch_buffer_size=2 * local)
  return ds.to_iter_dataset(opts).batch(local, drop_remainder=True)


def eval_indices(n: int, local_batch: int, process_index: int, process_count: int):
  """This host's record indices, strided, padded with -1 to the common batch count."""
  per_host = math.ceil(n / process_count)
  num_batches = max(1, math.ceil(per_host / local_batch))
  mine = list(range(process_index, n, process_count))
  return mine + [-1] * (num_batches * local_batch - len(mine))


def eval_dataset(source, cfg, process_index: int = 0, process_count: int = 1,
                 stats: Optional[Stats] = None):
  """Finite per-host eval batches covering every record exactly once over all hosts."""
  source = _as_source(source)
  local = _local_batch(cfg.eval_batch_size, process_count)
  idx = eval_indices(len(source), local, process_index, process_count)
  views = cfg.num_test_clips * cfg.num_test_crops
  s = cfg.image_size
  blank = {"frames": np.zeros((views, cfg.num_frames, s, s, 3), np.float32),
           "label": (np.zeros((cfg.num_classes,), np.float32) if cfg.multi_label
                     else np.int32(0))}

  def load(i):
    if i < 0:
      return dict(blank, mask=np.float32(0), index=np.int64(-1), corrupt=np.int32(0))
    try:
      return dict(eval_views(source[i], cfg), mask=np.float32(1), index=np.int64(i),
                  corrupt=np.int32(0))
    except ValueError as e:
      if stats is not None:
        stats.add(source.where(i), e)
      return dict(blank, mask=np.float32(0), index=np.int64(i), corrupt=np.int32(1))

  ds = grain.MapDataset.source(idx).map(load).batch(local)
  return ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.num_threads,
                                              prefetch_buffer_size=2 * local))


def padded_eval_batch(eval_batch_size: int, batch_devices: int, process_count: int = 1) -> int:
  """The eval batch rounded up to a multiple of the data x fsdp devices and the processes.

  The extra entries are padding like the last batch's (mask 0, index -1, `eval_indices`),
  so any eval_batch_size runs on any slice and every video still counts once.
  """
  step = math.lcm(int(batch_devices), int(process_count))
  return -(-max(int(eval_batch_size), 1) // step) * step


def _local_batch(global_batch: int, process_count: int) -> int:
  if global_batch % process_count:
    raise ValueError(f"batch size {global_batch} is not divisible by the {process_count} "
                     "processes")
  return global_batch // process_count


def to_global(batch: dict, sharding) -> dict:
  """Per-host numpy batch -> global jax.Arrays laid out by `sharding` (batch axis 0)."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
