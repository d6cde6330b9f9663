"""victr-classify INPUT --checkpoint DIR --labels "a,b,c": rank free-form labels for videos.

INPUT is one video (prints the top classes with probabilities, or --json), or many: a
folder (searched recursively for .mp4 .avi .mkv .webm .mov .m4v .mpg .mpeg), a glob
('clips/**/*.mp4', quoted) or @list.txt (one path per line, relative to the current
folder; blank lines and '#' comments skipped). Many videos write one JSON line each to
--out: {"video", "model", "frames", "views", "frame_indices", "predictions": [{"label",
"probability"}, ...top_k]}, or {"video", "error"} for a video that cannot be read, and
the run goes on. The run resumes: videos already in --out (predictions or errors) are
skipped, so a rerun adds nothing; a row cut short by a kill is dropped and redone.

DIR is a converted CLIP checkpoint (victr-convert-clip output: zero-shot CLIP with frame
averaging, one centre view) or a trained work directory (config.json + checkpoints/: the
model it trained, VicTR or a baseline, on the test views its evaluation computes,
combined as the evaluation combines them). Scoring is victr_jax/predict.py's Predictor.
DIR, the --labels @file and the videos may be local or gs://.

Many videos are decoded by grain (MapDataset.map with ReadOptions(num_threads=--workers),
the machinery of pipeline.eval_dataset): ordered, prefetched, in threads of this process,
which overlap the model's steps; threads because PyAV's decoding and PIL's resizing run
in C with the GIL released, and they share the decoded views without pickling them.
Batches of --batch videos are split over this process's devices, the last one padded.
Progress (videos done / total, videos/s, ETA) goes to stderr every few seconds.

Exit status: 0 when the ranking or the rows were written (error rows included); 2 for a
usage error (missing or damaged checkpoint, empty labels, no videos found, an unreadable
single video, an --out that is not this tool's output), printed as one line.
"""
import argparse
import glob as _glob
import json
import os
import sys
import time

from victr_jax import console

console.quiet_environment()  # before jax is imported

import numpy as np  # noqa: E402

from data_pipelines import gpath  # noqa: E402
from victr_jax import predict  # noqa: E402

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")
PROGRESS_SECONDS = 5.0
MAX_DEFAULT_WORKERS = 16  # grain's own default; each decoder also runs FFmpeg's threads


def default_workers() -> int:
  """Decoding threads when --workers is 0: one per CPU, at most MAX_DEFAULT_WORKERS."""
  return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS))


def _labels(spec: str) -> list[str]:
  if spec.startswith("@"):
    names = [l.strip() for l in gpath.read_text(spec[1:]).splitlines()]
  else:
    names = [l.strip() for l in spec.split(",")]
  names = [n for n in names if n]
  if not names:
    raise ValueError("--labels is empty: give comma-separated class names or @file")
  return names


def _nonfinite(out: predict.Prediction, b: int) -> str:
  """'' when video b's scores are finite, else what is wrong with them."""
  logits = out.logits[b]
  if np.isfinite(logits).all() and np.isfinite(out.probs[b]).all():
    return ""
  return (f"the model's scores are not finite ({int(np.sum(~np.isfinite(logits)))} of "
          f"{logits.size} logits NaN or inf): the checkpoint is damaged or diverged")


def _row(pred: predict.Predictor, video: str, idx, out: predict.Prediction, b: int,
         top_k: int) -> dict:
  """Video b's result: {'video', 'model', 'frames', 'views', 'frame_indices',
  'predictions': [{'label', 'probability'}] (top_k, best first)}."""
  return {"video": video, "model": pred.description, "frames": int(pred.views.num_frames),
          "views": int(out.logits.shape[1]), "frame_indices": np.asarray(idx).tolist(),
          "predictions": out.ranked(pred.names, b, top_k)}


def predict_video(pred: predict.Predictor, video: str, top_k: int = 5) -> dict:
  """One video's result (_row) with `pred`. Raises ValueError on an unreadable video or
  scores that are not finite."""
  frames, idx = predict.clip_frames(video, pred.views)  # (V, T, S, S, 3)
  out = pred(frames[None])
  bad = _nonfinite(out, 0)
  if bad:
    raise ValueError(f"{video}: {bad}")
  return _row(pred, video, idx, out, 0, top_k)


def classify(video, checkpoint, labels, aux=None, top_k=5, num_frames=None,
             template=predict.DEFAULT_TEMPLATE) -> dict:
  """Ranks `labels` ("a,b,c" or @file) for a video file with the model of `checkpoint`
  (predict.Predictor.from_checkpoint): V test views of T frames scored (V, n) and
  combined like the evaluation. Raises ValueError on a bad input, or when the model's
  weights or scores are not finite (a damaged checkpoint). Returns _row's dict."""
  pred = predict.Predictor.from_checkpoint(checkpoint, _labels(labels), aux_vocab=aux,
                                           num_frames=num_frames, template=template)
  return predict_video(pred, video, top_k)


