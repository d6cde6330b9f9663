"""Contrastive pretraining of the tiny CLIP on synthetic frames and their captions."""
import numpy as np

from data_pipelines import synthetic, video_ops
from victr_jax import clip, pretrain


def test_frame_captions_describe_position_and_size():
  v = synthetic.render(0, np.random.default_rng(0))  # a square moving left
  first, last = v.frame_caption(0), v.frame_caption(len(v.frames) - 1)
  assert "right" in first and "left" in last and v.colour in first and "square" in first


def test_contrastive_loss_goes_down():
  rng = np.random.default_rng(0)

  def batches(n=32):
    while True:
      imgs, caps = [], []
      for _ in range(n):
        v = synthetic.render(int(rng.integers(18)), rng, num_frames=4, size=32)
        imgs.append(v.frames[0])
        caps.append(v.frame_caption(0))
      yield video_ops.normalize(np.stack(imgs)), clip.trim_tokens(clip.tokenize(caps))

  _, params, losses = pretrain.pretrain(clip.get_config("tiny"), batches(), 40, lr=1e-3,
                                        log=lambda s: None)
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1
  assert np.isfinite(losses).all() and "logit_scale" in params
