"""Train-step throughput: VicTR steps as a fraction of the machine's matmul peak, and our
mean-pool fine-tuning baseline against the same recipe in PyTorch.

  python benchmarks/train_step.py [--sizes tiny B/32] [--iters 3]

1. VicTR train step (forward, backward, AdamW) for each size: clips/s and achieved FLOP/s
   (XLA's FLOP count of the compiled step / step time) as a ratio of this machine's dense
   fp32 (bf16 on accelerators) matmul FLOP/s, measured in the same process.
2. Side by side, same sizes (B/32, 8 frames, batch 2, 16 prompts): our mean-pool baseline
   (ViFi-CLIP recipe: CLIP towers, temporal mean pooling, cross-entropy, AdamW) vs the same
   recipe in PyTorch with open_clip towers on the same weights, in --dtype on both sides
   (bfloat16: PyTorch under autocast). Prints ours / PyTorch for our towers' blocks in a
   lax.scan (`model.scan_layers`, what a CPU run should use) and unrolled, and with the
   prompts trimmed to their longest (what our trainer runs).
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

from victr_jax import clip, config_lib, models, optim, programs, train_state  # noqa: E402
from victr_jax.clip import checkpoint  # noqa: E402

from common import matmul_peak, median_time  # noqa: E402

ACCEL = jax.default_backend() != "cpu"


def our_step(cfg_model, frames, tokens, labels, lr=1e-5, clip_params=None):
  """A jitted train step of our model on one device; returns (run, flops per step, the
  compiled step)."""
  model = models.build_model(cfg_model)
  variables = models.init(model, num_frames=frames.shape[1], n=tokens.shape[0], m=0)
  params = variables["params"]
  if clip_params is not None:
    params = dict(params, clip=clip_params)
  ocfg = config_lib.base().optim
  ocfg.lr, ocfg.warmup_steps, ocfg.clip_grad_norm, ocfg.label_smoothing = lr, 0, 0.0, 0.0
  ocfg.head_lr = ocfg.gate_lr = lr  # one rate for every group, as PyTorch's AdamW here
  tx = optim.make(ocfg, params, 1000)
  state = train_state.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                 opt_state=tx.init(params),
                                 rng=jax.random.key_data(jax.random.key(0)))
  step = jax.jit(programs.make_train_step(model, tx, ocfg, tokens.shape[0], False),
                 donate_argnums=(0,))
  batch = {"frames": jnp.asarray(frames), "label": jnp.asarray(labels)}
  args = (batch, train_state.Prompts(jnp.asarray(tokens)))
  compiled, flops = programs.compile(step, state, *args)
  box = [state]

  def run():
    box[0], m = step(box[0], *args)
    jax.block_until_ready(m["loss"])

  return run, flops, compiled


def torch_step(ref, frames, tokens, labels, lr=1e-5, bf16=False):
  """The same recipe in PyTorch: open_clip towers, mean over frames, CE, AdamW; bf16:
  under autocast (on the CPU too)."""
  import torch  # pylint: disable=g-import-not-at-top
  dev = "cuda" if ACCEL and torch.cuda.is_available() else "cpu"
  ref = ref.to(dev).train()
  opt = torch.optim.AdamW(ref.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-8,
                          weight_decay=0.001)
  b, t = frames.shape[:2]
  x = torch.from_numpy(frames.reshape(b * t, *frames.shape[2:])).permute(0, 3, 1, 2).contiguous().to(dev)
  tok = torch.from_numpy(tokens.astype(np.int64)).to(dev)
  y = torch.from_numpy(labels.astype(np.int64)).to(dev)

  def run():
    with torch.autocast(dev, torch.bfloat16, enabled=bf16):
      v = ref.encode_image(x).float().reshape(b, t, -1).mean(1)
      e = ref.encode_text(tok).float()
      v = v / v.norm(dim=-1, keepdim=True)
      e = e / e.norm(dim=-1, keepdim=True)
      logits = ref.logit_scale.exp().clamp(max=100) * v @ e.T
      loss = torch.nn.functional.cross_entropy(logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if dev == "cuda":
      torch.cuda.synchronize()

  return run


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--sizes", nargs="+", default=["tiny", "B/32"])
  p.add_argument("--frames", type=int, default=8)
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--prompts", type=int, default=16)
  p.add_argument("--iters", type=int, default=3)
  p.add_argument("--skip_torch", action="store_true")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                 help="compute dtype of part 2, both sides (accelerators: always bfloat16)")
  args = p.parse_args()
  peak = matmul_peak()
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"{'bf16' if ACCEL else 'fp32'} matmul peak {peak / 1e9:.1f} GFLOP/s, "
        f"{os.cpu_count()} CPU threads")
  rng = np.random.default_rng(0)
  tokens = clip.trim_tokens(clip.tokenize([f"a person doing action {i}" for i in range(args.prompts)]))
  labels = np.arange(args.batch) % args.prompts
  print(f"\n1. VicTR train step, T={args.frames}, batch {args.batch}, {args.prompts} prompts")
  print(f"{'size':6s} {'step s':>8s} {'clips/s':>8s} {'GFLOP/step':>11s} {'GFLOP/s':>8s} {'/peak':>6s}")
  for size in args.sizes:
    cfg = models.get_config(size)
    cfg.num_frames = args.frames
    cfg.dtype = "bfloat16" if ACCEL else "float32"
    s = models.clip_config_of(cfg).image_size
    frames = rng.standard_normal((args.batch, args.frames, s, s, 3)).astype(np.float32)
    run, flops, _ = our_step(cfg, frames, tokens, labels)
    sec = median_time(run, args.iters)
    print(f"{size:6s} {sec:8.3f} {args.batch / sec:8.2f} {flops / 1e9:11.1f} "
          f"{flops / sec / 1e9:8.1f} {flops / sec / peak:6.2f}")
  if args.skip_torch:
    return
  import open_clip  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count())
  ref = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None)
  _, cparams = checkpoint.from_state_dict(ref.state_dict(), act="quick_gelu")
  cparams = jax.tree.map(np.array, cparams)  # a copy: PyTorch's steps update its tensors in place
  bf16 = ACCEL or args.dtype == "bfloat16"
  cfg = models.get_config("B/32")
  cfg.name, cfg.num_frames = "mean_pool", args.frames
  cfg.dtype = "bfloat16" if bf16 else "float32"
  frames = rng.standard_normal((args.batch, args.frames, 224, 224, 3)).astype(np.float32)
  full = clip.tokenize([f"a person doing action {i}" for i in range(args.prompts)])  # open_clip needs 77
  theirs = torch_step(ref, frames, full, labels, bf16=bf16)
  t_torch = median_time(theirs, args.iters)
  print(f"\n2. mean-pool fine-tuning step, B/32, T={args.frames}, batch {args.batch}, "
        f"{args.prompts} prompts (length 77 on both sides), same weights, {cfg.dtype}\n"
        f"PyTorch+open_clip {t_torch:.3f} s/step ({args.batch / t_torch:.2f} clips/s)")
  for scan, what in ((True, "blocks in a lax.scan (model.scan_layers)"), (False, "unrolled")):
    cfg.scan_layers = scan
    ours, _, _ = our_step(cfg, frames, full, labels, clip_params=cparams)
    t_ours = median_time(ours, args.iters)
    print(f"ours, {what}: {t_ours:.3f} s/step ({args.batch / t_ours:.2f} clips/s), "
          f"ours/PyTorch speed = {t_torch / t_ours:.2f}")
  cfg.scan_layers = True
  ours_trim, _, _ = our_step(cfg, frames, tokens, labels, clip_params=cparams)
  t_trim = median_time(ours_trim, args.iters)
  print(f"ours (scan) with prompts trimmed to {tokens.shape[1]} tokens (what our trainer runs; "
        f"open_clip needs 77): {t_trim:.3f} s/step, ours/PyTorch speed = {t_torch / t_trim:.2f}")

if __name__ == "__main__":
  main()
