"""Checkpoint import: every format round-trips through victr-convert-clip and loads
without torch; bad input names the key, the shapes or the file."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import clip_refs
from victr_jax import clip
from victr_jax.clip import checkpoint, convert

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _formats(tmp):
  """{name: (source path, act for the converter, reference torch model)}."""
  qg, gelu, hf = (clip_refs.open_clip_model(True), clip_refs.open_clip_model(False),
                  clip_refs.hf_model())
  openai_ref = clip_refs.save_openai_torchscript(qg, f"{tmp}/openai.pt")
  return {
      "openai_torchscript": (f"{tmp}/openai.pt", None, openai_ref),
      "open_clip_pt": (clip_refs.save_state_dict(qg, f"{tmp}/oc.pt"), "quick_gelu", qg),
      "open_clip_bin": (clip_refs.save_state_dict(gelu, f"{tmp}/oc.bin"), "gelu", gelu),
      "open_clip_safetensors": (clip_refs.save_state_dict(gelu, f"{tmp}/oc.safetensors"),
                                "gelu", gelu),
      "hf_safetensors": (clip_refs.save_hf(hf, f"{tmp}/hf_st"), None, hf),
      "hf_bin": (clip_refs.save_hf(hf, f"{tmp}/hf_bin", bin_format=True), None, hf),
  }


_NO_TORCH_LOADER = textwrap.dedent("""
    import sys
    for name in ("torch", "safetensors", "transformers", "open_clip", "torchvision"):
        sys.modules[name] = None   # any import of these now raises ImportError
    import json, numpy as np, jax
    from victr_jax import clip
    jobs = json.load(open(sys.argv[1]))
    out = {}
    for name, job in jobs.items():
        inputs = np.load(job["inputs"])
        model, params = clip.load(job["dst"])
        with jax.default_matmul_precision("highest"):
            img = model.apply({"params": params}, inputs["images"], method=model.encode_image)
            txt = model.apply({"params": params}, inputs["tokens"], method=model.encode_text)
        out[name + "/img"] = np.asarray(clip.l2_normalize(img))
        out[name + "/txt"] = np.asarray(clip.l2_normalize(txt))
    assert "torch" not in {m.split(".")[0] for m, v in sys.modules.items() if v is not None}
    np.savez(sys.argv[2], **out)
