"""notebooks/demo.ipynb runs top to bottom on CPU (generated video): with OpenAI's ViT-B/16
fetched as Colab fetches it, a server on 127.0.0.1 standing in for OpenAI's (a tiny
OpenAI-layout checkpoint at a URL that carries its SHA-256), and with a trained VicTR work
directory."""
import importlib
import os

import nbformat
from nbclient import NotebookClient

import clip_refs
import http_files
import xla_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _execute(tmp_path, monkeypatch):
  monkeypatch.setenv("VICTR_NOTEBOOK_OUT", str(tmp_path))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("XLA_FLAGS", xla_env.flags(devices=None))
  monkeypatch.setenv("PYTHONPATH", ROOT)
  nb = nbformat.read(os.path.join(ROOT, "notebooks", "demo.ipynb"), as_version=4)
  NotebookClient(nb, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                    for o in c.get("outputs", []))
  return nb, outputs


def test_demo_notebook_fetches_clip_and_classifies(tmp_path, monkeypatch):
  monkeypatch.delenv("VICTR_WORKDIR", raising=False)
  monkeypatch.delenv("VICTR_CHECKPOINT", raising=False)
  monkeypatch.chdir(tmp_path)  # no main job's work directory to find here
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  pt = str(tmp_path / "tiny_openai.pt")
  clip_refs.save_openai_torchscript(clip_refs.open_clip_model(True), pt)
  data = open(pt, "rb").read()
  with http_files.serving() as server:
    path = http_files.serve_clip(server, monkeypatch, data)
    nb, outputs = _execute(tmp_path, monkeypatch)
    assert server.requests == [(path, None)]  # fetched once
  converted = tmp_path / "cache" / "victr-jax" / "converted" / "ViT-B-16"
  assert "runtime: cpu" in outputs
  assert f"ViT-B/16: {tmp_path}/cache/victr-jax/clip/ViT-B-16.pt (SHA-256 checked)" in outputs
  assert f"model: {converted}" in outputs and (converted / "clip_config.json").exists()
  assert "a red shape moving to the left" in outputs and f"fresh head on {converted}" in outputs
  assert "RANDOM" not in outputs
  assert (tmp_path / "affinities.png").stat().st_size > 1000
  images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
  assert images


def test_demo_notebook_draws_a_trained_work_directory(tmp_path, monkeypatch):
  """Given a trained VicTR work directory, the predictions and the affinities are its."""
  from victr_jax import train  # pylint: disable=g-import-not-at-top
  c = importlib.import_module("configs.demo").get_config("steps=2")
  c.data.synthetic_dir = str(tmp_path / "syn")
  c.data.synthetic_per_class = {"train": 1, "test": 1}
  c.evals = {}
  train.run(c, str(tmp_path / "wd"), mode="train")
  monkeypatch.setenv("VICTR_WORKDIR", str(tmp_path / "wd"))
  nb, outputs = _execute(tmp_path, monkeypatch)
  assert outputs.count("victr work directory, step 2") == 2  # classify, then the affinities
  assert "-> predicted: a " in outputs
  assert (tmp_path / "affinities.png").stat().st_size > 1000
