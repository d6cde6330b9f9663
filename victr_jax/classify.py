"""victr-classify VIDEO --checkpoint DIR --labels "a,b,c": rank free-form labels for a video.

DIR is either a converted CLIP checkpoint (victr-convert-clip output: zero-shot CLIP with
frame averaging) or a trained work directory (config.json + checkpoints/: the model it
trained, VicTR or a baseline). Prints the top classes with probabilities, or JSON. DIR, the
--labels @file and VIDEO may be local or gs:// (a gs:// video is copied to a temporary file
for PyAV).

Frames: a work directory's model sees the test views its evaluation computes from its
config.data (sampling mode and stride, frames, test_resize, image size, all test clips and
crops, probabilities averaged over the views); a CLIP checkpoint one centre view of
segment-sampled frames. Frames are indexed at the video's own rate, as in records
prepared with the default `--fps 0` (with `--fps F`, a stride counts F-rate frames), and
only the sampled frames are decoded into memory, so an hour-long video is fine.
A model whose scores are NaN or inf (a damaged checkpoint) is an error, not a ranking.
"""
import argparse
import json
import os
import sys
from typing import Optional

import ml_collections
import numpy as np

from data_pipelines import gpath, video_io, video_ops


def _labels(spec: str) -> list[str]:
  if spec.startswith("@"):
    names = [l.strip() for l in gpath.read_text(spec[1:]).splitlines()]
  else:
    names = [l.strip() for l in spec.split(",")]
  names = [n for n in names if n]
  if not names:
    raise ValueError("--labels is empty: give comma-separated class names or @file")
  return names


def views_config(config=None, num_frames: Optional[int] = None,
                     image_size: int = 224) -> ml_collections.ConfigDict:
  """The test-view fields of a data config, as pipeline.eval_views reads them.

  config: a work directory's config (its evaluation's sampling mode, stride, frames,
  image size, test_resize, test clips and crops), or None for a converted CLIP checkpoint
  (one centre view: `num_frames` (default 8) segment frames, short side to image_size,
  centre crop). num_frames, when given, overrides the frame count.
  """
  if config is None:
    return ml_collections.ConfigDict(dict(
        num_frames=num_frames or 8, sampling="segments", stride=1, image_size=image_size,
        test_resize=0, num_test_clips=1, num_test_crops=1))
  d = config.data
  return ml_collections.ConfigDict(dict(
      num_frames=num_frames or d.num_frames, sampling=d.sampling, stride=d.stride,
      image_size=d.image_size, test_resize=d.get("test_resize", 0),
      num_test_clips=d.get("num_test_clips", 1), num_test_crops=d.get("num_test_crops", 1)))


def view_indices(n: int, data_cfg) -> np.ndarray:
  """(num_test_clips, T) frame indices into a video of n frames: test clip c is the view c
  of num_test_clips that pipeline.eval_views samples."""
  return np.stack([video_ops.sample_indices(n, data_cfg.num_frames, mode=data_cfg.sampling,
                                            stride=data_cfg.stride, view=c,
                                            num_views=data_cfg.num_test_clips)
                   for c in range(data_cfg.num_test_clips)])


def clip_frames(video: str, data_cfg) -> tuple[np.ndarray, np.ndarray]:
  """A video file's test views as data_cfg's evaluation makes them from its record.

  Returns (frames (V, T, S, S, 3) float32 CLIP-normalised, V = clips x crops clip-major
  like pipeline.eval_views; indices (clips, T) of the frames used). Only the sampled
  frames are decoded into memory (video_io.decode_sampled), however long the video.
  """
  if not gpath.isfile(video):
    raise ValueError(f"{video}: no such video file")
  with gpath.local_copy(video) as local:  # PyAV decodes local files: a gs:// video is copied
    frames, idx = video_io.decode_sampled(local, lambda n: view_indices(n, data_cfg))
  t = data_cfg.num_frames
  views = [video_ops.test_crops(frames[c * t:(c + 1) * t], data_cfg.image_size,
                                data_cfg.num_test_crops, data_cfg.test_resize)
           for c in range(data_cfg.num_test_clips)]
  return video_ops.normalize(np.concatenate(views)), idx


