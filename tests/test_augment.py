"""The peers' data recipe: segment sampling, test resize + centre crop, per-clip colour
jitter and greyscale, smoothed mixup / CutMix targets, and the transfer configs' fields."""
import importlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from PIL import Image

from data_pipelines import pipeline, records, video_io, video_ops
from victr_jax import config_lib, losses, programs, train_state


# ------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("n", [5, 16, 37, 100, 301])
@pytest.mark.parametrize("t", [4, 8, 32])
def test_segments_test_view_is_the_peers_middle_of_segment(n, t):
  avg = n / float(t)  # mmaction SampleFrames._get_test_clips, clip_len=1
  peers = np.mod((np.arange(t) * avg + avg / 2.0).astype(np.int64), n)
  np.testing.assert_array_equal(video_ops.sample_indices(n, t, mode="segments"), peers)


@pytest.mark.parametrize("n,t", [(16, 4), (37, 8), (100, 32), (5, 8)])
def test_segments_train_is_one_random_frame_per_segment(n, t):
  idx = video_ops.sample_indices(n, t, mode="segments", rng=np.random.default_rng(3))
  pos = np.random.default_rng(3).random(t)
  expect = np.minimum((n / t * (np.arange(t) + pos)).astype(np.int64), n - 1)
  np.testing.assert_array_equal(idx, expect)
  k = np.arange(t)
  assert np.all(idx >= np.floor(k * n / t)) and np.all(idx <= np.ceil((k + 1) * n / t))


def test_segments_test_views_are_spread_within_each_segment():
  views = [video_ops.sample_indices(40, 4, mode="segments", view=c, num_views=2)
           for c in range(2)]
  np.testing.assert_array_equal(views[0], [2, 12, 22, 32])  # (0.5 / 2) of each segment
  np.testing.assert_array_equal(views[1], [7, 17, 27, 37])  # (1.5 / 2)


# ------------------------------------------------------------------------- test crops
def _frames(h=40, w=60, t=2):
  rng = np.random.default_rng(0)
  return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(t)]


def test_test_crops_resize_short_side_then_centre_crop():
  frames = _frames()
  out = video_ops.test_crops(frames, 28, 1, resize=32)
  resized = np.asarray(Image.fromarray(frames[0]).resize((48, 32), Image.BILINEAR))
  assert out.shape == (1, 2, 28, 28, 3)
  np.testing.assert_array_equal(out[0, 0], resized[2:30, 10:38])
  np.testing.assert_array_equal(video_ops.test_crops(frames, 28, 1),  # 0: short side = crop
                                video_ops.test_crops(frames, 28, 1, resize=28))
  three = video_ops.test_crops(frames, 28, 3, resize=32)  # long side, centred on the short
  np.testing.assert_array_equal(three[0, 0], resized[2:30, 0:28])
  np.testing.assert_array_equal(three[2, 0], resized[2:30, 20:48])
  with pytest.raises(ValueError, match="smaller than the crop"):
    video_ops.test_crops(frames, 28, 1, resize=24)


def _record(frames):
  return records.VideoRecord([video_io.encode_jpeg(f) for f in frames], [1], ["a"], "v")


def _cfg(**kw):
  c = ml_collections.ConfigDict(dict(
      num_frames=2, sampling="segments", stride=1, image_size=28, train_aug="none",
      crop_scale=(0.4, 1.0), flip=False, multi_label=False, num_classes=3,
      num_test_clips=1, num_test_crops=1, test_resize=0, color_jitter=0.0, grayscale=0.0))
  c.update(kw)
  return c


def test_eval_views_use_test_resize():
  rec = _record(_frames(t=4))
  got = pipeline.eval_views(rec, _cfg(test_resize=32))["frames"]
  idx = video_ops.sample_indices(4, 2, mode="segments")
  decoded = [video_io.decode_jpeg(rec.frames[i]) for i in idx]
  np.testing.assert_allclose(got, video_ops.normalize(video_ops.test_crops(decoded, 28, 1, 32)))


