"""Bulk classification (victr-classify on many videos) against its input pipeline alone.

  python benchmarks/bulk_classify.py [--videos 64] [--frames 128] [--width 320]
      [--height 240] [--clip tiny] [--batch 0] [--workers 0] [--repeats 3]

Writes --videos videos of the synthetic_actions world (PyAV, mpeg4 .mp4, --frames frames
of --width x --height, the square render widened like the 4:3 input pipeline benchmark)
and a random CLIP of preset --clip as a converted checkpoint, then times in this process,
on the same videos:
  pipeline  classify.decoded alone: the grain threads decoding each video's sampled frames
            and making its test views (predict.clip_frames), nothing else;
  bulk      classify.classify_many: the same decoding with the Predictor's steps (batches
            over the local devices) and the JSON lines written to a fresh file.
Both run once untimed first (threads, compiles, page cache); then --repeats rounds of
both, alternating, and the best of each. Prints videos/s of both and the ratio bulk /
pipeline: 1 means the model and the bookkeeping hide behind decoding (the goal on CPU is
at least 0.8 with the tiny CLIP; a larger --clip shows where the model starts to cost).
"""
import argparse
import os
import platform
import tempfile
import time

import numpy as np

from data_pipelines import synthetic, video_io
from victr_jax import classify, clip, predict


def make_videos(root: str, n: int, frames: int, width: int, height: int) -> list[str]:
  """n synthetic_actions videos (frames, height x width) in root/CLASS/."""
  rng = np.random.default_rng(0)
  paths = []
  for i in range(n):
    label = i % len(synthetic.classes())
    v = synthetic.render(label, rng, num_frames=frames, size=height)
    wide = np.concatenate([v.frames] * (-(-width // height)), axis=2)[:, :, :width]
    path = os.path.join(root, f"class_{label:02d}", f"video_{i:03d}.mp4")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    video_io.write_video(path, wide, fps=25)
    paths.append(path)
  return paths


def time_pipeline(pred, videos, workers: int, batch: int) -> float:
  """Seconds to decode every video's test views through classify.decoded."""
  t = time.perf_counter()
  for _, frames, _, err in classify.decoded(pred, videos, workers, 2 * batch):
    assert not err and frames is not None, err
  return time.perf_counter() - t


def time_bulk(pred, videos, out, workers: int, batch: int) -> float:
  """Seconds for classify_many to write every video's row to a fresh `out`."""
  if os.path.exists(out):
    os.remove(out)
  with open(os.devnull, "w") as quiet:
    t = time.perf_counter()
    res = classify.classify_many(pred, videos, out, 5, batch, workers, log=quiet)
    seconds = time.perf_counter() - t
  assert res["rows"] == len(videos) and res["errors"] == 0, res
  return seconds


def machine() -> str:
  model = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  import jax  # pylint: disable=g-import-not-at-top
  return (f"{model}, {os.cpu_count()} CPUs; jax {jax.__version__} on {jax.device_count()} x "
          f"{jax.devices()[0].device_kind}")


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--videos", type=int, default=64)
  p.add_argument("--frames", type=int, default=128)
  p.add_argument("--width", type=int, default=320)
  p.add_argument("--height", type=int, default=240)
  p.add_argument("--clip", default="tiny", help="CLIP preset of the random checkpoint")
  p.add_argument("--batch", type=int, default=0, help="videos per step (0: 4 per device)")
  p.add_argument("--workers", type=int, default=0, help="decoding threads (0: one per CPU, at most 16)")
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args()
  workers = args.workers or classify.default_workers()
  with tempfile.TemporaryDirectory() as tmp:
    t = time.perf_counter()
    videos = make_videos(os.path.join(tmp, "videos"), args.videos, args.frames, args.width,
                         args.height)
    cfg = clip.get_config(args.clip)
    _, params = clip.init(cfg)
    ckpt = clip.save_converted(cfg, params, os.path.join(tmp, "clip"))
    pred = predict.Predictor.from_checkpoint(ckpt, [c for c in synthetic.classes()])
    batch = -(-(args.batch or 4 * pred.num_devices) // pred.num_devices) * pred.num_devices
    print(f"machine: {machine()}")
    print(f"{args.videos} videos of {args.frames} frames {args.width}x{args.height} (mpeg4), "
          f"made in {time.perf_counter() - t:.0f}s; CLIP {args.clip} (random), "
          f"{len(synthetic.classes())} labels, {pred.views.num_frames} frames x "
          f"{pred.views.num_test_clips * pred.views.num_test_crops} view(s) at "
          f"{pred.views.image_size}px; batch {batch}, {workers} decoding threads")
    out = os.path.join(tmp, "preds.jsonl")
    time_pipeline(pred, videos, workers, batch)  # untimed: threads, page cache
    time_bulk(pred, videos, out, workers, batch)  # untimed: compiles
    pipe, bulk = [], []
    for _ in range(args.repeats):
      pipe.append(time_pipeline(pred, videos, workers, batch))
      bulk.append(time_bulk(pred, videos, out, workers, batch))
    rate_pipe, rate_bulk = args.videos / min(pipe), args.videos / min(bulk)
    print(f"{'input pipeline alone':28s} {rate_pipe:8.2f} videos/s")
    print(f"{'bulk classification':28s} {rate_bulk:8.2f} videos/s")
    print(f"ratio bulk / pipeline: {rate_bulk / rate_pipe:.2f} (goal >= 0.8 on CPU)")


if __name__ == "__main__":
  main()