""")


def test_every_format_round_trips_without_torch(tmp_path):
  tmp = str(tmp_path)
  jobs, want = {}, {}
  for name, (src, act, ref) in _formats(tmp).items():
    dst = f"{tmp}/converted_{name}"
    argv = [src, dst] + (["--act", act] if act else [])
    if name == "openai_torchscript":  # One through the installed console script.
      script = os.path.join(os.path.dirname(sys.executable), "victr-convert-clip")
      subprocess.run([script] + argv, check=True, capture_output=True)
    else:
      assert convert.main(argv) == 0
    assert sorted(os.listdir(dst)) == [checkpoint.CONFIG_FILE, checkpoint.PARAMS_FILE]
    images, tokens = clip_refs.inputs(ref)
    np.savez(f"{tmp}/in_{name}.npz", images=images, tokens=tokens)
    jobs[name] = {"dst": dst, "inputs": f"{tmp}/in_{name}.npz"}
    want[name] = clip_refs.embed(ref, images, tokens)
  with open(f"{tmp}/jobs.json", "w") as f:
    json.dump(jobs, f)
  env = dict(os.environ, PYTHONPATH=ROOT)
  subprocess.run([sys.executable, "-c", _NO_TORCH_LOADER, f"{tmp}/jobs.json", f"{tmp}/out.npz"],
                 check=True, env=env, cwd=tmp)
  got = np.load(f"{tmp}/out.npz")
  for name, (img, txt) in want.items():
    assert np.abs(got[name + "/img"] - img).max() <= 1e-4, name
    assert np.abs(got[name + "/txt"] - txt).max() <= 1e-4, name
  # The converted OpenAI checkpoint remembers QuickGELU; the HF one exact GELU.
  acts = {n: json.load(open(f"{tmp}/converted_{n}/clip_config.json"))["config"]["act"]
          for n in jobs}
  assert acts["openai_torchscript"] == "quick_gelu" and acts["hf_bin"] == "gelu"


@pytest.fixture(scope="module")
def oc_sd():
  return {k: v.numpy().copy() for k, v in clip_refs.open_clip_model(True).state_dict().items()}


def _save(sd, path):
  from safetensors.numpy import save_file
  save_file({k: np.array(v, order="C") for k, v in sd.items()}, path)
  return path


def test_unknown_key_is_named(oc_sd, tmp_path):
  sd = dict(oc_sd, **{"visual.transformer.resblocks.0.attn.extra_weight": np.zeros(3)})
  with pytest.raises(clip.CheckpointError, match=r"visual\.transformer\.resblocks\.0\.attn\.extra_weight"):
    clip.load(_save(sd, str(tmp_path / "x.safetensors")), act="quick_gelu")


def test_missing_key_is_named(oc_sd, tmp_path):
  sd = {k: v for k, v in oc_sd.items() if k != "transformer.resblocks.1.mlp.c_proj.bias"}
  with pytest.raises(clip.CheckpointError, match=r"transformer\.resblocks\.1\.mlp\.c_proj\.bias"):
    clip.load(_save(sd, str(tmp_path / "x.safetensors")), act="quick_gelu")


def test_shape_mismatch_names_key_and_both_shapes(oc_sd, tmp_path):
  path = _save(oc_sd, str(tmp_path / "x.safetensors"))
  cfg = checkpoint.load_params(path, act="quick_gelu")[0].replace(embed_dim=40)
  with pytest.raises(clip.CheckpointError) as e:
    clip.load(path, config=cfg)
  msg = str(e.value)
  assert "text_projection" in msg and "(128, 32)" in msg and "(128, 40)" in msg


def test_activation_required_for_state_dicts(oc_sd, tmp_path):
  with pytest.raises(clip.CheckpointError, match="act="):
    clip.load(_save(oc_sd, str(tmp_path / "x.safetensors")))


def test_unreadable_files_are_named(tmp_path):
  for name, data in (("bad.safetensors", b"not safetensors"), ("bad.pt", b"\x00garbage")):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(clip.CheckpointError, match=name):
      clip.load(str(path), act="gelu")
  with pytest.raises(clip.CheckpointError, match="no_such_file"):
    clip.load(str(tmp_path / "no_such_file.pt"))


def test_incomplete_converted_dir_is_refused(oc_sd, tmp_path):
  src = _save(oc_sd, str(tmp_path / "x.safetensors"))
  dst = tmp_path / "conv"
  assert convert.main([src, str(dst), "--act", "quick_gelu"]) == 0
  assert convert.main([src, str(dst), "--act", "quick_gelu"]) == 2  # exists, no --overwrite
  (dst / checkpoint.PARAMS_FILE).write_bytes((dst / checkpoint.PARAMS_FILE).read_bytes()[:1000])
  with pytest.raises(clip.CheckpointError, match="params.msgpack"):
    clip.load(str(dst))
  os.remove(dst / checkpoint.PARAMS_FILE)
  with pytest.raises(clip.CheckpointError, match="incomplete"):
    clip.load(str(dst))
  # A conversion that dies midway leaves only a .tmp- directory, never dst itself.
  assert not any(p.name == "conv2" for p in tmp_path.iterdir())


def _openai_state_dict(model, path):
  """`model`'s state dict plus the int buffers OpenAI's state dicts hold (open_clip's do
  not), written with torch.save or as safetensors."""
  import torch
  sd = {k: v.contiguous() for k, v in model.state_dict().items()}
  sd.update(input_resolution=torch.tensor(clip_refs.image_size(model)),
            context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
  if path.endswith(".safetensors"):
    from safetensors.torch import save_file
    save_file(sd, path)
  else:
    torch.save(sd, path)
  return path


@pytest.mark.parametrize("filename", ["openai_sd.pt", "openai_sd.safetensors"])
def test_openai_layout_state_dict_is_quick_gelu(filename, tmp_path):
  import jax
  ref = clip_refs.open_clip_model(True)
  path = _openai_state_dict(ref, str(tmp_path / filename))
  model, params = clip.load(path)  # no act: the layout says QuickGELU
  assert model.cfg.act == "quick_gelu"
  images, tokens = clip_refs.inputs(ref)
  want_img, want_txt = clip_refs.embed(ref, images, tokens)
  with jax.default_matmul_precision("highest"):
    img = model.apply({"params": params}, images, method=model.encode_image)
    txt = model.apply({"params": params}, tokens, method=model.encode_text)
  assert np.abs(np.asarray(clip.l2_normalize(img)) - want_img).max() <= 1e-4
  assert np.abs(np.asarray(clip.l2_normalize(txt)) - want_txt).max() <= 1e-4
  assert checkpoint.load_params(path, act="quick_gelu")[0].act == "quick_gelu"
  with pytest.raises(clip.CheckpointError, match=rf"{filename}.*'gelu'.*'quick_gelu'"):
    clip.load(path, act="gelu")
  dst = str(tmp_path / "converted")
  assert convert.main([path, dst]) == 0
  assert clip.load_params(dst)[0].act == "quick_gelu"
  assert convert.main([path, str(tmp_path / "c2"), "--act", "gelu"]) == 2