def find_videos(spec: str) -> tuple[list[str], bool]:
  """(videos, whether `spec` names a single video). spec: @list file, folder (recursive,
  VIDEO_EXTS), glob (its files), or one video path. Duplicates are dropped."""
  if spec.startswith("@"):
    lines = (l.strip() for l in gpath.read_text(spec[1:]).splitlines())
    found = [l for l in lines if l and not l.startswith("#")]
  elif gpath.isdir(spec):
    found = sorted(os.path.join(root, f) for root, _, files in gpath.walk(spec)
                   for f in files if f.lower().endswith(VIDEO_EXTS) and not f.startswith("."))
  elif not gpath.isfile(spec) and any(c in spec for c in "*?["):
    found = [p for p in _glob_files(spec) if gpath.isfile(p)]
  else:
    return [spec], True
  found = list(dict.fromkeys(p if gpath.is_remote(p) else os.path.normpath(p) for p in found))
  if not found:
    raise ValueError(f"{spec}: no videos found"
                     + (f" (extensions {' '.join(VIDEO_EXTS)})" if gpath.isdir(spec) else ""))
  return found, False


def _glob_files(pattern: str) -> list[str]:
  """Sorted matches of a glob; '**' recurses in local folders (gs:// refuses it)."""
  if not gpath.is_remote(pattern):
    return sorted(_glob.glob(pattern, recursive=True))
  try:
    return gpath.glob(pattern)
  except NotImplementedError as e:
    raise ValueError(f"{pattern}: {e}") from None


def done_videos(out: str) -> set[str]:
  """Videos with a row in `out` (none when it does not exist). A last row cut short by a
  kill is removed from the file. Raises ValueError when a line is not such a row."""
  if not gpath.exists(out):
    return set()
  text = gpath.read_text(out)
  if text and not text.endswith("\n"):
    text = text[:text.rfind("\n") + 1]
    gpath.atomic_write(out, text)
  done = set()
  for k, line in enumerate(text.splitlines(), 1):
    try:
      done.add(json.loads(line)["video"])
    except (ValueError, KeyError, TypeError):
      raise ValueError(f"--out {out}: line {k} is not a victr-classify row; give a new file "
                       "or one an earlier run wrote") from None
  return done


def decoded(pred: predict.Predictor, videos: list[str], workers: int, prefetch: int):
  """(video, frames (V, T, S, S, 3) or None, indices or None, error '' or text) per
  video, in order, decoded by `workers` grain threads `prefetch` videos ahead."""
  import grain  # pylint: disable=g-import-not-at-top

  def load(video):
    try:
      frames, idx = predict.clip_frames(video, pred.views)
      return video, frames, idx, ""
    except Exception as e:  # pylint: disable=broad-except
      return video, None, None, str(e) if isinstance(e, ValueError) else (
          f"{type(e).__name__}: {e}")

  ds = grain.MapDataset.source(videos).map(load)
  return ds.to_iter_dataset(grain.ReadOptions(num_threads=max(1, workers),
                                              prefetch_buffer_size=max(1, prefetch)))


class Progress:
  """Videos done / total, videos/s and ETA on stderr, at most every PROGRESS_SECONDS."""

  def __init__(self, total: int, stream=None):
    self.total, self.done, self.errors = total, 0, 0
    self.t0 = self.last = time.time()
    self.stream = sys.stderr if stream is None else stream

  def rate(self) -> float:
    return self.done / max(time.time() - self.t0, 1e-9)

  def add(self, rows: int, errors: int) -> None:
    self.done, self.errors = self.done + rows, self.errors + errors
    if time.time() - self.last >= PROGRESS_SECONDS and self.done < self.total:
      self.last = time.time()
      eta = (self.total - self.done) / max(self.rate(), 1e-9)
      print(f"victr-classify: {self.done}/{self.total} videos ({self.errors} errors), "
            f"{self.rate():.1f} videos/s, ETA {eta:.0f}s", file=self.stream, flush=True)


def _batch_rows(pred, items, top_k, pad_to) -> list[dict]:
  """Rows of decoded items (decoded's tuples) in order, the readable ones scored at once."""
  ok = [k for k, it in enumerate(items) if not it[3]]
  out = pred(np.stack([items[k][1] for k in ok]), pad_to=pad_to) if ok else None
  rows = []
  for k, (video, _, idx, err) in enumerate(items):
    if not err:
      b = ok.index(k)
      err = _nonfinite(out, b)
      if not err:
        rows.append(_row(pred, video, idx, out, b, top_k))
        continue
    rows.append({"video": video, "error": err})
  return rows


