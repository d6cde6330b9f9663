"""notebooks/demo.ipynb runs top to bottom (tiny model, generated video)."""
import os

import nbformat
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_notebook_executes(tmp_path, monkeypatch):
  monkeypatch.setenv("VICTR_NOTEBOOK_OUT", str(tmp_path))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
  monkeypatch.setenv("PYTHONPATH", ROOT)
  nb = nbformat.read(os.path.join(ROOT, "notebooks", "demo.ipynb"), as_version=4)
  NotebookClient(nb, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                    for o in c.get("outputs", []))
  assert "a red shape moving to the left" in outputs
  assert (tmp_path / "affinities.png").stat().st_size > 1000
  images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
  assert images
