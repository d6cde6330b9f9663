"""experiments/recipe_dynamics.py's bookkeeping: the recipes' real step counts, the
direction metric and the affinity table (no training here: that is the benchmark's job)."""
import numpy as np

from data_pipelines import synthetic
from experiments import recipe_dynamics as rd


def test_real_steps_follow_the_recipes_sizes_batches_and_epochs():
  # HMDB51 2-shot: 102 videos, batch 64, 50 epochs; UCF101 16-shot: 1,616 videos;
  # zero-shot: ~240k Kinetics-400 videos, batch 256, 10 epochs.
  assert rd.recipe_steps("few_shot_hmdb51_k2")[1] == 80
  assert rd.recipe_steps("few_shot_ucf101_k16")[1] == 1263
  assert rd.recipe_steps("zero_shot")[1] == 9375
  assert rd.recipe_steps("base_to_novel_k400")[1] == 550  # ViFi-CLIP: 11 epochs
  rc, _ = rd.recipe_steps("few_shot_hmdb51_k2")
  assert rc.optim.lr == 2e-6


def test_direction_accuracy_counts_videos_on_the_axis():
  nm = len(synthetic.MOTIONS)
  grow, shrink, left = 4, 5, 0
  labels = np.array([grow, grow, shrink, shrink, left, nm + grow])
  preds = np.array([grow, shrink, shrink, left, left, grow])  # 4th: off the axis
  # On the growing/shrinking axis and predicted on it: videos 0, 1, 2, 5 -> 3 of 4 right.
  assert rd.direction_accuracy(labels, preds, rd.GROWING_SHRINKING) == 0.75


def test_affinity_table_default_keeps_tokens_alike_at_both_sizes():
  rows = {r["affinity"]: r for r in rd.affinity_table(frames=16)}
  old = rows["softmax, CLIP scale (old)"]
  new = rows["softmax, z-scored, T=0.5 (default)"]
  assert old["J=501"] < 0.1 and abs(old["J=501 class weight"] - old["J=152 class weight"]) > 0.5
  assert new["J=501"] > 0.1 and abs(new["J=501"] - new["J=152"]) < 0.06
  assert abs(new["J=501 class weight"] - 1) < 0.1 and abs(new["J=152 class weight"] - 1) < 0.1


def test_demo_and_charades_recipes_and_variant_overrides(tmp_path):
  """'demo' is the main job's own setting (its 200 steps); 'charades' trains multi-label
  on the 'sequences' data with the recipe's logit bias; a variant carries its overrides."""
  import argparse
  assert rd.recipe_steps("demo")[1] == 200
  assert rd.recipe_steps("charades")[1] == 6239  # 50 epochs x 7,985 videos / 64
  args = argparse.Namespace(max_steps=300, batch=16, test_per_class=4, set="")
  cfg, steps, real = rd.recipe_config("charades", "mean_pool+model.logit_bias_init=-5", 1,
                                      args, str(tmp_path / "data"), "")
  assert (steps, real) == (300, 6239) and cfg.seed == 1 and cfg.model.name == "mean_pool"
  assert cfg.data.multi_label and cfg.data.synthetic_kind == "sequences"
  assert cfg.data.synthetic_dir.endswith("data_sequences")
  assert cfg.model.logit_bias and cfg.model.logit_bias_init == -5
  cfg, _, _ = rd.recipe_config("demo", "victr+model.head.link=embeddings", 0, args, "d", "")
  assert cfg.model.head.link == "embeddings" and not cfg.data.multi_label
  assert cfg.optim.lr == 3e-4 and cfg.num_train_steps == 200


def test_parts_accuracy_splits_colour_axis_and_direction():
  nm = len(synthetic.MOTIONS)
  labels = np.array([0, 1, 2, 4, nm + 0])
  preds = np.array([0, 0, 0, 4, 2 * nm + 1])  # right; reverse; other axis; right; colour+rev
  acc = rd.parts_accuracy(labels, preds)
  assert acc["colour"] == 0.8 and acc["axis"] == 0.8 and acc["motion"] == 0.4
  assert acc["direction"] == 0.5  # of the 4 on the right axis, 2 right