# ------------------------------------------------------------------------- colour
def test_grayscale_is_the_luma_in_every_channel():
  clip = np.random.default_rng(1).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
  g = video_ops.grayscale(clip)
  expect = np.round(clip.astype(np.float64) @ [0.299, 0.587, 0.114])
  np.testing.assert_allclose(g[..., 0], expect, atol=1)
  assert (g == g[..., :1]).all()
  pil = np.asarray(Image.fromarray(clip[0]).convert("L"))  # torchvision Grayscale
  assert np.abs(g[0, ..., 0].astype(int) - pil).max() <= 1


def test_brightness_contrast_saturation_formulas():
  x = np.random.default_rng(2).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
  np.testing.assert_allclose(video_ops.adjust_brightness(x, 1.3), np.clip(x * 1.3, 0, 255))
  grey = x @ np.float32([0.299, 0.587, 0.114])
  m = grey.mean(axis=(1, 2))[:, None, None, None]
  np.testing.assert_allclose(video_ops.adjust_contrast(x, 0.7), np.clip(m + 0.7 * (x - m), 0, 255),
                             rtol=1e-5, atol=1e-3)
  g = grey[..., None]
  np.testing.assert_allclose(video_ops.adjust_saturation(x, 1.2),
                             np.clip(g + 1.2 * (x - g), 0, 255), rtol=1e-5, atol=1e-3)


def test_hue_third_of_a_turn_takes_red_to_green():
  red = np.zeros((1, 2, 2, 3), np.float32)
  red[..., 0] = 255
  out = video_ops.adjust_hue(red, 1 / 3)
  np.testing.assert_allclose(out[0, 0, 0], [0, 255, 0], atol=2)
  np.testing.assert_array_equal(video_ops.adjust_hue(red, 0.0), red)


def test_color_jitter_draws_one_set_of_factors_per_clip():
  frame = np.random.default_rng(4).integers(0, 256, (6, 6, 3), dtype=np.uint8)
  clip = np.stack([frame] * 4)
  out = video_ops.color_jitter(clip, np.random.default_rng(5))
  assert not (out == clip).all()
  assert all((out[t] == out[0]).all() for t in range(4))  # same jitter on every frame
  # Brightness alone: the factor is the first draw, U[0.6, 1.4].
  only_b = video_ops.color_jitter(clip, np.random.default_rng(6), contrast=0, saturation=0,
                                  hue=0)
  fb = np.random.default_rng(6).uniform(0.6, 1.4)
  np.testing.assert_array_equal(only_b, np.round(np.clip(clip * np.float32(fb), 0, 255)))


def test_train_example_applies_colour_per_clip_and_is_unchanged_when_off():
  rec = _record(_frames(t=4))
  old = ml_collections.ConfigDict({k: v for k, v in _cfg().items()
                                   if k not in ("color_jitter", "grayscale", "test_resize")})
  a = pipeline.train_example(rec, np.random.default_rng(0), old)["frames"]
  b = pipeline.train_example(rec, np.random.default_rng(0), _cfg())["frames"]
  np.testing.assert_array_equal(a, b)  # fields at 0: no extra draws, same clip
  grey = pipeline.train_example(rec, np.random.default_rng(0), _cfg(grayscale=1.0))["frames"]
  raw = np.round((grey * video_ops.STD + video_ops.MEAN) * 255)
  np.testing.assert_allclose(raw, np.broadcast_to(raw[..., :1], raw.shape), atol=1e-3)
  jit = pipeline.train_example(rec, np.random.default_rng(0), _cfg(color_jitter=1.0))["frames"]
  assert jit.shape == a.shape and not np.allclose(jit, a)


# ------------------------------------------------------------------------- mixup / CutMix
B, C, H, W = 4, 5, 8, 12


def _batch():
  frames = jnp.broadcast_to(jnp.arange(B, dtype=jnp.float32)[:, None, None, None, None],
                            (B, 2, H, W, 3))  # clip i is all i
  labels = jnp.array([0, 2, 4, 1])
  return frames, labels


def _smoothed(labels, s):
  y = np.eye(C)[np.asarray(labels)]
  return (1 - s) * y + s / C  # the peers' on / off values: 1 - s + s / C, s / C


