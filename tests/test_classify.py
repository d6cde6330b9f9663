"""victr-classify on a generated video: converted CLIP checkpoints and trained work dirs."""
import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines import video_io
from victr_jax import classify, clip, train


@pytest.fixture(scope="module")
def video_and_ckpt(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("classify")
  frames = np.random.default_rng(0).integers(0, 255, (12, 40, 48, 3)).astype(np.uint8)
  video = str(tmp / "clip.mp4")
  video_io.write_video(video, frames, fps=8)
  cfg = clip.get_config("tiny")
  _, params = clip.init(cfg)
  ckpt = clip.save_converted(cfg, params, str(tmp / "tiny_clip"))
  return video, ckpt


def test_console_script_prints_a_ranked_list_and_json(video_and_ckpt):
  video, ckpt = video_and_ckpt
  script = os.path.join(os.path.dirname(sys.executable), "victr-classify")
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  out = subprocess.run([script, video, "--checkpoint", ckpt, "--labels",
                        "running,jumping,swimming,cooking", "--top_k", "3"],
                       capture_output=True, text=True, env=env, check=True).stdout
  lines = [l for l in out.splitlines() if l.strip()[:2] in ("1.", "2.", "3.")]
  assert len(lines) == 3 and "CLIP zero-shot" in out
  res = json.loads(subprocess.run(
      [script, video, "--checkpoint", ckpt, "--labels", "running,jumping,swimming", "--json"],
      capture_output=True, text=True, env=env, check=True).stdout)
  probs = [p["probability"] for p in res["predictions"]]
  assert sorted(p["label"] for p in res["predictions"]) == ["jumping", "running", "swimming"]
  assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-4


def test_zero_shot_equals_clip_frame_average(video_and_ckpt):
  video, ckpt = video_and_ckpt
  res = classify.classify(video, ckpt, "running,jumping,swimming", top_k=3, num_frames=4)
  model, params = clip.load(ckpt)
  frames = classify._frames(video, 4, 32)
  f = np.asarray(model.apply({"params": params}, frames, method=model.encode_image)).mean(0)
  tok = clip.trim_tokens(clip.tokenize([f"a video of a person {l}." for l in
                                        ("running", "jumping", "swimming")]))
  e = np.asarray(model.apply({"params": params}, tok, method=model.encode_text))
  logits = min(np.exp(float(params["logit_scale"])), 100) * (
      f / np.linalg.norm(f)) @ (e / np.linalg.norm(e, axis=1, keepdims=True)).T
  p = np.exp(logits - logits.max())
  p /= p.sum()
  got = {r["label"]: r["probability"] for r in res["predictions"]}
  np.testing.assert_allclose([got[l] for l in ("running", "jumping", "swimming")], p, atol=1e-4)


def test_trained_work_directory(video_and_ckpt, tmp_path, monkeypatch):
  video, _ = video_and_ckpt
  monkeypatch.chdir(tmp_path)  # a relative work directory, as users type it
  c = importlib.import_module("configs.demo").get_config("steps=1")
  c.data.synthetic_dir = str(tmp_path / "syn")
  c.data.synthetic_per_class = {"train": 1, "test": 1}
  c.data.batch_size = c.data.eval_batch_size = 8
  c.evals = {}
  train.run(c, str(tmp_path / "wd"), mode="train")
  res = classify.classify(video, "wd", "a red shape moving to the left,a green shape growing large", top_k=2)
  assert res["model"].startswith("victr work directory, step 1")
  assert len(res["predictions"]) == 2


@pytest.mark.parametrize("case", ["bad_video", "no_labels", "no_checkpoint"])
def test_clear_errors(case, video_and_ckpt, tmp_path, capsys):
  video, ckpt = video_and_ckpt
  bad = tmp_path / "broken.mp4"
  bad.write_bytes(b"not a video" * 10)
  argv = {"bad_video": [str(bad), "--checkpoint", ckpt, "--labels", "a,b"],
          "no_labels": [video, "--checkpoint", ckpt, "--labels", " , "],
          "no_checkpoint": [video, "--checkpoint", str(tmp_path / "missing"), "--labels", "a"]}[case]
  assert classify.main(argv) == 2
  err = capsys.readouterr().err
  want = {"bad_video": "broken.mp4", "no_labels": "--labels", "no_checkpoint": "missing"}[case]
  assert "victr-classify: error:" in err and want in err
