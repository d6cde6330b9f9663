"""Contrastive pretraining of the tiny CLIP on synthetic frames and their captions."""
import numpy as np

from data_pipelines import synthetic, video_ops
from experiments import pretrain
from victr_jax import clip


def test_frame_captions_describe_position_and_size():
  v = synthetic.render(0, np.random.default_rng(0))  # a red shape moving to the left
  first, last = v.frame_caption(0), v.frame_caption(len(v.frames) - 1)
  assert "right" in first and "left" in last and v.colour in first and v.shape in first
  assert v.colour == "red" and v.shape in synthetic.SHAPES
  assert v.frame_attributes(0)["size"] in first
  # A side is named only when the shape is clearly off-centre.
  assert synthetic.place_words(0.2, 0.5) == "left"
  assert synthetic.place_words(0.55, 0.45) == "middle"
  assert synthetic.place_words(0.8, 0.2) == "top right"
  assert synthetic.describe(colour="red", place="middle") == "a red shape in the middle"


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


def test_repeated_captions_are_all_positives():
  """The loss against a numpy soft-target cross-entropy over the model's logits: rows with
  the same caption share the target mass."""
  import jax
  cfg = clip.get_config("tiny")
  model, params = clip.init(cfg, jax.random.key(1))
  rng = np.random.default_rng(0)
  images = rng.normal(size=(4, 32, 32, 3)).astype(np.float32)
  tokens = clip.trim_tokens(clip.tokenize(["a red cross", "a blue square", "a red cross",
                                           "a green square"]))
  loss = float(pretrain.contrastive_loss(model, params, images, tokens))
  logits = np.asarray(model.apply({"params": params}, images, tokens)[0], np.float64)
  target = np.array([[.5, 0, .5, 0], [0, 1, 0, 0], [.5, 0, .5, 0], [0, 0, 0, 1]])

  def ce(l):
    logp = l - np.log(np.exp(l - l.max(1, keepdims=True)).sum(1, keepdims=True)) - l.max(1, keepdims=True)
    return -(target * logp).sum(1).mean()
  np.testing.assert_allclose(loss, 0.5 * (ce(logits) + ce(logits.T)), rtol=1e-5)