def test_soft_targets_are_the_peers_smoothed_one_hot():
  _, labels = _batch()
  np.testing.assert_allclose(losses.soft_targets(labels, C, False, 0.1), _smoothed(labels, 0.1),
                             rtol=1e-6)
  multi = jnp.array([[1, 0, 1, 0, 0]] * B, jnp.float32)
  np.testing.assert_array_equal(losses.soft_targets(multi, C, True, 0.1), multi)


def test_mixup_mixes_frames_and_smoothed_targets_with_one_lam():
  frames, labels = _batch()
  t = losses.soft_targets(labels, C, False, 0.1)
  mixed, targets = losses.mix_batch(frames, t, jax.random.key(0), 0.8)
  lam = 1 - float(mixed[0, 0, 0, 0, 0]) / (B - 1)  # clip 0 = lam * 0 + (1 - lam) * 3
  expect_f = lam * np.asarray(frames) + (1 - lam) * np.asarray(frames)[::-1]
  np.testing.assert_allclose(mixed, expect_f, atol=1e-5)
  y = _smoothed(labels, 0.1)
  np.testing.assert_allclose(targets, lam * y + (1 - lam) * y[::-1], atol=1e-5)


def _peer_box(lam, cx, cy, h, w):
  """The peers' CutmixMixupBlending.rand_bbox + area-corrected lam, in numpy."""
  cut = np.sqrt(1.0 - lam)
  cw, ch = int(w * cut), int(h * cut)
  x1, y1 = np.clip(cx - cw // 2, 0, w), np.clip(cy - ch // 2, 0, h)
  x2, y2 = np.clip(cx + cw // 2, 0, w), np.clip(cy + ch // 2, 0, h)
  keep = np.ones((h, w), np.float32)
  keep[y1:y2, x1:x2] = 0
  return keep, 1 - (x2 - x1) * (y2 - y1) / (h * w)


@pytest.mark.parametrize("lam,cx,cy", [(0.3, 5, 4), (0.9, 0, 0), (0.05, 11, 7), (1.0, 6, 3),
                                       (0.0, 6, 3)])
def test_cutmix_box_matches_the_peers(lam, cx, cy):
  keep, lam_adj = losses.cutmix_box(jnp.float32(lam), cx, cy, H, W)
  keep_np, lam_np = _peer_box(lam, cx, cy, H, W)
  np.testing.assert_array_equal(keep, keep_np)
  np.testing.assert_allclose(lam_adj, lam_np, rtol=1e-6)
  np.testing.assert_allclose(lam_adj, np.mean(keep_np), rtol=1e-6)  # = kept area fraction


def test_cutmix_pastes_one_box_and_weighs_targets_by_its_area():
  frames, labels = _batch()
  t = losses.soft_targets(labels, C, False, 0.1)
  for seed in range(5):
    mixed, targets = losses.mix_batch(frames, t, jax.random.key(seed), 0.0, 1.0)
    m = np.asarray(mixed)
    own = m == np.asarray(frames)
    other = m == np.asarray(frames)[::-1]
    assert (own | other).all()  # pixels copied, not blended
    assert (own == own[:1, :1]).all()  # one box: same place in every clip and frame
    kept = own[0, 0, :, :, 0].mean()
    y = _smoothed(labels, 0.1)
    np.testing.assert_allclose(targets, kept * y + (1 - kept) * y[::-1], atol=1e-6)


@pytest.mark.parametrize("switch", [0.0, 0.5, 1.0])
def test_switch_picks_cutmix_with_its_probability(switch):
  frames, labels = _batch()
  t = losses.soft_targets(labels, C, False, 0.0)
  f = jax.jit(lambda k: losses.mix_batch(frames, t, k, 0.8, 1.0, switch)[0])
  n = 200
  cut = 0
  for i in range(n):
    m = np.asarray(f(jax.random.key(i)))
    cut += bool(((m == np.asarray(frames)) | (m == np.asarray(frames)[::-1])).all())
  assert abs(cut / n - switch) <= 0.1


class _ConstModel:
  """logits = w for every clip (the frames only pass through)."""

  def apply(self, variables, frames, *_, train):
    del train
    return {"logits": jnp.broadcast_to(variables["params"]["w"], (frames.shape[0], C))
                      + 0.0 * frames.mean()}


@pytest.mark.parametrize("mixup,cutmix", [(0.0, 0.0), (0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_train_step_keeps_label_smoothing_with_mixup_and_cutmix(mixup, cutmix):
  """With constant logits the loss only sees the batch mean of the targets, which mixing
  with the reversed batch keeps: the smoothed mean, whatever lam."""
  frames, labels = _batch()
  ocfg = config_lib.base().optim
  ocfg.label_smoothing, ocfg.mixup_alpha, ocfg.cutmix_alpha = 0.1, mixup, cutmix
  w = jnp.array([2.0, -1.0, 0.5, 0.0, 1.0])
  tx = optax.sgd(0.0)
  state = train_state.TrainState(step=jnp.int32(0), params={"w": w}, opt_state=tx.init({"w": w}),
                                 rng=jax.random.key_data(jax.random.key(0)))
  step = jax.jit(programs.make_train_step(_ConstModel(), tx, ocfg, C, False))
  _, m = step(state, {"frames": frames, "label": labels},
              train_state.Prompts(jnp.zeros((C, 4), jnp.int32)))
  logp = np.asarray(jax.nn.log_softmax(w))
  expect = -(_smoothed(labels, 0.1).mean(0) * logp).sum()
  np.testing.assert_allclose(m["loss"], expect, rtol=1e-5)
  assert abs(expect + (np.eye(C)[np.asarray(labels)].mean(0) * logp).sum()) > 1e-2


# ------------------------------------------------------------------------- configs
@pytest.mark.parametrize("field,value", [("data.color_jitter", 1.5), ("data.grayscale", -0.1),
                                         ("data.test_resize", 200),
                                         ("optim.mixup_switch_prob", 2.0),
                                         ("optim.cutmix_alpha", -1.0)])
def test_bad_recipe_field_is_named(field, value):
  c = config_lib.base()
  group, leaf = field.split(".")
  c[group][leaf] = value
  with pytest.raises(ValueError, match=field.replace(".", r"\.")):
    config_lib.check_config(c, "eval", num_devices=1)


TRANSFER = [("zero_shot", ""), ("few_shot", "dataset=hmdb51"), ("few_shot", "dataset=ssv2"),
            ("base_to_novel", ""), ("k400", ""), ("k400", "crops=1"), ("charades", ""),
            ("zero_shot", "model=L/14-336")]


@pytest.mark.parametrize("name,arg", TRANSFER, ids=[f"{n}:{a}" for n, a in TRANSFER])
def test_transfer_configs_carry_the_peer_recipe(name, arg):
  c = config_lib.resolve(importlib.import_module(f"configs.{name}").get_config(arg))
  d, o = c.data, c.optim
  size = 336 if "336" in arg else 224
  assert d.sampling == "segments" and d.image_size == size
  three_crops = name == "k400" and d.num_test_crops == 3  # peers: short side = crop, 3 crops
  assert d.test_resize == (0 if three_crops else round(size * 256 / 224))
  assert (d.color_jitter, d.grayscale) == (0.8, 0.2)
  assert c.prompt_template == "a photo of a {}." and c.model.dtype == "bfloat16"
  if name == "charades":  # multi-label: no mixing, no smoothing
    assert (o.mixup_alpha, o.cutmix_alpha, o.label_smoothing) == (0.0, 0.0, 0.0)
  else:
    assert (o.mixup_alpha, o.cutmix_alpha, o.mixup_switch_prob, o.label_smoothing) == (
        0.8, 1.0, 0.5, 0.1)


def test_demo_and_base_keep_the_recipe_off():
  for c in (config_lib.base(), importlib.import_module("configs.demo").get_config("")):
    d, o = c.data, c.optim
    assert (d.test_resize, d.color_jitter, d.grayscale, o.cutmix_alpha) == (0, 0.0, 0.0, 0.0)
  assert config_lib.base().data.sampling == "stride"
