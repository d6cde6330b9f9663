"""Parameters, FLOPs, step time and peak memory of a full VicTR model at real sizes.

  python benchmarks/model_size.py --model B/16 --frames 8 --classes 400 --aux 100

Random weights, shapes only. Times one jitted training step (forward + backward through
both towers and the head) and one evaluation forward; prints achieved FLOP/s against the
machine's dense fp32 matmul FLOP/s measured in the same process, and the peak resident
memory of the process. Class prompts are trimmed to the longest prompt (clip.trim_tokens).
"""
import argparse
import resource
import time

import flax
import jax
import numpy as np

from victr_jax import clip, models
from victr_jax.models import cost

from common import matmul_peak


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--model", default="B/16")
  p.add_argument("--frames", type=int, default=8)
  p.add_argument("--classes", type=int, default=400)
  p.add_argument("--aux", type=int, default=100)
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--remat", action="store_true")
  args = p.parse_args()

  cfg = models.get_config(args.model)
  cfg.num_frames, cfg.remat = args.frames, args.remat
  model = models.build_model(cfg)
  c = model.clip_cfg
  rng = np.random.default_rng(0)
  frames = rng.standard_normal((args.batch, args.frames, c.image_size, c.image_size, 3),
                               ).astype(np.float32)
  ct = clip.trim_tokens(clip.tokenize([f"a person doing activity number {i}"
                                       for i in range(args.classes)]))
  at = clip.trim_tokens(clip.tokenize([f"an object called thing {i}" for i in range(args.aux)]))
  cats = np.arange(args.aux, dtype=np.int32) % cfg.head.num_aux_categories

  t0 = time.perf_counter()
  variables = jax.jit(model.init)(jax.random.key(0), frames[:1], ct, at, cats)
  params = flax.linen.unbox(variables["params"])
  n_clip = sum(x.size for x in jax.tree.leaves(params["clip"]))
  n_head = sum(x.size for k, v in params.items() if k != "clip" for x in jax.tree.leaves(v))
  print(f"VicTR {args.model}: T={args.frames} n={args.classes} m={args.aux} batch={args.batch} "
        f"prompt length {ct.shape[1]}; params: CLIP {n_clip / 1e6:.2f}M, head + classifier "
        f"{n_head / 1e6:.2f}M (init {time.perf_counter() - t0:.1f}s)", flush=True)

  labels = jax.nn.one_hot(np.arange(args.batch) % args.classes, args.classes)

  def loss(params):
    out = model.apply({"params": params}, frames, ct, at, cats, train=True)
    return -(labels * jax.nn.log_softmax(out["logits"])).sum(-1).mean()

  step = jax.jit(jax.value_and_grad(loss))
  fwd = jax.jit(lambda p: model.apply({"params": p}, frames, ct, at, cats)["logits"])
  for name, fn in (("train step (fwd+bwd)", step), ("eval forward", fwd)):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(params))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(fn(params))
    run_s = time.perf_counter() - t0
    print(f"{name:22s}: {run_s:7.2f}s per step (first call incl. compile {compile_s:.1f}s)",
          flush=True)
    if name.startswith("train"):
      train_s = run_s

  flops = args.batch * (args.frames * cost.vit_flops(c.image_size, c.patch_size, c.vision_width,
                                                      c.vision_layers, c.vision_mlp_dim,
                                                      c.embed_dim)
                        + cost.head_flops(args.frames, args.classes, args.aux, c.embed_dim,
                                          layers=cfg.head.num_layers))
  flops += (args.classes + args.aux) * cost.text_flops(ct.shape[1], c.text_width, c.text_layers,
                                                       c.text_mlp_dim, c.embed_dim)
  peak = matmul_peak()
  achieved = 3 * flops / train_s
  print(f"train step: {3 * flops / 1e12:.2f} TFLOP by formula, {achieved / 1e9:.1f} GFLOP/s = "
        f"{achieved / peak:.2f} x this machine's fp32 matmul peak ({peak / 1e9:.1f} GFLOP/s)")
  print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
  main()
