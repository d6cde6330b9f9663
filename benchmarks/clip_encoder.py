"""Throughput of our CLIP encoders vs open_clip on the same weights, batch and threads.

  python benchmarks/clip_encoder.py [--model ViT-B-32] [--batch 8] [--iters 5]

Builds an open_clip model with random weights (no download), loads the same weights into
the Flax port, checks the embeddings agree, then times image and text encoding in the
same process. fp32 on CPU; on an accelerator both sides run bf16 (torch autocast, our
compute dtype). Prints images/s and texts/s for both and the ratio ours / open_clip.
"""
import argparse
import os
import sys

sys.modules.setdefault("triton", None)
if __name__ == "__main__":  # XLA's step buffers on huge pages (victr_jax/hostmem.py)
  from victr_jax import hostmem  # pylint: disable=g-import-not-at-top
  hostmem.ensure()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import open_clip  # noqa: E402
import torch  # noqa: E402

from victr_jax import clip  # noqa: E402
from victr_jax.clip import checkpoint  # noqa: E402

from common import median_time  # noqa: E402


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--model", default="ViT-B-32", help="open_clip architecture name")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--texts", type=int, default=64)
  p.add_argument("--iters", type=int, default=5)
  args = p.parse_args()

  accel = jax.default_backend() != "cpu"
  device = "cuda" if accel and torch.cuda.is_available() else "cpu"
  threads = os.cpu_count()
  torch.set_num_threads(threads)
  name = args.model + "-quickgelu"
  ref = open_clip.create_model(name, pretrained=None).eval().to(device)
  cfg, params = checkpoint.from_state_dict(ref.state_dict(), act="quick_gelu")
  dtype = jnp.bfloat16 if accel else jnp.float32
  model = clip.CLIP(cfg, dtype=dtype)
  params = jax.device_put(params)

  rng = np.random.default_rng(0)
  images = rng.standard_normal((args.batch, cfg.image_size, cfg.image_size, 3)).astype(np.float32)
  tokens = clip.tokenize([f"a photo of a number {i} thing" for i in range(args.texts)])
  x_j, t_j = jnp.asarray(images), jnp.asarray(tokens)
  x_t = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
  t_t = torch.from_numpy(tokens.astype(np.int64)).to(device)

  enc_img = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode_image))
  enc_txt = jax.jit(lambda p, t: model.apply({"params": p}, t, method=model.encode_text))

  def torch_run(fn, x):
    def run():
      with torch.inference_mode(), torch.autocast(device, torch.bfloat16, enabled=accel):
        fn(x)
      if device == "cuda":
        torch.cuda.synchronize()
    return run

  # Same weights: embeddings agree before anything is timed.
  with torch.inference_mode():
    want = ref.encode_image(x_t).float().cpu().numpy()
  got = np.asarray(enc_img(params, x_j), np.float32)
  cos = (got * want).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(want, axis=-1)

  rows = []
  for what, n, ours, theirs in (
      ("image", args.batch, lambda: enc_img(params, x_j).block_until_ready(),
       torch_run(ref.encode_image, x_t)),
      ("text", args.texts, lambda: enc_txt(params, t_j).block_until_ready(),
       torch_run(ref.encode_text, t_t))):
    t_ours, t_ref = median_time(ours, args.iters), median_time(theirs, args.iters)
    rows.append((what, n / t_ours, n / t_ref))

  print(f"CLIP {args.model} encoders, {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"{'bf16' if accel else 'fp32'}, {threads} threads, torch {torch.__version__}, "
        f"jax {jax.__version__}; image batch {args.batch}, text batch {args.texts}; "
        f"min cosine(ours, open_clip) = {cos.min():.6f}")
  print(f"{'encoder':8s} {'ours/s':>10s} {'open_clip/s':>12s} {'ratio':>7s}")
  for what, ours, theirs in rows:
    print(f"{what:8s} {ours:10.1f} {theirs:12.1f} {ours / theirs:7.2f}")


if __name__ == "__main__":
  main()
