"""The main job (experiments/demo.py) end to end on a few steps, and its motion metrics."""
import json
import os

import numpy as np

from data_pipelines import synthetic
from experiments import demo


def test_motion_scores_on_hand_made_confusions():
  n = len(synthetic.classes())
  motion = np.arange(n) % 6
  perfect = np.eye(n)
  axes = dict.fromkeys(demo.AXES, 1.0)
  assert demo.motion_scores(perfect) == {"motion_accuracy": 1.0, "axis_accuracy": 1.0,
                                         "colour_accuracy": 1.0, "direction_accuracy": 1.0,
                                         "direction_accuracy_per_axis": axes}
  # Every video predicted as its reverse motion (same colour): axis right, direction wrong.
  reverse = np.zeros((n, n))
  for i in range(n):
    reverse[i, i + 1 if motion[i] % 2 == 0 else i - 1] = 1
  assert demo.motion_scores(reverse) == {"motion_accuracy": 0.0, "axis_accuracy": 1.0,
                                         "colour_accuracy": 1.0, "direction_accuracy": 0.0,
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
  assert np.isclose(s["axis_accuracy"], 8 / 9) and np.isclose(s["colour_accuracy"], 6 / 9)
  # Per axis, over the videos of that axis only: left/right 3 of 3 (the wrong-axis one left
  # out), top/bottom 0 of 1, growing/shrinking 2 of 4.
  assert s["direction_accuracy_per_axis"] == {"left_right": 1.0, "top_bottom": 0.0,
                                              "growing_shrinking": 0.5}


def test_over_seeds_against_numpy():
  per_seed = [{"top1": 0.5, "axes": {"a": 0.25}}, {"top1": 0.7, "axes": {"a": 0.75}},
              {"top1": 0.6, "axes": {"a": 0.5}}]
  r = demo.over_seeds(per_seed)
  assert r["seeds"] == 3 and r["per_seed"] == per_seed
  np.testing.assert_allclose([r["mean"]["top1"], r["std"]["top1"]],
                             [0.6, np.std([0.5, 0.7, 0.6], ddof=1)])
  np.testing.assert_allclose([r["mean"]["axes"]["a"], r["std"]["axes"]["a"]], [0.5, 0.25])
  one = demo.over_seeds(per_seed[:1])
  assert one["std"] == {"top1": 0.0, "axes": {"a": 0.0}} and one["mean"] == per_seed[0]


def test_main_job_writes_table_results_and_pictures(tmp_path):
  wd = str(tmp_path / "demo")
  rc = demo.main(["--workdir", wd, "--steps", "2", "--pretrain_steps", "3", "--seeds", "2",
                  "--ablation_seeds", "1", "--per_class", "4,2",
                  "--rows", "clip_zero_shot,victr,classifier_visual"])
  assert rc == 0
  res = json.load(open(os.path.join(wd, "results.json")))
  rows = res["rows"]
  # Ablations run seen-only by default (--b2n_rows); the closed set never has novel classes.
  assert set(rows) == {"clip_zero_shot/full", "clip_zero_shot/base_to_novel", "victr/full",
                       "victr/base_to_novel", "classifier_visual/full"}
  seeds = {k: r["seeds"] for k, r in rows.items()}
  assert seeds == {"clip_zero_shot/full": 1, "clip_zero_shot/base_to_novel": 1,
                   "victr/full": 2, "victr/base_to_novel": 2, "classifier_visual/full": 1}
  assert os.path.isdir(os.path.join(wd, "runs", "victr_full_seed1"))
  for key, r in rows.items():
    for per in r["per_seed"]:
      per_axis = dict(per).pop("direction_accuracy_per_axis", {})
      assert all(0.0 <= v <= 1.0 for v in [*per.values(), *per_axis.values()]
                 if not isinstance(v, dict)), (key, per)
      assert set(per_axis) == (set(demo.AXES) if key.endswith("/full") else set())
      if key.endswith("/full"):  # a right class has the right motion
        assert per["motion_accuracy"] >= per["top1"] - 1e-9, (key, per)
    assert set(r["mean"]) == set(r["std"]) == set(r["per_seed"][0])
  assert set(res["clip_attribute_accuracy"]) == {*synthetic.ATTRIBUTES, "left_right",
                                                 "horizontal_vertical",
                                                 "top_bottom"}
  table = open(os.path.join(wd, "results.md")).read()
  victr_row = [l for l in table.splitlines() if l.startswith("| VicTR | ")][0]
  v, b = rows["victr/full"], rows["victr/base_to_novel"]
  cell = lambda r, k: f"{100 * r['mean'][k]:.1f} ± {100 * r['std'][k]:.1f}"
  assert victr_row == (f"| VicTR | 2/2 | {cell(v, 'top1')} | {cell(v, 'axis_accuracy')} | "
                       f"{cell(v, 'direction_accuracy')} | {cell(v, 'colour_accuracy')} | "
                       f"{cell(b, 'base_top1')} | "
                       f"{cell(b, 'novel_top1')} | {cell(b, 'harmonic_mean')} |")
  closed = [l for l in table.splitlines() if "visual classifier (closed set)" in l][0]
  assert closed.endswith("| — | — | — |")  # an ablation row: seen classes only
  assert table.count("\n| ") == 2 * (1 + 3) and table.count("\n|---") == 2
  for pic in ("curves.png", "confusion_victr.png", "affinities_0.png", "affinities_1.png",
              "affinities_2.png"):
    assert os.path.getsize(os.path.join(wd, pic)) > 1000, pic
  # The pretrained CLIP is a converted checkpoint users and victr-classify can load.
  assert os.path.exists(os.path.join(wd, "clip", "clip_config.json"))
  assert os.listdir(os.path.join(wd, "xla_cache"))  # compiled steps kept for the next run


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
