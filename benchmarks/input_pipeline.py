"""Input pipeline throughput: clips per second per core, train and test views.

  python benchmarks/input_pipeline.py [--frames 8 32] [--size 224] [--threads 1]

Writes synthetic_actions records at a realistic resolution (short side 256, 32+ frames),
then times the grain pipeline (JPEG decode of the sampled frames, augmentation or test
views, normalisation, batching) with `--threads` reader threads (1 = per core). Also
prints a JPEG-decode-only rate as the reference ceiling measured in the same process.
"""
import argparse
import os
import tempfile
import time

import ml_collections
import numpy as np

from data_pipelines import pipeline, records, synthetic, video_io


def make_records(out_dir, n, frames, size):
  rng = np.random.default_rng(0)
  recs = []
  for i in range(n):
    v = synthetic.render(i % len(synthetic.classes()), rng, num_frames=frames, size=size)
    wide = np.concatenate([v.frames, v.frames[:, :, : size // 3]], axis=2)  # 4:3 like video
    recs.append(records.VideoRecord([video_io.encode_jpeg(f) for f in wide], [v.label]))
  return records.write_shards(recs, os.path.join(out_dir, "bench"), 2)


def rate(it, batches, batch):
  next(it)  # warm-up (thread start, first decode)
  t = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * batch / (time.perf_counter() - t)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--frames", type=int, nargs="+", default=[8, 32])
  p.add_argument("--size", type=int, default=224)
  p.add_argument("--threads", type=int, default=1)
  p.add_argument("--videos", type=int, default=24)
  p.add_argument("--batches", type=int, default=4)
  args = p.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    paths = make_records(tmp, args.videos, max(args.frames) * 2, 256)
    src = records.RecordSource(paths)
    rec = records.decode(src[0])
    t = time.perf_counter()
    for f in rec.frames[:32]:
      video_io.decode_jpeg(f)
    jpeg_rate = 32 / (time.perf_counter() - t)
    h, w = video_io.decode_jpeg(rec.frames[0]).shape[:2]
    print(f"records: {args.videos} videos of {len(rec.frames)} frames {w}x{h} JPEG; "
          f"{args.threads} thread(s); JPEG decode alone: {jpeg_rate:.0f} frames/s")
    print(f"{'view':28s} {'T':>3s} {'clips/s':>9s} {'clips/s/core':>13s} {'frames/s':>9s}")
    for t_ in args.frames:
      for name, kw in (("train (random resized crop)", dict(num_test_clips=1, num_test_crops=1)),
                       ("test 1 clip x 1 crop", dict(num_test_clips=1, num_test_crops=1)),
                       ("test 4 clips x 3 crops", dict(num_test_clips=4, num_test_crops=3))):
        cfg = ml_collections.ConfigDict(dict(
            num_frames=t_, sampling="stride", stride=2, image_size=args.size,
            train_aug="random_resized_crop", crop_scale=(0.4, 1.0), flip=True, multi_label=False,
            num_classes=18, batch_size=4, eval_batch_size=4, seed=0, num_threads=args.threads, **kw))
        if name.startswith("train"):
          it = iter(pipeline.train_dataset(src, cfg))
        else:
          it = _cycle(src, cfg)
        r = rate(it, args.batches, 4)
        views = cfg.num_test_clips * cfg.num_test_crops if not name.startswith("train") else 1
        print(f"{name:28s} {t_:3d} {r:9.1f} {r / args.threads:13.1f} {r * t_ * views:9.0f}")


def _cycle(src, cfg):
  while True:
    yield from pipeline.eval_dataset(src, cfg)


if __name__ == "__main__":
  main()
