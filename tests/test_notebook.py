"""notebooks/demo.ipynb runs top to bottom (tiny model, generated video), on a CLIP
checkpoint and on a trained VicTR work directory."""
import importlib
import os

import nbformat
from nbclient import NotebookClient

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


def test_demo_notebook_executes(tmp_path, monkeypatch):
  monkeypatch.delenv("VICTR_WORKDIR", raising=False)
  monkeypatch.chdir(tmp_path)  # no main job's work directory to find here
  nb, outputs = _execute(tmp_path, monkeypatch)
  assert "a red shape moving to the left" in outputs and "fresh head on" in outputs
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
