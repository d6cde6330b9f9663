"""The main job (victr_jax/demo.py) end to end on a few steps, and its motion metrics."""
import json
import os

import numpy as np

from data_pipelines import synthetic
from victr_jax import demo


def test_motion_scores_on_hand_made_confusions():
  n = len(synthetic.classes())
  motion = np.arange(n) % 6
  perfect = np.eye(n)
  assert demo.motion_scores(perfect) == {"motion_accuracy": 1.0, "direction_accuracy": 1.0}
  # Every video predicted as its reverse motion (same colour): axis right, direction wrong.
  reverse = np.zeros((n, n))
  for i in range(n):
    reverse[i, i + 1 if motion[i] % 2 == 0 else i - 1] = 1
  assert demo.motion_scores(reverse) == {"motion_accuracy": 0.0, "direction_accuracy": 0.0}
  # Wrong colour, right motion: motion right. Wrong axis: left out of direction accuracy.
  m = np.zeros((n, n))
  m[0, 6] = 3      # red moving left -> green moving left
  m[1, 2] = 1      # red moving right -> red moving up (wrong axis)
  m[2, 3] = 1      # red moving up -> red moving down (reverse)
  s = demo.motion_scores(m)
  assert np.isclose(s["motion_accuracy"], 3 / 5) and np.isclose(s["direction_accuracy"], 3 / 4)


def test_main_job_writes_table_results_and_pictures(tmp_path):
  wd = str(tmp_path / "demo")
  rc = demo.main(["--workdir", wd, "--steps", "2", "--pretrain_steps", "3",
                  "--rows", "clip_zero_shot,victr,classifier_visual"])
  assert rc == 0
  res = json.load(open(os.path.join(wd, "results.json")))
  rows = res["rows"]
  assert set(rows) == {"clip_zero_shot/full", "clip_zero_shot/base_to_novel", "victr/full",
                       "victr/base_to_novel", "classifier_visual/full"}  # closed set: no novel
  for key, r in rows.items():
    assert all(0.0 <= v <= 1.0 for v in r.values()), (key, r)
  assert set(res["clip_attribute_accuracy"]) == set(synthetic.ATTRIBUTES)
  table = open(os.path.join(wd, "results.md")).read()
  assert "| VicTR |" in table and "| VicTR, visual classifier (closed set) |" in table
  assert table.count("\n|") == 2 + 3 and "—" in table
  for pic in ("curves.png", "confusion_victr.png", "affinities_0.png", "affinities_2.png"):
    assert os.path.getsize(os.path.join(wd, pic)) > 1000, pic
  # The pretrained CLIP is a converted checkpoint users and victr-classify can load.
  assert os.path.exists(os.path.join(wd, "clip", "clip_config.json"))
