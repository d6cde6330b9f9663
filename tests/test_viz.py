"""Pictures: affinity maps and training curves are written as PNG files."""
import json

import numpy as np

from victr_jax import viz


def _is_png(path):
  with open(path, "rb") as f:
    return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_affinity_and_curve_pictures(tmp_path):
  aff = np.random.default_rng(0).random((3, 2, 8, 5))
  p = viz.plot_affinities(aff, ["a", "b", "c", "x", "y"], str(tmp_path / "aff.png"), 1, "video 1")
  assert _is_png(p)
  with open(tmp_path / "m.jsonl", "w") as f:
    for s in range(1, 6):
      f.write(json.dumps({"step": s, "train/loss": 3 - s / 5, "train/top1": s / 10}) + "\n")
    f.write(json.dumps({"step": 5, "eval/test/top1": 0.4}) + "\n")
  assert _is_png(viz.plot_curves(str(tmp_path / "m.jsonl"), str(tmp_path / "c.png")))
