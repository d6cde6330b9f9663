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
  axes = dict.fromkeys(demo.AXES, 1.0)
  assert demo.motion_scores(perfect) == {"motion_accuracy": 1.0, "direction_accuracy": 1.0,
                                         "direction_accuracy_per_axis": axes}
  # Every video predicted as its reverse motion (same colour): axis right, direction wrong.
  reverse = np.zeros((n, n))
  for i in range(n):
    reverse[i, i + 1 if motion[i] % 2 == 0 else i - 1] = 1
  assert demo.motion_scores(reverse) == {"motion_accuracy": 0.0, "direction_accuracy": 0.0,
                                         "direction_accuracy_per_axis": dict.fromkeys(axes, 0.0)}
  # Wrong colour, right motion: motion right. Wrong axis: left out of direction accuracy.
  m = np.zeros((n, n))
  m[0, 6] = 3      # red moving left -> green moving left
  m[1, 2] = 1      # red moving right -> red moving up (wrong axis)
  m[2, 3] = 1      # red moving up -> red moving down (reverse)
  m[4, 4] = 2      # red growing -> red growing
  m[5, 4] = 2      # red shrinking -> red growing (reverse)
  s = demo.motion_scores(m)
  assert np.isclose(s["motion_accuracy"], 5 / 9) and np.isclose(s["direction_accuracy"], 5 / 8)
  # Per axis, over the videos of that axis only: left/right 3 of 3 (the wrong-axis one left
  # out), top/bottom 0 of 1, growing/shrinking 2 of 4.
  assert s["direction_accuracy_per_axis"] == {"left_right": 1.0, "top_bottom": 0.0,
                                              "growing_shrinking": 0.5}


def test_main_job_writes_table_results_and_pictures(tmp_path):
  wd = str(tmp_path / "demo")
  rc = demo.main(["--workdir", wd, "--steps", "2", "--pretrain_steps", "3",
                  "--rows", "clip_zero_shot,victr,no_aux,classifier_visual"])
  assert rc == 0
  res = json.load(open(os.path.join(wd, "results.json")))
  rows = res["rows"]
  # Ablations run seen-only by default (--b2n_rows); the closed set never has novel classes.
  assert set(rows) == {"clip_zero_shot/full", "clip_zero_shot/base_to_novel", "victr/full",
                       "victr/base_to_novel", "no_aux/full", "classifier_visual/full"}
  for key, r in rows.items():
    per_axis = r.pop("direction_accuracy_per_axis", {})
    assert all(0.0 <= v <= 1.0 for v in [*r.values(), *per_axis.values()]), (key, r)
    assert set(per_axis) == (set(demo.AXES) if key.endswith("/full") else set())
    if key.endswith("/full"):  # a right class has the right motion
      assert r["motion_accuracy"] >= r["top1"] - 1e-9, (key, r)
  assert set(res["clip_attribute_accuracy"]) == {*synthetic.ATTRIBUTES, "left_right",
                                                 "top_bottom"}
  table = open(os.path.join(wd, "results.md")).read()
  victr_row = [l for l in table.splitlines() if l.startswith("| VicTR |")][0]
  v, b = rows["victr/full"], rows["victr/base_to_novel"]
  assert victr_row == (f"| VicTR | {100 * v['top1']:.1f} | {100 * v['motion_accuracy']:.1f} | "
                       f"{100 * v['direction_accuracy']:.1f} | {100 * b['base_top1']:.1f} | "
                       f"{100 * b['novel_top1']:.1f} | {100 * b['harmonic_mean']:.1f} |")
  for title in ("visual classifier (closed set)", "no auxiliary text"):
    assert [l for l in table.splitlines() if title in l][0].endswith("| — | — | — |")
  assert table.count("\n|") == 2 + 4
  for pic in ("curves.png", "confusion_victr.png", "affinities_0.png", "affinities_1.png",
              "affinities_2.png"):
    assert os.path.getsize(os.path.join(wd, pic)) > 1000, pic
  # The pretrained CLIP is a converted checkpoint users and victr-classify can load.
  assert os.path.exists(os.path.join(wd, "clip", "clip_config.json"))


def test_mirrored_frames_swap_their_place_words():
  v = synthetic.render(1, np.random.default_rng(0), num_frames=8, size=32)  # moving right
  a = v.frame_attributes(7)
  assert "right" in a["place"]
  frame, b = synthetic.mirrored(v.frames[7], a, "x")
  assert b["place"] == a["place"].replace("right", "left") and b["size"] == a["size"]
  np.testing.assert_array_equal(frame[:, ::-1], v.frames[7])
  frame, c = synthetic.mirrored(v.frames[7], a, "y")
  assert "right" in c["place"] and np.array_equal(frame[::-1], v.frames[7])


def test_main_job_rejects_unknown_rows(tmp_path):
  import pytest
  with pytest.raises(SystemExit):
    demo.main(["--workdir", str(tmp_path), "--rows", "victr,no_such_row"])
  with pytest.raises(SystemExit):
    demo.main(["--workdir", str(tmp_path), "--b2n_rows", "victr,no_such_row"])
