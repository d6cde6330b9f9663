"""Shared measuring helpers for the benchmark scripts (run as `python benchmarks/x.py`)."""
import statistics
import time

import jax
import jax.numpy as jnp


def median_time(fn, iters: int, warmup: int = 2) -> float:
  """Median wall time of fn() over `iters` calls, after `warmup` calls (compiles)."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(iters):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def matmul_peak(n: int | None = None, iters: int = 10) -> float:
  """This machine's dense matmul FLOP/s in JAX: fp32 on CPU, bf16 on accelerators."""
  accel = jax.default_backend() != "cpu"
  n = n or (4096 if accel else 2048)
  a = jnp.ones((n, n), jnp.bfloat16 if accel else jnp.float32)
  f = jax.jit(lambda a: a @ a)
  sec = median_time(lambda: f(a).block_until_ready(), iters)
  return 2 * n ** 3 / sec
