"""victr-prepare: each layout -> records read back; corrupt videos; resume; ArrayRecord; CLI.

Tiny synthetic videos (8 frames of 32x40, one colour per class) are laid out the way each
dataset ships, with annotation files written here; the records are read back with
records.RecordSource and compared with video_io.decode_video under the same settings.
"""
import csv
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines import prepare, records, video_io
from data_pipelines.shards import sidecar_path

COLORS = [(220, 30, 30), (30, 220, 30), (30, 30, 220), (220, 220, 30), (30, 220, 220)]
SHORT = 16  # --short_side for all tests: 32x40 -> 16x20


def make_video(path, color, frames=8, fps=10, codec="mpeg4"):
  """A clip of one colour with a small moving bright square."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  video = np.zeros((frames, 32, 40, 3), np.uint8) + np.asarray(color, np.uint8)
  for t in range(frames):
    video[t, 2:6, 2 + t:6 + t] = 255
  video_io.write_video(path, video, fps, codec)
  return path


def corrupt_video(path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
  return path


def write_text(path, lines):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write("".join(line + "\n" for line in lines))
  return path


def run(*argv, workers=1):
  """prepare.main in this process; asserts success."""
  argv = [str(a) for a in argv] + ["--short_side", str(SHORT), "--workers", str(workers),
                                   "--no_progress"]
  assert prepare.main(argv) == 0


def shard_files(out, split, fmt="tfrecord"):
  ext = "array_record" if fmt == "array_record" else "tfrecord"
  return sorted(glob.glob(os.path.join(out, f"{split}.{ext}-?????-of-?????")))


def read_split(out, split, fmt="tfrecord"):
  """{video id: VideoRecord} of a split; asserts ids are unique."""
  source = records.RecordSource(shard_files(out, split, fmt))
  recs = [records.decode(source[i], source.where(i)) for i in range(len(source))]
  ids = [r.video_id for r in recs]
  assert len(ids) == len(set(ids)), ids
  return {r.video_id: r for r in recs}


def manifest(out):
  with open(os.path.join(out, "manifest.json")) as f:
    return json.load(f)


def classes(out):
  with open(os.path.join(out, "classes.txt")) as f:
    return f.read().splitlines()


def check_record(rec, path, color, labels, texts, **decode_kw):
  """Frame count as decode_video gives it, frame size, colour, labels and texts."""
  expected, _ = video_io.decode_video(path, short_side=SHORT, **decode_kw)
  assert len(rec.frames) == len(expected)
  first = video_io.decode_jpeg(rec.frames[0])
  assert first.shape == (16, 20, 3)
  assert np.abs(first[10:, :, :].reshape(-1, 3).mean(0) - color).max() < 30
  assert rec.labels == labels
  assert rec.label_texts == texts


@pytest.fixture
def generic_src(tmp_path):
  """generic layout: train/{cat,dog} (+ a corrupt video), val/{bird,cat}."""
  src = tmp_path / "generic"
  paths = {}
  for split, cls, n in [("train", "cat", 3), ("train", "dog", 3), ("val", "bird", 1),
                        ("val", "cat", 1)]:
    for k in range(n):
      color = COLORS[["bird", "cat", "dog"].index(cls)]
      paths[f"{cls}/{cls}{k}"] = make_video(str(src / split / cls / f"{cls}{k}.mp4"), color)
  corrupt_video(str(src / "train" / "dog" / "broken.mp4"))
  write_text(str(src / "train" / "dog" / "notes.txt"), ["not a video"])
  return src, paths


def test_generic_layout_with_corrupt_video(generic_src, tmp_path):
  src, paths = generic_src
  out = tmp_path / "out"
  run("--layout", "generic", "--src", src, "--out", out, "--num_shards", 2)
  assert classes(out) == ["bird", "cat", "dog"]
  train, val = read_split(out, "train"), read_split(out, "val")
  assert sorted(train) == ["cat/cat0", "cat/cat1", "cat/cat2", "dog/dog0", "dog/dog1",
                           "dog/dog2"]
  assert sorted(val) == ["bird/bird0", "cat/cat0"]
  for vid, rec in train.items():
    cls = vid.split("/")[0]
    label = ["bird", "cat", "dog"].index(cls)
    check_record(rec, paths[vid], COLORS[label], [label], [cls])
  check_record(val["bird/bird0"], paths["bird/bird0"], COLORS[0], [0], ["bird"])
  m = manifest(out)["splits"]
  assert m["train"]["items"] == 7 and m["train"]["written"] == 6
  assert m["train"]["failed"] == 1 and m["train"]["failures"][0]["path"].endswith("broken.mp4")
  assert "broken.mp4" in m["train"]["failures"][0]["error"]
  assert m["train"]["class_counts"] == {"bird": 0, "cat": 3, "dog": 3}
  assert m["val"]["written"] == 2 and m["val"]["failed"] == 0
  assert m["train"]["shards"] == [os.path.basename(p) for p in shard_files(out, "train")]
  assert m["train"]["settings"]["short_side"] == SHORT


def test_fps_and_max_frames_match_decode_video(generic_src, tmp_path):
  src, paths = generic_src
  out = tmp_path / "out"
  run("--layout", "generic", "--src", src, "--out", out, "--split", "val", "--fps", 4,
      "--max_frames", 3, "--jpeg_quality", 50)
  val = read_split(out, "val")
  check_record(val["cat/cat0"], paths["cat/cat0"], COLORS[1], [1], ["cat"], fps=4,
               max_frames=3)
  assert len(val["cat/cat0"].frames) == 3
  assert set(manifest(out)["splits"]) == {"val"}


def test_resume_after_kill(generic_src, tmp_path):
  src, _ = generic_src
  out = str(tmp_path / "out")
  run("--layout", "generic", "--src", src, "--out", out, "--split", "train", "--num_shards",
      3)
  shards = shard_files(out, "train")
  before = read_split(out, "train")
  mtimes = {p: os.stat(p).st_mtime_ns for p in shards}
  # Kill simulation: shard 1 lost with its sidecar, a stale partial .tmp left behind; shard 2
  # renamed into place but killed before its sidecar was written.
  os.remove(shards[1])
  os.remove(sidecar_path(shards[1]))
  with open(shards[1] + ".tmp", "wb") as f:
    f.write(b"\x05partial")
  os.remove(sidecar_path(shards[2]))
  run("--layout", "generic", "--src", src, "--out", out, "--split", "train", "--num_shards",
      3)
  after = read_split(out, "train")
  assert sorted(after) == sorted(before)
  assert not glob.glob(os.path.join(out, "*.tmp"))
  assert os.stat(shards[0]).st_mtime_ns == mtimes[shards[0]]
  assert os.stat(shards[2]).st_mtime_ns != mtimes[shards[2]]
  m = manifest(out)["splits"]["train"]
  assert m["written"] == 6 and m["failed"] == 1
  # Another shard count on the same output is refused rather than mixed in.
  assert prepare.main(["--layout", "generic", "--src", str(src), "--out", out, "--split",
                       "train", "--num_shards", "2", "--no_progress"]) == 2


def test_array_record_format(generic_src, tmp_path):
  src, paths = generic_src
  out = tmp_path / "out"
  run("--layout", "generic", "--src", src, "--out", out, "--split", "val", "--format",
      "array_record")
  val = read_split(out, "val", "array_record")
  assert sorted(val) == ["bird/bird0", "cat/cat0"]
  check_record(val["cat/cat0"], paths["cat/cat0"], COLORS[1], [1], ["cat"])
  assert not shard_files(out, "val", "tfrecord")


def test_console_script_with_two_workers_is_deterministic(generic_src, tmp_path):
  src, _ = generic_src
  script = os.path.join(os.path.dirname(sys.executable), "victr-prepare")
  out_cli, out_lib = str(tmp_path / "cli"), str(tmp_path / "lib")
  args = ["--layout", "generic", "--src", str(src), "--split", "train", "--num_shards", "3",
          "--short_side", str(SHORT)]
  proc = subprocess.run([script] + args + ["--out", out_cli, "--workers", "2"],
                        capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "train: 6/7 written, 1 failed" in proc.stdout
  assert "video/s" in proc.stderr  # the progress bar
  run(*args, "--out", out_lib)
  # Same items in the same shards and order, same frames (protobuf map order may differ).
  for a, b in zip(shard_files(out_cli, "train"), shard_files(out_lib, "train"), strict=True):
    ra, rb = records.RecordSource(a), records.RecordSource(b)
    assert len(ra) == len(rb) > 0
    for i in range(len(ra)):
      assert records.decode(ra[i]) == records.decode(rb[i]), (a, i)


def ucf_tree(tmp_path, flat=False):
  """UCF101 videos (official tree, or flat) and annotations for 3 classes."""
  src, ann = tmp_path / "ucf", tmp_path / "ucf_ann"
  names = ["ApplyEyeMakeup", "Archery", "HandstandPushups"]
  write_text(str(ann / "classInd.txt"), [f"{i + 1} {n}" for i, n in enumerate(names)])
  train, test, paths = [], [], {}
  for c, name in enumerate(names):
    file_cls = "HandStandPushups" if name == "HandstandPushups" else name
    for g in (1, 8):
      stem = f"v_{file_cls}_g{g:02d}_c01"
      rel = f"{name}/{stem}.avi"
      paths[stem] = make_video(str(src / (f"{stem}.avi" if flat else rel)), COLORS[c])
      (test if g == 1 else train).append((rel, c))
  write_text(str(ann / "trainlist01.txt"), [f"{rel} {c + 1}" for rel, c in train])
  write_text(str(ann / "testlist01.txt"), [rel for rel, _ in test])
  return src, ann, names, paths


@pytest.mark.parametrize("flat", [False, True])
def test_ucf101_layout(tmp_path, flat):
  src, ann, names, paths = ucf_tree(tmp_path, flat)
  out = tmp_path / "out"
  run("--layout", "ucf101", "--src", src, "--annotations", ann, "--split_id", 1, "--out", out)
  assert classes(out) == names
  train, test = read_split(out, "train"), read_split(out, "test")
  assert sorted(train) == sorted(p for p in paths if "_g08_" in p)
  assert sorted(test) == sorted(p for p in paths if "_g01_" in p)
  for stem, rec in {**train, **test}.items():
    c = [n.lower() for n in names].index(stem.split("_")[1].lower())
    check_record(rec, paths[stem], COLORS[c], [c], [names[c]])
  m = manifest(out)["splits"]
  assert m["train"]["class_counts"] == {n: 1 for n in names}
  assert m["test"]["written"] == 3 and m["test"]["missing"] == 0


def test_ucf101_class_names_from_bundled_style_file(tmp_path):
  src, ann, _, _ = ucf_tree(tmp_path)
  pretty = write_text(str(tmp_path / "names.txt"),
                      ["Apply Eye Makeup", "Archery", "Handstand Pushups"])
  out = tmp_path / "out"
  run("--layout", "ucf101", "--src", src, "--annotations", ann, "--out", out, "--split",
      "test", "--classes", pretty)
  test = read_split(out, "test")
  assert test["v_HandStandPushups_g01_c01"].label_texts == ["Handstand Pushups"]
  assert classes(out)[0] == "Apply Eye Makeup"


def test_unknown_labels_fail_before_any_work(tmp_path, capsys):
  src, ann, _, _ = ucf_tree(tmp_path)
  with open(ann / "trainlist01.txt", "a") as f:
    f.write("Archery/v_Archery_g09_c01.avi 7\n")
  out = tmp_path / "out"
  rc = prepare.main(["--layout", "ucf101", "--src", str(src), "--annotations", str(ann),
                     "--out", str(out), "--no_progress"])
  assert rc == 2
  err = capsys.readouterr().err
  assert "trainlist01.txt:4" in err and "LABEL in 1..3" in err
  assert not os.path.exists(out)
  # A testlist folder that is no class, and a Kinetics label missing from --classes.
  write_text(str(ann / "trainlist01.txt"), [])
  write_text(str(ann / "testlist01.txt"), ["Archery/a.avi", "Juggling/v_x.avi"])
  with pytest.raises(prepare.PrepareError, match=r"testlist01.txt:2: unknown class 'Juggling'"):
    prepare.prepare(prepare.build_parser().parse_args(
        ["--layout", "ucf101", "--src", str(src), "--annotations", str(ann), "--out", str(out)]))
  csv_path = write_text(str(tmp_path / "k.csv"), ["label,youtube_id,time_start,time_end,split",
                                                  "archery,aaaaaaaaaaa,0,10,train"])
  names = write_text(str(tmp_path / "k_names.txt"), ["abseiling"])
  with pytest.raises(prepare.PrepareError, match="'archery' of the annotations is not in"):
    prepare.prepare(prepare.build_parser().parse_args(
        ["--layout", "kinetics", "--src", str(src), "--csv", csv_path, "--classes", names,
         "--out", str(out)]))


def test_hmdb51_layout(tmp_path):
  src, ann = tmp_path / "hmdb", tmp_path / "hmdb_ann"
  names = ["kick", "kick_ball", "brush_hair"]
  paths = {}
  for cls in names:
    lines = []
    for k, mark in enumerate(["1", "2", "0", "1"]):
      stem = f"{cls}_video_{k}"
      paths[stem] = make_video(str(src / cls / f"{stem}.avi"), COLORS[sorted(names).index(cls)])
      lines.append(f"{stem}.avi {mark} ")
    write_text(str(ann / f"{cls}_test_split1.txt"), lines)
    write_text(str(ann / f"{cls}_test_split2.txt"), [f"{cls}_video_0.avi 2"])
  out = tmp_path / "out"
  run("--layout", "hmdb51", "--src", src, "--annotations", ann, "--out", out)
  assert classes(out) == sorted(names)
  train, test = read_split(out, "train"), read_split(out, "test")
  assert sorted(train) == sorted(f"{c}_video_{k}" for c in names for k in (0, 3))
  assert sorted(test) == sorted(f"{c}_video_1" for c in names)
  for stem, rec in {**train, **test}.items():
    c = sorted(names).index(stem.split("_video_")[0])
    check_record(rec, paths[stem], COLORS[c], [c], [sorted(names)[c]])
  assert manifest(out)["splits"]["train"]["class_counts"] == {n: 2 for n in sorted(names)}
  # The bundled list (mmaction2 / X-CLIP order and names) by name.
  out2 = tmp_path / "out2"
  run("--layout", "hmdb51", "--src", src, "--annotations", ann, "--out", out2, "--split",
      "test", "--classes", "hmdb51")
  assert len(classes(out2)) == 51
  rec = read_split(out2, "test")["kick_ball_video_1"]
  assert rec.labels == [classes(out2).index("kick ball")] and rec.label_texts == ["kick ball"]


def test_kinetics_layout(tmp_path):
  src = tmp_path / "k400"
  labels = ["abseiling", "passing American football (in game)", "zumba"]
  rows_train = [(labels[0], "aaaaaaaaa_1", 10, 20), (labels[1], "bbbb-bbbbb2", 0, 10),
                (labels[2], "ccccccccccc", 1, 2), (labels[2], "missingvid1", 3, 13)]
  rows_val = [(labels[1], "ddddddddddd", 30, 40)]
  paths = {
      "aaaaaaaaa_1_000010_000020": make_video(
          str(src / "train" / labels[0] / "aaaaaaaaa_1_000010_000020.mp4"), COLORS[0]),
      # A file named by a longer stem, in no label folder.
      "bbbb-bbbbb2_000000_000010": make_video(str(src / "misc" / "bbbb-bbbbb2_raw.mp4"),
                                              COLORS[1]),
      # A whole YouTube video (4 s): cut to the CSV times with --trim.
      "ccccccccccc_000001_000002": make_video(str(src / "full" / "ccccccccccc.mp4"), COLORS[2],
                                              frames=40),
      "ddddddddddd_000030_000040": make_video(
          str(src / "val" / labels[1] / "ddddddddddd_000030_000040.mp4"), COLORS[1]),
  }
  csvs = []
  for name, rows, split in [("train.csv", rows_train, "train"), ("validate.csv", rows_val,
                                                                  "val")]:
    csvs.append(str(tmp_path / name))
    with open(csvs[-1], "w", newline="") as f:
      w = csv.writer(f)
      w.writerow(["label", "youtube_id", "time_start", "time_end", "split", "is_cc"])
      for label, yid, t0, t1 in rows:
        w.writerow([label, yid, t0, t1, split, 0])
  out = tmp_path / "out"
  run("--layout", "kinetics", "--src", src, "--csv", csvs[0], "--csv", csvs[1], "--out", out,
      "--trim")
  assert classes(out) == sorted(labels)
  train, val = read_split(out, "train"), read_split(out, "val")
  assert sorted(train) == sorted(k for k in paths if not k.startswith("ddd"))
  assert sorted(val) == ["ddddddddddd_000030_000040"]
  for vid, rec in {**train, **val}.items():
    c = labels.index(rec.label_texts[0])
    window = dict(start_s=1.0, end_s=2.0) if vid.startswith("ccc") else {}
    check_record(rec, paths[vid], COLORS[c], [sorted(labels).index(labels[c])], [labels[c]],
                 **window)
  assert 8 <= len(train["ccccccccccc_000001_000002"].frames) <= 12  # 1 s at 10 fps, not 40
  assert train["aaaaaaaaa_1_000010_000020"].start_us == 10_000_000
  assert train["aaaaaaaaa_1_000010_000020"].end_us == 20_000_000
  m = manifest(out)["splits"]["train"]
  assert m["items"] == 4 and m["written"] == 3 and m["missing"] == 1
  assert m["missing_files"][0]["video_id"] == "missingvid1_000003_000013"
  assert "train.csv:5" in m["missing_files"][0]["where"]


def test_charades_layout(tmp_path):
  src = tmp_path / "charades"
  class_file = write_text(str(tmp_path / "Charades_v1_classes.txt"),
                          [f"c{i:03d} Action number {i}" for i in range(157)])
  rows = [("AAAA1", "c092 11.90 21.20;c147 0.00 12.60;c092 1.0 2.0", 0),
          ("BBBB2", "", 1), ("CCCC3", "c003 0.50 3.00", 2)]
  for vid, _, color in rows:
    make_video(str(src / f"{vid}.mp4"), COLORS[color])
  paths = {}
  for split, chosen in [("train", rows[:2]), ("test", rows[2:])]:
    path = str(tmp_path / f"Charades_v1_{split}.csv")
    paths[split] = path
    with open(path, "w", newline="") as f:
      w = csv.writer(f)
      w.writerow(["id", "subject", "scene", "actions", "length"])
      for vid, actions, _ in chosen:
        w.writerow([vid, "S1", "Kitchen", actions, "30.0"])
  out = tmp_path / "out"
  run("--layout", "charades", "--src", src, "--csv", paths["train"], "--csv", paths["test"],
      "--classes", class_file, "--out", out)
  assert len(classes(out)) == 157 and classes(out)[92] == "Action number 92"
  train, test = read_split(out, "train"), read_split(out, "test")
  check_record(train["AAAA1"], str(src / "AAAA1.mp4"), COLORS[0], [92, 147],
               ["Action number 92", "Action number 147"])
  check_record(train["BBBB2"], str(src / "BBBB2.mp4"), COLORS[1], [], [])
  check_record(test["CCCC3"], str(src / "CCCC3.mp4"), COLORS[2], [3], ["Action number 3"])
  m = manifest(out)["splits"]
  assert m["train"]["spans"]["AAAA1"] == [[92, 11.9, 21.2], [147, 0.0, 12.6], [92, 1.0, 2.0]]
  assert m["train"]["spans"]["BBBB2"] == []
  assert m["train"]["class_counts"]["Action number 92"] == 1
  assert m["test"]["written"] == 1
  # Without a class file: names c000..c156.
  out2 = tmp_path / "out2"
  run("--layout", "charades", "--src", src, "--csv", paths["test"], "--out", out2)
  assert classes(out2)[3] == "c003" and len(classes(out2)) == 157
  assert read_split(out2, "test")["CCCC3"].label_texts == ["c003"]


def test_ssv2_layout(tmp_path):
  src = tmp_path / "ssv2"
  templates = ["Holding something next to something", "Pushing something from left to right",
               "Putting something into something"]
  labels_json = tmp_path / "something-something-v2-labels.json"
  labels_json.write_text(json.dumps({t: str(i) for i, t in enumerate(templates)}))
  entries = {
      "train": [{"id": "78687", "template": "Holding [something] next to [something]",
                 "label": "holding potato next to vicks vaporub bottle",
                 "placeholders": ["potato", "vicks vaporub bottle"]},
                {"id": "42326", "template": "Putting [something] into [something]",
                 "label": "putting a pen into a cup", "placeholders": ["a pen", "a cup"]}],
      "validation": [{"id": "74225", "template": "Pushing [something] from left to right",
                      "label": "pushing a book from left to right", "placeholders": ["a book"]}],
  }
  json_paths = []
  for split, items in entries.items():
    json_paths.append(tmp_path / f"something-something-v2-{split}.json")
    json_paths[-1].write_text(json.dumps(items))
    for item in items:
      c = templates.index(item["template"].replace("[", "").replace("]", ""))
      make_video(str(src / f"{item['id']}.webm"), COLORS[c], codec="libvpx")
  out = tmp_path / "out"
  run("--layout", "ssv2", "--src", src, "--labels", labels_json, "--json", json_paths[0],
      "--json", json_paths[1], "--out", out)
  assert classes(out) == templates
  train, val = read_split(out, "train"), read_split(out, "val")
  assert sorted(train) == ["42326", "78687"] and sorted(val) == ["74225"]
  for vid, rec in {**train, **val}.items():
    c = templates.index(rec.label_texts[0])
    check_record(rec, str(src / f"{vid}.webm"), COLORS[c], [c], [templates[c]])
  assert manifest(out)["splits"]["val"]["class_counts"] == {templates[0]: 0, templates[1]: 1,
                                                           templates[2]: 0}


def test_help_lists_the_layouts_and_missing_options_are_named(tmp_path, capsys):
  text = prepare.build_parser().format_help()
  for layout in ("generic", "ucf101", "hmdb51", "kinetics", "charades", "ssv2"):
    assert f"\n  {layout} " in text
  for layout, option in [("ucf101", "--annotations"), ("hmdb51", "--annotations"),
                         ("kinetics", "--csv"), ("charades", "--csv"), ("ssv2", "--labels")]:
    assert prepare.main(["--layout", layout, "--src", str(tmp_path), "--out",
                         str(tmp_path / "out"), "--no_progress"]) == 2
    assert f"--layout {layout} needs {option}" in capsys.readouterr().err
