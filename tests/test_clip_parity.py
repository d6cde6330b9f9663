"""The Flax CLIP port reproduces open_clip and transformers embeddings (random weights)."""
import jax
import numpy as np
import pytest

import clip_refs
from victr_jax import clip

REFERENCES = {
    "open_clip_quickgelu": (lambda: clip_refs.open_clip_model(quick_gelu=True), "a.pt",
                            "quick_gelu"),
    "open_clip_gelu": (lambda: clip_refs.open_clip_model(quick_gelu=False), "b.safetensors",
                       "gelu"),
    "hf": (clip_refs.hf_model, "hf", None),
}


def _ours(model, params, images, tokens):
  with jax.default_matmul_precision("highest"):
    img = model.apply({"params": params}, images, method=model.encode_image)
    txt = model.apply({"params": params}, tokens, method=model.encode_text)
  return np.asarray(clip.l2_normalize(img)), np.asarray(clip.l2_normalize(txt))


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_embeddings_match_reference(name, tmp_path):
  build, filename, act = REFERENCES[name]
  ref = build()
  path = str(tmp_path / filename)
  if name == "hf":
    clip_refs.save_hf(ref, path)
  else:
    clip_refs.save_state_dict(ref, path)
  images, tokens = clip_refs.inputs(ref)
  want_img, want_txt = clip_refs.embed(ref, images, tokens)

  model, params = clip.load(path, act=act)
  got_img, got_txt = _ours(model, params, images, tokens)
  assert np.abs(got_img - want_img).max() <= 1e-4
  assert np.abs(got_txt - want_txt).max() <= 1e-4
  # Same zero-shot decision for every image.
  np.testing.assert_array_equal((got_img @ got_txt.T).argmax(1), (want_img @ want_txt.T).argmax(1))
  # The activation really differs between the two open_clip models: with the wrong one the
  # embeddings move well past the tolerance (so the test above would notice a swap).
  if act is not None:
    other = "gelu" if act == "quick_gelu" else "quick_gelu"
    wrong_model = clip.CLIP(model.cfg.replace(act=other))
    wrong_img, _ = _ours(wrong_model, params, images, tokens)
    assert np.abs(wrong_img - want_img).max() > 1e-3


def test_hf_heads_come_from_config(tmp_path):
  """HF's 3 text heads of width 16 cannot be inferred from weights (width // 64 = 0)."""
  path = clip_refs.save_hf(clip_refs.hf_model(), str(tmp_path / "hf"))
  model, _ = clip.load(path)
  assert (model.cfg.text_heads, model.cfg.vision_heads, model.cfg.act) == (3, 4, "gelu")


def test_bf16_compute_is_close(tmp_path):
  ref = clip_refs.open_clip_model(quick_gelu=True)
  path = clip_refs.save_state_dict(ref, str(tmp_path / "a.pt"))
  images, tokens = clip_refs.inputs(ref)
  want_img, want_txt = clip_refs.embed(ref, images, tokens)
  model, params = clip.load(path, act="quick_gelu", dtype=jax.numpy.bfloat16)
  got_img, got_txt = _ours(model, params, images, tokens)
  assert got_img.dtype == np.float32 or got_img.dtype == jax.numpy.bfloat16
  cos_img = (np.asarray(got_img, np.float64) * want_img).sum(-1)
  cos_txt = (np.asarray(got_txt, np.float64) * want_txt).sum(-1)
  assert cos_img.min() > 0.99 and cos_txt.min() > 0.99
  assert all(x.dtype == np.float32 for x in jax.tree.leaves(params))
