"""models/cost.py against XLA's own count: the forward FLOP formulas, and the forward that
a rematerialised backward recomputes (remat layers, chunked attention steps), measured as
the difference between XLA's FLOPs for the gradient with and without it. Programs are
compiled on the CPU, never run; loops are unrolled (clip.model.unrolled_steps) because
XLA's cost analysis counts a loop body once."""
import jax
import jax.numpy as jnp
import pytest

from victr_jax import clip
from victr_jax.clip.model import VisionTransformer, unrolled_steps
from victr_jax.models import cost
from victr_jax.models import head as H

T, N, M, D = 8, 40, 10, 1024  # wide enough that matmuls dominate the elementwise work


def _xla_flops(fn, *args):
  """XLA's FLOPs for fn(*args); the args are abstract, so no work is constant-folded or
  merged (identical steps on a constant input would be CSE'd into one)."""
  args = [jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), a) for a in args]
  with unrolled_steps():
    return jax.jit(fn).lower(*args).compile().cost_analysis()["flops"]


def _head_grad_flops(remat: bool, chunk: int) -> float:
  mod = H.VicTRHead(num_classes_text=N, num_layers=1, num_heads=4, num_frames=T, remat=remat,
                    attention_chunk=chunk)
  f, e = jnp.zeros((1, T, D)), jnp.zeros((N + M, D))
  params = jax.eval_shape(lambda: mod.init(jax.random.key(0), f, e, 1.0))

  def loss(p, f, e):
    return jnp.sum(mod.apply(p, f, e, 1.0)["video"])
  return _xla_flops(jax.grad(loss), params, f, e)


def test_head_forward_and_training_flops_match_xla():
  fwd = cost.head_flops(T, N, M, D)
  plain = _head_grad_flops(False, 0)
  # XLA adds the elementwise work (softmax, LayerNorm, GELU) the formula leaves out.
  assert 2.9 * fwd < plain < 3.3 * fwd


@pytest.mark.parametrize("remat,chunk", [(True, 0), (False, 16), (True, 16)])
def test_recomputed_head_flops_match_xla(remat, chunk):
  fwd = cost.head_flops(T, N, M, D)
  measured = _head_grad_flops(remat, chunk) - _head_grad_flops(False, 0)
  formula = cost.recomputed_head_flops(T, N, M, D, remat=remat, chunk=chunk)
  assert formula > 0.2 * fwd
  assert abs(measured - formula) < 0.05 * fwd, (measured / fwd, formula / fwd)


def test_recomputed_vit_flops_match_xla():
  c = clip.get_config("tiny", vision_width=256, vision_mlp_dim=1024, vision_heads=4,
                      image_size=64, patch_size=16, embed_dim=128)
  x = jnp.zeros((2, 64, 64, 3))

  def grad_flops(remat):
    mod = VisionTransformer(c, remat=remat)
    params = jax.eval_shape(lambda: mod.init(jax.random.key(0), x))
    return _xla_flops(jax.grad(lambda p, x: jnp.sum(mod.apply(p, x))), params, x)

  fwd = 2 * cost.vit_flops(64, 16, 256, 2, 1024, 128)
  measured = grad_flops(True) - grad_flops(False)
  formula = 2 * cost.recomputed_vit_flops(64, 16, 256, 2, 1024)
  assert formula > 0.5 * fwd
  assert abs(measured - formula) < 0.05 * fwd, (measured / fwd, formula / fwd)


@pytest.mark.parametrize("remat", [False, True])
def test_recomputed_flops_of_a_video_blocked_head_match_xla(remat):
  """The head run two videos at a time (video_blocked, each step rematerialised): XLA
  counts no more work than for the whole batch at once, so the formulas need no term."""
  import flax.linen as nn

  class Blocked(nn.Module):
    blocked: bool

    @nn.compact
    def __call__(self, f, e):
      head = H.VicTRHead(num_classes_text=N, num_layers=2, num_heads=4, num_frames=T,
                         remat=remat, name="head")
      if self.blocked and not self.is_initializing():
        return H.video_blocked(head, f, e, 1.0, 2)["video"]
      return head(f, e, 1.0)["video"]

  f, e = jnp.zeros((4, T, D)), jnp.zeros((N + M, D))

  def grad_flops(blocked):
    mod = Blocked(blocked)
    params = jax.eval_shape(lambda: mod.init(jax.random.key(0), f, e))
    return _xla_flops(jax.grad(lambda p, f, e: jnp.sum(mod.apply(p, f, e))), params, f, e)

  fwd = 4 * cost.head_flops(T, N, M, D, layers=2)
  assert abs(grad_flops(True) - grad_flops(False)) < 0.01 * fwd