def load_model(checkpoint: str):
  """-> (model, params, config or None, description)."""
  from victr_jax import clip, models  # pylint: disable=g-import-not-at-top
  if not gpath.exists(checkpoint):
    raise ValueError(f"--checkpoint {checkpoint}: no such file or directory")
  if gpath.exists(os.path.join(checkpoint, "config.json")) and gpath.isdir(
      os.path.join(checkpoint, "checkpoints")):
    from victr_jax import config_lib  # pylint: disable=g-import-not-at-top
    config = config_lib.read_workdir_config(checkpoint)  # older layouts migrated
    model = models.build_model(config.model)
    from victr_jax import checkpointing  # pylint: disable=g-import-not-at-top
    step, state, _ = checkpointing.restore_latest(checkpoint)
    params = state["params"]
    return model, params, config, f"{config.model.name} work directory, step {step}"
  clip_cfg, clip_params = clip.load_params(checkpoint)
  return (models.zero_shot_model(clip_cfg=clip_cfg), {"clip": clip_params}, None,
          "CLIP zero-shot, frame averaging")


def classify(video, checkpoint, labels, aux=None, top_k=5, num_frames=None,
             template="a photo of a {}.") -> dict:
  """Ranks `labels` ("a,b,c" or @file) for a video file with the model of `checkpoint`.

  A work directory's model sees the test views its evaluation would (views_config):
  V = num_test_clips x num_test_crops views of T frames, scored (V, n) and averaged as
  softmax probabilities over the views, like the evaluation's 'mean_probs'. Raises
  ValueError on a bad input, or when the model's scores are not finite (NaN or inf: a
  damaged checkpoint).
  Returns {'video', 'model', 'frames': T, 'views': V, 'frame_indices': (clips, T) list,
  'predictions': [{'label', 'probability'}] (top_k, best first)}.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from victr_jax import data, metrics  # pylint: disable=g-import-not-at-top
  names = _labels(labels)
  model, params, config, what = load_model(checkpoint)
  if config is not None:
    template = config.prompt_template
  dcfg = views_config(config, num_frames, model.clip_cfg.image_size)
  frames, idx = clip_frames(video, dcfg)  # (V, T, S, S, 3)
  tokens = data.class_tokens(names, template)
  aux_tokens = aux_cats = None
  if config is not None and config.model.name == "victr":
    if aux:
      config.aux_vocab = aux
    aux_tokens, aux_cats, _ = data.aux_prompts(config)
  out = jax.jit(model.apply)({"params": params}, jnp.asarray(frames), jnp.asarray(tokens),
                             None if aux_tokens is None else jnp.asarray(aux_tokens),
                             None if aux_cats is None else jnp.asarray(aux_cats))
  logits = np.asarray(out["logits"], np.float32)  # (V, n)
  probs = np.asarray(metrics.aggregate_views(logits[None], "mean_probs"))[0]  # (n,)
  if not (np.isfinite(logits).all() and np.isfinite(probs).all()):
    raise ValueError(f"--checkpoint {checkpoint}: the model's scores for {video} are not "
                     f"finite ({int(np.sum(~np.isfinite(logits)))} of {logits.size} logits "
                     "NaN or inf): the checkpoint is damaged or diverged")
  order = np.argsort(-probs, kind="stable")[:top_k]
  return {"video": video, "model": what, "frames": int(dcfg.num_frames),
          "views": int(frames.shape[0]), "frame_indices": idx.tolist(),
          "predictions": [{"label": names[i], "probability": float(probs[i])} for i in order]}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="victr-classify", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("video")
  p.add_argument("--checkpoint", required=True, help="converted CLIP dir or trained workdir")
  p.add_argument("--labels", required=True, help='"a,b,c" or @file (one label per line)')
  p.add_argument("--aux", default=None, help="auxiliary vocabulary dir (VicTR work dirs)")
  p.add_argument("--top_k", type=int, default=5)
  p.add_argument("--frames", type=int, default=None, help="default: the model's")
  p.add_argument("--template", default="a photo of a {}.",
                 help="class prompt for CLIP checkpoints ('{}' = label; the transfer configs' "
                 "prompt); a work directory uses its own config's")
  p.add_argument("--json", action="store_true", help="print JSON")
  args = p.parse_args(argv)
  try:
    res = classify(args.video, args.checkpoint, args.labels, args.aux, args.top_k, args.frames,
                   args.template)
  except (ValueError, OSError) as e:
    print(f"victr-classify: error: {e}", file=sys.stderr)
    return 2
  if args.json:
    print(json.dumps(res))
  else:
    views = f" x {res['views']} views" if res["views"] > 1 else ""
    print(f"{res['video']} ({res['model']}, {res['frames']} frames{views}):")
    for i, r in enumerate(res["predictions"], 1):
      print(f"  {i}. {r['label']:40s} {r['probability']:.3f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