def classify_many(pred: predict.Predictor, videos: list[str], out: str, top_k: int = 5,
                  batch: int = 0, workers: int = 0, log=None) -> dict:
  """Appends a row per video of `videos` not yet in `out` (done_videos), scored in
  batches of `batch` videos (0: 4 per device; rounded up to a multiple of the devices)
  decoded by `workers` threads (0: default_workers()); progress on `log` (default stderr).
  Returns {'rows', 'errors', 'skipped', 'seconds', 'videos_per_s', 'interrupted'}."""
  done = done_videos(out)
  todo = [v for v in videos if v not in done]
  batch = batch or 4 * pred.num_devices
  batch = -(-batch // pred.num_devices) * pred.num_devices
  progress = Progress(len(todo), log)
  print(f"victr-classify: {len(videos)} videos, {len(videos) - len(todo)} already in {out}; "
        f"{pred.description} on {pred.num_devices} device(s), batch {batch}",
        file=progress.stream, flush=True)
  if todo and not gpath.is_remote(out) and os.path.dirname(out):
    os.makedirs(os.path.dirname(out), exist_ok=True)
  items, interrupted = [], False
  try:
    for item in decoded(pred, todo, workers or default_workers(), 2 * batch):
      items.append(item)
      if sum(1 for it in items if not it[3]) == batch or len(items) >= 4 * batch:
        _write(out, _batch_rows(pred, items, top_k, batch), progress)
        items = []
    if items:
      _write(out, _batch_rows(pred, items, top_k, batch), progress)
  except KeyboardInterrupt:
    interrupted = True
  return {"rows": progress.done, "errors": progress.errors, "skipped": len(videos) - len(todo),
          "seconds": round(time.time() - progress.t0, 2), "videos_per_s": progress.rate(),
          "interrupted": interrupted}


def _write(out: str, rows: list[dict], progress: Progress) -> None:
  gpath.append_text(out, "".join(json.dumps(r) + "\n" for r in rows))
  progress.add(len(rows), sum(1 for r in rows if "error" in r))


def _print_ranking(res: dict) -> None:
  views = f" x {res['views']} views" if res["views"] > 1 else ""
  print(f"{res['video']} ({res['model']}, {res['frames']} frames{views}):")
  for i, r in enumerate(res["predictions"], 1):
    print(f"  {i}. {r['label']:40s} {r['probability']:.3f}")


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="victr-classify", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("video", help="a video, a folder, a glob or @list.txt")
  p.add_argument("--checkpoint", required=True, help="converted CLIP dir or trained workdir")
  p.add_argument("--labels", required=True, help='"a,b,c" or @file (one label per line)')
  p.add_argument("--aux", default=None, help="auxiliary vocabulary dir (VicTR work dirs)")
  p.add_argument("--top_k", type=int, default=5)
  p.add_argument("--frames", type=int, default=None, help="default: the model's")
  p.add_argument("--template", default=predict.DEFAULT_TEMPLATE,
                 help="class prompt for CLIP checkpoints ('{}' = label; the transfer configs' "
                 "prompt); a work directory uses its own config's")
  p.add_argument("--json", action="store_true", help="print JSON (one video)")
  p.add_argument("--out", default="", help="JSON lines file for many videos (resumed)")
  p.add_argument("--batch", type=int, default=0, help="videos per step (0: 4 per device)")
  p.add_argument("--workers", type=int, default=0,
                 help="decoding threads (0: one per CPU, at most 16)")
  return p


def _run(args) -> int:
  videos, single = find_videos(args.video)
  if not single and not args.out:
    raise ValueError(f"{args.video} names many videos: give --out FILE for their JSON lines")
  if args.out:
    done_videos(args.out)  # an --out that is not this tool's output stops before the model loads
  pred = predict.Predictor.from_checkpoint(args.checkpoint, _labels(args.labels),
                                           aux_vocab=args.aux, num_frames=args.frames,
                                           template=args.template)
  if single and not args.out:
    res = predict_video(pred, videos[0], args.top_k)
    if args.json:
      print(json.dumps(res))
    else:
      _print_ranking(res)
    return 0
  res = classify_many(pred, videos, args.out, args.top_k, args.batch, args.workers)
  if res["interrupted"]:
    print(f"victr-classify: interrupted after {res['rows']} rows; run again to resume",
          file=sys.stderr)
    return 130
  print(f"victr-classify: wrote {res['rows']} rows ({res['errors']} of them errors) to "
        f"{args.out} in {res['seconds']:.1f}s ({res['videos_per_s']:.1f} videos/s)",
        file=sys.stderr)
  return 0


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  console.quiet_logging()
  try:
    return _run(args)
  except (ValueError, OSError) as e:
    print(f"victr-classify: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
