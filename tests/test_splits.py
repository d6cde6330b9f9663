"""Protocol splits, list files, templates and auxiliary vocabulary (the protocols:
docs/method.md#10-evaluation-protocols; the vocabulary: docs/method.md#auxiliary-prompts)."""
import os
import random
import warnings

import numpy as np
import pytest

from data_pipelines import splits as S
from victr_jax import metrics

SIZES = {"kinetics400": 400, "kinetics600": 600, "ucf101": 101, "hmdb51": 51, "ssv2": 174}
BASE_NOVEL = {"kinetics400": (200, 200), "hmdb51": (26, 25), "ucf101": (51, 50),
              "ssv2": (87, 87)}


def _videos(num_classes, per_class):
  """A single-label list: `per_class[c]` (or `per_class`) videos for each class c."""
  counts = per_class if isinstance(per_class, list) else [per_class] * num_classes
  return [(f"c{c:03d}/v{i:03d}.mp4", [c]) for c in range(num_classes) for i in range(counts[c])]


# List files ------------------------------------------------------------------------------


def test_list_round_trip(tmp_path):
  items = [("a/x 1.mp4", [3]), ("b/y.mp4", [3, 17]), ("c.avi", [0])]
  path = str(tmp_path / "sub" / "train.txt")
  S.write_list(path, items)
  assert S.read_list(path) == items
  assert open(path).read() == "a/x 1.mp4 3\nb/y.mp4 3,17\nc.avi 0\n"
  assert not [f for f in os.listdir(tmp_path / "sub") if f != "train.txt"]  # No temp left.


def test_list_skips_blanks_and_hash_names_a_video(tmp_path):
  # HMDB51 has real videos whose names begin with '#': a list line is a video, never a
  # comment (ViFi-CLIP's HMDB51 16-shot list holds two of them).
  path = tmp_path / "l.txt"
  path.write_text("#20_Rhythm_clap_u_nm_np1_fr_goo_2.avi 2\n\nv1.mp4 2\n   \n"
                  "clap/#20_Rhythm_clap_u_nm_np1_fr_goo_1.avi 2\nv2.mp4\t4,5\n")
  assert S.read_list(str(path)) == [
      ("#20_Rhythm_clap_u_nm_np1_fr_goo_2.avi", [2]), ("v1.mp4", [2]),
      ("clap/#20_Rhythm_clap_u_nm_np1_fr_goo_1.avi", [2]), ("v2.mp4", [4, 5])]
  assert [v for _, v, _ in S.read_video_list(str(path))][0].startswith("#20_")
  S.write_list(str(tmp_path / "w.txt"), [("#x.avi", [1])])  # and written back
  assert S.read_list(str(tmp_path / "w.txt")) == [("#x.avi", [1])]


def test_video_list_without_labels(tmp_path):
  path = tmp_path / "testlist01.txt"  # UCF101's testlist: videos alone
  path.write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n#odd name.avi\n")
  assert S.read_video_list(str(path)) == [
      (1, "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", None), (2, "#odd name.avi", None)]
  with pytest.raises(ValueError, match=r"testlist01\.txt:1:"):
    S.read_list(str(path))
  (tmp_path / "empty.txt").write_text("\n\n")
  with pytest.raises(ValueError, match="no videos listed"):
    S.read_video_list(str(tmp_path / "empty.txt"))


@pytest.mark.parametrize("bad", ["v3.mp4", "v3.mp4 x", "v3.mp4 1,", "v3.mp4 -1", "v3.mp4 1.5"])
def test_list_malformed_line_names_file_and_line(tmp_path, bad):
  path = tmp_path / "l.txt"
  path.write_text(f"v0.mp4 1\nv1.mp4 0\n\n{bad}\n")
  with pytest.raises(ValueError, match=r"l\.txt:4:"):
    S.read_list(str(path))


def test_write_list_rejects_unwritable(tmp_path):
  for item in [("", [1]), (" x.mp4", [1]), ("x.mp4", [])]:
    with pytest.raises(ValueError):
      S.write_list(str(tmp_path / "l.txt"), [item])
  assert not os.listdir(tmp_path)


