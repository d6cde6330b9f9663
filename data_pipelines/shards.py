"""victr-prepare's shards: planning a split into shards, writing them, resuming after a kill.

Item i of a split's sorted item list goes to shard i % N, so reruns make the same shards.
A finished shard has a sidecar, sidecars/<shard>.json, holding the fingerprint of the
settings and items it was written with (plus its counts and failures); a rerun skips the
shards whose sidecar matches (`plan_split`) and rewrites the rest. Shards are written whole
(`run_shard`, through records.ShardWriter's temporary file), in this process or in a pool
of worker processes, with one progress bar over all videos (`execute`).

`settings` (the options that change the records' contents): short_side, fps, jpeg_quality,
max_frames and format ('tfrecord' or 'array_record').
"""
import concurrent.futures
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import queue
import re
from typing import Callable, Optional

from data_pipelines import fileio, gpath, records
from data_pipelines.layout_io import PrepareError
from data_pipelines.layouts import VideoItem

SIDECAR_DIR = "sidecars"


def default_num_shards(n: int) -> int:
  """About sqrt(n) shards, in [1, 1024]."""
  return int(min(1024, max(1, math.ceil(math.sqrt(n)))))


def sidecar_path(shard: str) -> str:
  """sidecars/<shard>.json next to the shard (kept out of `<split>.tfrecord*` globs)."""
  out, name = os.path.split(shard)
  return os.path.join(out, SIDECAR_DIR, name + ".json")


def fingerprint(settings: dict, items: list[VideoItem]) -> str:
  """Hash of the settings and the items of a shard: a sidecar is only valid for these."""
  blob = json.dumps([settings, [dataclasses.asdict(it) for it in items]], sort_keys=True)
  return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def shard_done(path: str, fp: str) -> bool:
  """Whether a shard is in place with its sidecar for the same settings and items."""
  side = fileio.read_json_or_none(sidecar_path(path)) if gpath.isfile(path) else None
  return bool(side) and side.get("fingerprint") == fp


def clean_split(out: str, split: str, fmt: str, num_shards: int) -> None:
  """Removes stale .tmp files of a split; refuses shards of another shard count."""
  ext = "array_record" if fmt == "array_record" else "tfrecord"
  pattern = re.compile(rf"{re.escape(split)}\.{ext}-\d{{5}}-of-(\d{{5}})(\.tmp)?$")
  for name in sorted(gpath.listdir(out) if gpath.isdir(out) else []):
    m = pattern.match(name)
    if not m:
      continue
    if m.group(2):
      gpath.remove(os.path.join(out, name))
    elif int(m.group(1)) != num_shards:
      raise PrepareError(f"{os.path.join(out, name)}: a shard of an earlier run with "
                         f"{int(m.group(1))} shards (now {num_shards}); remove the old "
                         f"{split} shards or choose another --out")


def plan_split(out: str, split: str, items: list[VideoItem], settings: dict,
               num_shards: int) -> tuple[list[str], list[dict]]:
  """Shard paths of a split and the tasks for those not done yet (item i -> shard i % N).

  num_shards: 0 for default_num_shards(len(items)).
  """
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


def run_shard(task: dict, progress: Callable[[int], None] = lambda k: None) -> dict:
  """Writes one whole shard, then its sidecar; returns the sidecar's contents.

  A video that fails to decode is listed in the sidecar's failures, never fatal.
  """
  counts, failures, written, frames = {}, [], 0, 0
  settings = task["settings"]
  with records.ShardWriter(task["path"], settings["format"]) as writer:
    for item in task["items"]:
      try:
        rec = item.to_record(short_side=settings["short_side"], fps=settings["fps"],
                             quality=settings["jpeg_quality"], max_frames=settings["max_frames"])
      except Exception as e:  # pylint: disable=broad-except
        failures.append({"path": item.path, "video_id": item.video_id,
                         "error": f"{type(e).__name__}: {e}"})
      else:
        writer.write(records.encode(rec))
        written, frames = written + 1, frames + len(rec.frames)
        for label in item.labels:
          counts[str(label)] = counts.get(str(label), 0) + 1
      progress(1)
  side = {"shard": os.path.basename(task["path"]), "fingerprint": task["fingerprint"],
          "items": len(task["items"]), "written": written, "frames": frames,
          "class_counts": counts, "failures": failures}
  fileio.write_json(sidecar_path(task["path"]), side)
  return side


def read_sidecar(shard: str) -> dict:
  """A shard's sidecar ({} when missing or unreadable)."""
  return fileio.read_json_or_none(sidecar_path(shard)) or {}


# ----------------------------------------------------------------------------- workers

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
