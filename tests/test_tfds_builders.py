"""The manual_dir TFDS builders read official annotation layouts and feed the pipeline."""
import csv

import ml_collections
import numpy as np

from data_pipelines import pipeline, records, splits, tfds_builders, video_io
from test_prepare import COLORS, make_video, write_text


def _cfg(num_classes):
  return ml_collections.ConfigDict(dict(
      num_frames=4, sampling="stride", stride=1, image_size=32, train_aug="none", flip=False,
      crop_scale=(0.4, 1.0), multi_label=False, num_classes=num_classes, batch_size=2,
      eval_batch_size=2, num_test_clips=1, num_test_crops=1, seed=0, num_threads=1))


def test_ucf101_builder_from_manual_dir(tmp_path):
  manual = tmp_path / "manual"
  names = splits.read_classnames("ucf101")
  picks = [0, 5, 100]  # Apply Eye Makeup, Basketball Dunk?, ...
  ann = manual / "ucfTrainTestlist"
  write_text(str(ann / "classInd.txt"), [f"{i + 1} {n.replace(' ', '')}" for i, n in enumerate(names)])
  train, test = [], []
  for k, c in enumerate(picks):
    cls = names[c].replace(" ", "")
    for g in (1, 9):
      rel = f"{cls}/v_{cls}_g{g:02d}_c01.avi"
      make_video(str(manual / "UCF-101" / rel), COLORS[k])
      (test if g == 1 else train).append((rel, c))
  write_text(str(ann / "trainlist01.txt"), [f"{r} {c + 1}" for r, c in train])
  write_text(str(ann / "testlist01.txt"), [r for r, _ in test])
  builder = tfds_builders.build(tfds_builders.Ucf101, str(tmp_path / "tfds"), manual_dir=str(manual),
                                config="split1")
  assert builder.info.splits["train"].num_examples == 3
  assert builder.info.features["labels"].feature.num_classes == 101
  src = tfds_builders.TFDSSource("ucf101/split1", "test", str(tmp_path / "tfds"))
  got = sorted((src[i].labels[0], len(src[i].frames)) for i in range(len(src)))
  assert [g[0] for g in got] == picks and all(g[1] == 8 for g in got)
  batches = list(pipeline.eval_dataset(src, _cfg(101)))
  assert sum(int(b["mask"].sum()) for b in batches) == 3


def test_charades_builder_is_multi_label(tmp_path):
  manual = tmp_path / "manual"
  make_video(str(manual / "Charades_v1_480" / "AAAA1.mp4"), COLORS[0])
  make_video(str(manual / "Charades_v1_480" / "BBBB2.mp4"), COLORS[1])
  for split, rows in (("train", [("AAAA1", "c092 1.0 2.0;c003 0.0 1.0")]),
                      ("test", [("BBBB2", "c156 0.5 3.0")])):
    with open(manual / f"Charades_v1_{split}.csv", "w", newline="") as f:
      w = csv.writer(f)
      w.writerow(["id", "subject", "scene", "actions", "length"])
      for vid, actions in rows:
        w.writerow([vid, "S1", "Kitchen", actions, "10"])
  tfds_builders.build(tfds_builders.Charades, str(tmp_path / "tfds"), manual_dir=str(manual))
  src = tfds_builders.TFDSSource("charades", "train", str(tmp_path / "tfds"))
  assert src[0].labels == [3, 92]
  cfg = _cfg(157)
  cfg.multi_label = True
  b = next(iter(pipeline.train_dataset(src, cfg)))
  assert b["label"].shape == (2, 157) and np.all(b["label"][:, [3, 92]] == 1)


def test_kinetics_builder_keeps_clip_times_and_max_frames(tmp_path, monkeypatch):
  monkeypatch.setattr(tfds_builders.Kinetics400, "SHORT_SIDE", 16)
  monkeypatch.setattr(tfds_builders.Kinetics400, "MAX_FRAMES", 3)
  manual = tmp_path / "manual"
  k400 = splits.read_classnames("kinetics400")
  path = make_video(str(manual / "videos" / "abc_defghij_000010_000020.mp4"), COLORS[0])
  with open(manual / "train.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
    w.writerow([k400[0], "abc_defghij", 10, 20, "train"])
  tfds_builders.build(tfds_builders.Kinetics400, str(tmp_path / "tfds"), manual_dir=str(manual))
  rec = tfds_builders.TFDSSource("kinetics400", "train", str(tmp_path / "tfds"))[0]
  # The same record as victr-prepare's path gives for these settings.
  assert rec == records.video_to_record(path, [0], [k400[0]], "abc_defghij_000010_000020",
                                        short_side=16, max_frames=3, start_us=10_000_000,
                                        end_us=20_000_000)
  assert len(rec.frames) == 3 and video_io.decode_jpeg(rec.frames[0]).shape == (16, 20, 3)
  assert (rec.start_us, rec.end_us) == (10_000_000, 20_000_000)