def test_classnames(tmp_path):
  for name, size in SIZES.items():
    names = S.read_classnames(name)
    assert len(names) == size and len(set(names)) == size
  path = str(tmp_path / "names.txt")
  S.write_classnames(path, ["a b", "c (d)"])
  assert S.read_classnames(path) == ["a b", "c (d)"]
  # One key for every class-name match: case, spaces, punctuation and parentheses drop out.
  assert (S.class_key("Passing American football (in game)")
          == S.class_key("passing american football in game")
          == "passingamericanfootballingame")
  assert S.class_key("massaging person's  head") == "massagingpersonshead"
  assert S.class_key("ApplyEyeMakeup") == S.class_key("Apply Eye Makeup") == "applyeyemakeup"
  assert S.class_key("HandStandPushups") == S.class_key("Handstand Pushups")
  for name in SIZES:  # no two shipped classes share a key
    assert len({S.class_key(n) for n in S.read_classnames(name)}) == SIZES[name]


# Few-shot --------------------------------------------------------------------------------


def test_few_shot_k_per_class_and_reproducible():
  items = _videos(10, 20)
  picked = S.few_shot(items, 4, seed=0)
  labels = [l for _, (l,) in picked]
  assert np.bincount(labels).tolist() == [4] * 10
  assert picked == sorted(picked, key=lambda x: (x[1], x[0]))
  assert set(p for p, _ in picked) <= set(p for p, _ in items)
  shuffled = items[:]
  random.Random(3).shuffle(shuffled)
  assert S.few_shot(shuffled, 4, seed=0) == picked
  assert S.few_shot(items, 4, seed=1) != picked
  # A class's draw does not depend on the other classes present.
  assert S.few_shot(items[:40], 4, seed=0) == picked[:8]


def test_few_shot_warns_for_short_classes():
  items = _videos(4, [5, 1, 8, 2])
  with pytest.warns(UserWarning, match=r"fewer than 3 videos.*\[1, 3\]"):
    picked = S.few_shot(items, 3, seed=0)
  assert np.bincount([l for _, (l,) in picked]).tolist() == [3, 1, 3, 2]
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    S.few_shot(items, 1, seed=0)
  with pytest.raises(ValueError, match="single-label"):
    S.few_shot([("a.mp4", [1, 2])], 1, seed=0)


# Zero-shot on Kinetics-600 ---------------------------------------------------------------


def test_kinetics600_novel_classes():
  k400, k600 = S.read_classnames("kinetics400"), S.read_classnames("kinetics600")
  novel = S.kinetics600_novel_classes(k400, k600)
  assert len(novel) == 220 == len(set(novel))
  assert novel == S.kinetics600_novel_classes()
  k400_norm = {S.class_key(n) for n in k400}
  assert not {S.class_key(k600[i]) for i in novel} & k400_norm
  # 380 K400 classes are in K600 (11 of them renamed), 20 were dropped or split: 600 - 380.
  k600_norm = {S.class_key(n) for n in k600}
  shared = {S.K400_TO_K600_RENAMES.get(n, n) for n in k400_norm} & k600_norm
  assert len(shared) == 380 and "drinking" not in shared
  assert set(S.K400_TO_K600_RENAMES) <= k400_norm
  assert set(S.K400_TO_K600_RENAMES.values()) <= k600_norm
  names = {k600[i] for i in novel}
  assert "dyeing hair" not in names and "hurling (sport)" not in names
  assert {"dyeing eyebrows", "yarn spinning", "spelunking"} <= names


def test_kinetics600_zero_shot_splits():
  novel = set(S.kinetics600_novel_classes())
  draws = S.kinetics600_zero_shot_splits()
  assert len(draws) == 3
  for draw in draws:
    assert len(set(draw)) == len(draw) == 160 and draw == sorted(draw) and set(draw) <= novel
  assert len({tuple(d) for d in draws}) == 3
  assert S.kinetics600_zero_shot_splits(3, 160, 0) == draws
  assert S.kinetics600_zero_shot_splits(1, 160, 2) == draws[2:]


def test_kinetics600_peer_zero_shot_splits():
  k600 = S.read_classnames("kinetics600")
  novel = set(S.kinetics600_novel_classes())
  draws = S.kinetics600_peer_zero_shot_splits()
  assert [len(set(d)) for d in draws] == [160] * 3
  assert all(set(d) <= novel for d in draws)
  names = [{k600[i] for i in d} for d in draws]
  # Spot checks against ViFi-CLIP's labels/ZS_split{1,2,3}_K600.csv.
  assert {"acting in play", "yarn spinning"} <= names[0] and "staring" not in names[0]
  assert {"acting in play", "winking"} <= names[1] and "yarn spinning" not in names[1]
  assert {"staring", "wood burning (art)"} <= names[2] and "acting in play" not in names[2]
  never = {k600[i] for i in novel - set().union(*draws)}
  assert never == {"making horseshoes", "pillow fight", "spelunking"}


