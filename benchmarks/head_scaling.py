"""How the VicTR head's step time grows with T and with n + m, measured vs predicted.

  python benchmarks/head_scaling.py [--dim 512] [--batch 1] [--iters 3]

Times a jitted forward + backward of the head alone (random CLIP-sized inputs) while
sweeping the number of frames T (n + m fixed) and the number of prompts n + m (T fixed).
Growth is printed relative to the first point of each sweep, next to the growth of the
FLOP formula of victr_jax/models/cost.py; XLA's own FLOP count of the compiled forward is
printed beside the formula as a check of the formula itself.
"""
import argparse

import jax
import jax.numpy as jnp
import numpy as np

from victr_jax.models import cost
from victr_jax.models import head as H

from common import median_time


def step_fn(module, scale):
  def loss(params, f, e):
    out = module.apply({"params": params}, f, e, scale)
    return out["video"].sum() + out["action_text"].sum()
  return jax.jit(jax.value_and_grad(loss))


def measure(t, n, m, args):
  rng = np.random.default_rng(0)
  f = jnp.asarray(rng.standard_normal((args.batch, t, args.dim)), jnp.float32)
  e = jnp.asarray(rng.standard_normal((n + m, args.dim)), jnp.float32)
  module = H.VicTRHead(num_classes_text=n, num_layers=args.layers, num_heads=8,
                       num_frames=t, attention=args.attention)
  params = jax.jit(module.init)(jax.random.key(0), f, e, 50.0)["params"]
  fwd = jax.jit(lambda p, f, e: module.apply({"params": p}, f, e, 50.0))
  xla_flops = fwd.lower(params, f, e).compile().cost_analysis()
  xla_flops = (xla_flops[0] if isinstance(xla_flops, list) else xla_flops).get("flops", 0.0)
  step = step_fn(module, 50.0)
  sec = median_time(lambda: jax.block_until_ready(step(params, f, e)), args.iters, warmup=1)
  formula = args.batch * cost.head_flops(t, n, m, args.dim, layers=args.layers,
                                         attention=args.attention)
  return sec, formula, xla_flops


def sweep(name, points, args):
  print(f"\n{name}: fwd+bwd step of the head, batch {args.batch}, D=W={args.dim}, "
        f"L={args.layers}, {args.attention} attention")
  print(f"{'T':>4s} {'n+m':>5s} {'step ms':>9s} {'GFLOP/s':>8s} {'measured x':>11s} "
        f"{'predicted x':>12s} {'XLA/formula':>12s}")
  base = None
  for t, n, m in points:
    sec, flops, xla = measure(t, n, m, args)
    base = base or (sec, flops)
    print(f"{t:4d} {n + m:5d} {sec * 1e3:9.1f} {3 * flops / sec / 1e9:8.1f} "
          f"{sec / base[0]:11.2f} {flops / base[1]:12.2f} {xla / flops if xla else float('nan'):12.2f}")


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--dim", type=int, default=512)
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--layers", type=int, default=1)
  p.add_argument("--attention", default="divided", choices=["divided", "joint"])
  p.add_argument("--iters", type=int, default=3)
  args = p.parse_args()
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()})")
  sweep("frames T (n=80, m=20)", [(t, 80, 20) for t in (4, 8, 16, 32)], args)
  sweep("prompts n+m (T=8, m=n/4)", [(8, j * 4 // 5, j // 5) for j in (50, 100, 200, 400)], args)


if __name__ == "__main__":  # XLA's step buffers on huge pages (victr_jax/hostmem.py)
  from victr_jax import hostmem  # pylint: disable=g-import-not-at-top
  hostmem.ensure()
  main()
