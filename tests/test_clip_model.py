"""CLIP model behaviour beyond parity: video batches, resolution change, sharding names,
zero-shot helpers, preprocessing."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from victr_jax import clip


def _tiny():
  return clip.init(clip.get_config("tiny"))


def test_presets():
  b16 = clip.get_config("ViT-B/16")
  assert (b16.patch_size, b16.vision_width, b16.embed_dim, b16.text_width) == (16, 768, 512, 512)
  l14 = clip.get_config("L/14-336")
  assert (l14.image_size, l14.patch_size, l14.vision_layers, l14.embed_dim) == (336, 14, 24, 768)
  assert clip.get_config("ViT-B-32").patch_size == 32


def test_encode_video_equals_per_frame(rng):
  model, params = _tiny()
  frames = rng.standard_normal((2, 3, 32, 32, 3)).astype(np.float32)
  vid = model.apply({"params": params}, frames, method=model.encode_video)
  img = model.apply({"params": params}, frames.reshape(6, 32, 32, 3), method=model.encode_image)
  assert vid.shape == (2, 3, 32)
  np.testing.assert_allclose(np.asarray(vid).reshape(6, -1), np.asarray(img), atol=1e-5)


def test_pos_embed_interpolation(rng):
  model, params = _tiny()
  pos = params["visual"]["positional_embedding"]  # 1 + 4x4
  assert clip.interpolate_pos_embed(pos, (4, 4)) is pos
  big = clip.interpolate_pos_embed(pos, (6, 6))
  assert big.shape == (37, pos.shape[1])
  np.testing.assert_array_equal(np.asarray(big[0]), np.asarray(pos[0]))  # class token kept
  # A constant grid stays constant under bicubic resizing.
  const = pos.at[1:].set(0.5)
  np.testing.assert_allclose(np.asarray(clip.interpolate_pos_embed(const, (6, 6))[1:]), 0.5,
                             atol=1e-6)
  out = model.apply({"params": params}, rng.standard_normal((1, 48, 48, 3)).astype(np.float32),
                    method=model.encode_image)
  assert out.shape == (1, 32) and np.isfinite(np.asarray(out)).all()


def test_logical_axis_names_on_params():
  cfg = clip.get_config("tiny")
  model = clip.CLIP(cfg)
  boxed = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                         jnp.zeros((1, 77), jnp.int32))
  specs = nn.get_partition_spec(boxed)["params"]
  blk = specs["visual"]["transformer"]["resblocks_0"]
  assert tuple(blk["mlp"]["c_fc"]["kernel"]) == ("embed", "mlp")
  assert tuple(blk["attn"]["in_proj"]["kernel"]) == ("embed", "heads")
  assert tuple(blk["attn"]["out_proj"]["kernel"]) == ("heads", "embed")
  assert tuple(specs["token_embedding"]["embedding"]) == ("vocab", "embed")


def test_zero_shot_picks_the_class_whose_text_matches(rng):
  model, params = _tiny()
  names = ["dog", "guitar", "bicycle"]
  emb = clip.class_embeddings(model, params, names, templates=("a photo of a {}.",))
  assert emb.shape == (3, 32)
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
  images = rng.standard_normal((4, 32, 32, 3)).astype(np.float32)
  probs = clip.image_probabilities(model, params, images, emb)
  np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
  # Same as computing cosine logits by hand.
  img = np.array(model.apply({"params": params}, images, method=model.encode_image))
  img /= np.linalg.norm(img, axis=1, keepdims=True)
  np.testing.assert_array_equal(probs.argmax(1), (img @ emb.T).argmax(1))


def test_preprocess_matches_definition():
  img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), np.uint8))
  x = clip.preprocess_image(img, 32)
  assert x.shape == (32, 32, 3) and x.dtype == np.float32
  resized = img.resize((48, 32), Image.BICUBIC)  # short side 40 -> 32, long 60 -> 48
  crop = np.asarray(resized)[:, 8:40].astype(np.float32) / 255
  np.testing.assert_allclose(x, (crop - clip.MEAN) / clip.STD, atol=1e-6)
  frames = np.zeros((2, 3, 40, 60, 3), np.uint8)
  assert clip.preprocess_images(frames, 32).shape == (2, 3, 32, 32, 3)


def test_trimmed_tokens_give_the_same_text_embedding():
  model, params = _tiny()
  tokens = clip.tokenize(["a dog", "a person playing the guitar on a stage at night"])
  short = clip.trim_tokens(tokens)
  assert short.shape == (2, 16)
  full = model.apply({"params": params}, tokens, method=model.encode_text)
  trimmed = model.apply({"params": params}, short, method=model.encode_text)
  np.testing.assert_allclose(np.asarray(trimmed), np.asarray(full), atol=1e-5)


def test_scanned_blocks_equal_unrolled_ones_and_their_gradients(rng):
  """Transformer.scan (both towers' blocks in one lax.scan over stacked parameters) gives
  the unrolled towers' outputs and parameter gradients, with and without remat."""
  cfg = clip.get_config("tiny")
  _, params = _tiny()
  images = jnp.asarray(rng.standard_normal((3, 32, 32, 3)), jnp.float32)
  tokens = jnp.asarray(clip.trim_tokens(clip.tokenize(["a cat", "a red dog on grass"])))

  def loss(model, p):
    logits, _, _ = model.apply({"params": p}, images, tokens)
    return jnp.sum(jnp.sin(logits))

  ref = clip.CLIP(cfg)
  want, want_g = jax.value_and_grad(lambda p: loss(ref, p))(params)
  for remat in (False, True):
    got, got_g = jax.value_and_grad(lambda p: loss(clip.CLIP(cfg, remat=remat, scan=True), p))(
        params)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got_g),
                            jax.tree_util.tree_leaves(want_g)):  # float32 summation order
      err = float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
      assert err < 1e-4, (jax.tree_util.keystr(path), remat, err)