# Base-to-novel ---------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", sorted(BASE_NOVEL))
def test_base_novel_sizes(dataset):
  n = len(S.read_classnames(dataset))
  for ds in (dataset, None):
    base, novel = S.base_novel_classes(n, ds)
    assert (len(base), len(novel)) == BASE_NOVEL[dataset]
    assert sorted(base + novel) == list(range(n))
  assert S.base_novel_classes(n)[0] == list(range(BASE_NOVEL[dataset][0]))


def test_base_novel_peer_names():
  """Spot checks against ViFi-CLIP's labels/*_base_labels.csv and *_novel_labels.csv."""
  def names(dataset):
    cls = S.read_classnames(dataset)
    base, novel = S.base_novel_classes(len(cls), dataset)
    return {cls[i] for i in base}, {cls[i] for i in novel}

  base, novel = names("hmdb51")
  assert base == set(S.read_classnames("hmdb51")[25:])
  assert {"pour", "wave"} <= base and {"brush hair", "pick"} <= novel
  base, novel = names("kinetics400")
  assert {"getting a tattoo", "hurling sport", "playing harp"} <= base
  assert {"tying bow tie", "eating chips", "shooting goal soccer"} <= novel
  base, novel = names("ucf101")
  assert {"Typing", "Punch", "Apply Eye Makeup"} <= base and {"Playing Violin", "Yo Yo"} <= novel
  base, novel = names("ssv2")
  assert "Pouring something into something" in base
  assert "Poking a hole into some substance" in novel
  with pytest.raises(ValueError):
    S.base_novel_classes(50, "hmdb51")
  with pytest.raises(ValueError):
    S.base_novel_classes(157, "charades")


def test_base_to_novel():
  n = len(S.read_classnames("hmdb51"))
  items = _videos(n, 20)
  base, novel = S.base_novel_classes(n, "hmdb51")
  train = S.base_to_novel(items, n, shots=16, seed=1, dataset="hmdb51")
  assert np.bincount([l for _, (l,) in train], minlength=n)[base].tolist() == [16] * len(base)
  assert {l for _, (l,) in train} == set(base)
  assert S.base_to_novel(items, n, seed=1, dataset="hmdb51") == train
  assert S.base_to_novel(items, n, seed=2, dataset="hmdb51") != train
  test_base, test_novel = S.select_classes(items, base), S.select_classes(items, novel)
  assert len(test_base) + len(test_novel) == len(items)
  relabelled = S.select_classes(items, novel, relabel=True)
  assert {l for _, (l,) in relabelled} == set(range(len(novel)))
  assert S.select_classes([("m.mp4", [0, 30])], base) == []  # Mixed labels: in neither.
  assert metrics.harmonic_mean(0.8, 0.6) == pytest.approx(2 * 0.8 * 0.6 / 1.4)
  assert metrics.harmonic_mean(0.0, 0.0) == 0.0


# Templates and auxiliary vocabulary ------------------------------------------------------


def test_templates(tmp_path):
  templates = S.read_templates()
  assert 6 <= len(templates) <= 12
  assert all(t.format("x").count("x") >= 1 for t in templates)
  path = tmp_path / "t.txt"
  path.write_text("# c\na video of {}.\n\nno slot here\n")
  with pytest.raises(ValueError, match=r"t\.txt:4:"):
    S.read_templates(str(path))
  path.write_text("a {} of {}.\n")
  with pytest.raises(ValueError, match=r"t\.txt:1:"):
    S.read_templates(str(path))


def test_aux_vocab(tmp_path):
  phrases, categories, category_names = S.read_aux_vocab()
  assert category_names == ["objects", "people", "scenes"]
  assert categories.dtype == np.int32 and categories.shape == (len(phrases),)
  assert np.all(np.diff(categories) >= 0)
  for c in range(3):
    assert 25 <= np.sum(categories == c) <= 40
  assert phrases[0] == "a ball" and categories[0] == 0
  assert all(p and not p.startswith("#") for p in phrases)

  (tmp_path / "b.txt").write_text("# c\nx\n\ny\n")
  (tmp_path / "a.txt").write_text("z\n")
  (tmp_path / "notes.md").write_text("ignored\n")
  phrases, categories, category_names = S.read_aux_vocab(str(tmp_path))
  assert (phrases, categories.tolist(), category_names) == (["z", "x", "y"], [0, 1, 1],
                                                            ["a", "b"])
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ValueError, match="no"):
    S.read_aux_vocab(str(empty))
