"""Test setup: 8 simulated CPU devices and fixed seeds.

Order matters: the triton guard and XLA_FLAGS must be set before torch, tensorflow or
jax is imported anywhere (see docs/method.md#12-environment-notes).
"""
import atexit
import os
import shutil
import sys
import tempfile

# torch 2.14 brings triton, whose LLVM copy clashes with TensorFlow's on CPU-only machines.
sys.modules.setdefault("triton", None)
import xla_env  # noqa: E402  (tests/ is on the path; it imports only os)

# 8 simulated devices; the CPU compiler turned down (see xla_env.py: the tests' tiny programs
# spend far more time compiling than running).
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + xla_env.flags(8)).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA compilation cache for the session, shared with pytest-xdist's worker
# processes and the subprocesses the tests start (through the environment, which they
# inherit from the process that made it): a program that one test or run compiled, the
# next one that needs it loads. The process that made it removes it.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _XLA_CACHE = tempfile.mkdtemp(prefix="victr-test-xla-cache-")
  atexit.register(shutil.rmtree, _XLA_CACHE, True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import random  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fixed_seeds():
  """Every test starts from the same numpy / python / torch seeds."""
  random.seed(0)
  np.random.seed(0)
  if "torch" in sys.modules:
    sys.modules["torch"].manual_seed(0)
  yield


@pytest.fixture
def rng():
  return np.random.default_rng(0)
