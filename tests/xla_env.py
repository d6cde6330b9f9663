"""XLA settings of the test processes and of the runs they start.

The tests' programs are tiny: they spend far more time compiling than running, so the CPU
compiler's optimisation is turned down (LLVM at level 0, the older loop emitters instead of
the fusion emitters, one code-generation unit): about a third of the compile time of a train
step, and the numbers the tests compare are unchanged.
"""
import os

FAST_COMPILE = ("--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false "
                "--xla_cpu_parallel_codegen_split_count=1")


def flags(devices: int | None = 8) -> str:
  """XLA_FLAGS: `devices` simulated CPU devices (None: the machine's own) and FAST_COMPILE."""
  count = "" if devices is None else f"--xla_force_host_platform_device_count={devices} "
  return count + FAST_COMPILE


def env(devices: int | None = 8, **kw) -> dict:
  """The environment of a run a test starts: this one's, on CPU with `devices` devices."""
  return dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
              XLA_FLAGS=flags(devices), **kw)
