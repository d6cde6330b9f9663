"""victr-classify VIDEO --checkpoint DIR --labels "a,b,c": rank free-form labels for a video.

DIR is either a converted CLIP checkpoint (victr-convert-clip output: zero-shot CLIP with
frame averaging) or a trained work directory (config.json + checkpoints/: the model it
trained, VicTR or a baseline). Prints the top classes with probabilities, or JSON.
"""
import argparse
import json
import os
import sys

import numpy as np


def _labels(spec: str) -> list[str]:
  if spec.startswith("@"):
    with open(spec[1:], encoding="utf-8") as f:
      names = [l.strip() for l in f]
  else:
    names = [l.strip() for l in spec.split(",")]
  names = [n for n in names if n]
  if not names:
    raise ValueError("--labels is empty: give comma-separated class names or @file")
  return names


def _frames(video: str, num_frames: int, size: int) -> np.ndarray:
  """Centre clip of num_frames frames spread over the video, CLIP-preprocessed (T,S,S,3)."""
  from data_pipelines import video_io, video_ops  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(video):
    raise ValueError(f"{video}: no such video file")
  frames, _ = video_io.decode_video(video)
  idx = video_ops.sample_indices(len(frames), num_frames, mode="segments", view=0, num_views=1)
  clip_ = video_ops.test_crops([frames[i] for i in idx], size, 1)[0]
  return video_ops.normalize(clip_)


def load_model(checkpoint: str):
  """-> (model, params, config or None, description)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from victr_jax import clip, models  # pylint: disable=g-import-not-at-top
  if not os.path.exists(checkpoint):
    raise ValueError(f"--checkpoint {checkpoint}: no such file or directory")
  if os.path.exists(os.path.join(checkpoint, "config.json")) and os.path.isdir(
      os.path.join(checkpoint, "checkpoints")):
    with open(os.path.join(checkpoint, "config.json")) as f:
      config = ml_collections.ConfigDict(json.load(f))
    model = models.build_model(config.model)
    from victr_jax import train  # pylint: disable=g-import-not-at-top
    step, state, _ = train.restore_latest(checkpoint)
    params = state["params"]
    return model, params, config, f"{config.model.name} work directory, step {step}"
  clip_cfg, clip_params = clip.load_params(checkpoint)
  cfg = models.get_config("tiny")
  cfg.name = "clip_zero_shot"
  model = models.MeanPoolCLIP(ml_collections.FrozenConfigDict(
      dict(cfg.to_dict(), freeze_image_tower=True, freeze_text_tower=True,
           freeze_logit_scale=True)), clip_cfg)
  return model, {"clip": clip_params}, None, "CLIP zero-shot, frame averaging"


def classify(video, checkpoint, labels, aux=None, top_k=5, num_frames=None,
             template="a video of a person {}.") -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from victr_jax import data  # pylint: disable=g-import-not-at-top
  names = _labels(labels)
  model, params, config, what = load_model(checkpoint)
  if config is not None:
    template = config.prompt_template
  t = num_frames or (config.data.num_frames if config is not None else 8)
  size = config.data.image_size if config is not None else model.clip_cfg.image_size
  frames = _frames(video, t, size)[None]
  tokens = data.class_tokens(names, template)
  aux_tokens = aux_cats = None
  if config is not None and config.model.name == "victr":
    if aux:
      config.aux_vocab = aux
    aux_tokens, aux_cats, _ = data.aux_prompts(config)
  out = jax.jit(model.apply)({"params": params}, jnp.asarray(frames), jnp.asarray(tokens),
                             None if aux_tokens is None else jnp.asarray(aux_tokens),
                             None if aux_cats is None else jnp.asarray(aux_cats))
  probs = np.asarray(jax.nn.softmax(out["logits"][0].astype(jnp.float32)))
  order = np.argsort(-probs, kind="stable")[:top_k]
  return {"video": video, "model": what, "frames": int(t),
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
  p.add_argument("--template", default="a video of a person {}.",
                 help="class prompt for CLIP checkpoints ('{}' = label)")
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
    print(f"{res['video']} ({res['model']}, {res['frames']} frames):")
    for i, r in enumerate(res["predictions"], 1):
      print(f"  {i}. {r['label']:40s} {r['probability']:.3f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
