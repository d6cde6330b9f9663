"""Mini copies of the paper's data sets in their official layouts, prepared with
victr-prepare, and a tiny CLIP converted with victr-convert-clip (tests of victr-reproduce).

  root = prepare_all(tmp / "raw", tmp / "data")   # root/{hmdb51,ucf101,kinetics400,...}
  ckpt = tiny_clip(tmp)                             # a converted directory

Each data set keeps its real class list (the shipped one) but only a few classes hold
videos: 2 train and 1 test video each, 8 frames of 32 x 40, one colour per class.
"""
import csv
import os

from data_pipelines import prepare, splits

from test_prepare import COLORS, make_video, write_text

HMDB = ["brush_hair", "cartwheel", "catch"]
UCF = ["ApplyEyeMakeup", "ApplyLipstick", "Archery", "YoYo"]  # base, base, novel, novel


def _run(*argv):
  argv = [str(a) for a in argv] + ["--workers", "1", "--no_progress"]
  assert prepare.main(argv) == 0, argv


def hmdb51(raw, out, splits_=(1, 2, 3)):
  """HMDB51: <class>/<video>.avi and <class>_test_split{1,2,3}.txt (1 train, 2 test); a
  video whose name begins with '#', as some real ones do. out: a folder or a gs:// URL."""
  src, ann = raw / "hmdb51_org", raw / "testTrainMulti_7030_splits"
  for c, cls in enumerate(HMDB):
    names = [f"#{c}_{cls}_u_nm_np1_fr_goo_0.avi", f"{cls}_v_1.avi", f"{cls}_v_2.avi"]
    for name in names:
      make_video(str(src / cls / name), COLORS[c])
    for s in (1, 2, 3):
      write_text(str(ann / f"{cls}_test_split{s}.txt"),
                 [f"{names[0]} 1", f"{names[1]} 1", f"{names[2]} 2"])
  for s in splits_:
    _run("--layout", "hmdb51", "--src", src, "--annotations", ann, "--split_id", s,
         "--classes", "hmdb51", "--out", f"{out}/hmdb51/split{s}")


def ucf101(raw, out):
  """UCF101: <Class>/v_<Class>_gXX_cYY.avi, classInd.txt, trainlist0N / testlist0N."""
  src, ann = raw / "UCF-101", raw / "ucfTrainTestlist"
  names = splits.read_classnames("ucf101")
  official = [n.replace(" ", "") for n in names]
  write_text(str(ann / "classInd.txt"), [f"{i + 1} {n}" for i, n in enumerate(official)])
  train, test = [], []
  for c, cls in enumerate(UCF):
    for g in (1, 8, 9):
      rel = f"{cls}/v_{cls}_g{g:02d}_c01.avi"
      make_video(str(src / rel), COLORS[c])
      (test if g == 1 else train).append((rel, official.index(cls) + 1))
  for s in (1, 2, 3):
    write_text(str(ann / f"trainlist0{s}.txt"), [f"{r} {label}" for r, label in train])
    write_text(str(ann / f"testlist0{s}.txt"), [r for r, _ in test])
    _run("--layout", "ucf101", "--src", src, "--annotations", ann, "--split_id", s,
         "--classes", "ucf101", "--out", out / "ucf101" / f"split{s}")


def _kinetics(raw, out, name, labels, splits_):
  src = raw / f"{name}_videos"
  csvs = []
  for split, per_class in splits_:
    path = raw / f"{name}_{split}.csv"
    with open(path, "w", newline="") as f:
      w = csv.writer(f)
      w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
      for c, label in enumerate(labels):
        for k in range(per_class):
          yid = f"{split[:2]}{c:03d}{k:06d}"[:11]
          make_video(str(src / split / label / f"{yid}_000000_000010.mp4"), COLORS[c % 5])
          w.writerow([label, yid, 0, 10, split])
    csvs += ["--csv", path]
  _run("--layout", "kinetics", "--src", src, *csvs, "--classes", name, "--out", out / name)


def kinetics(raw, out):
  """Kinetics-400 (train / validate CSVs) and Kinetics-600 validate, videos named
  <youtube_id>_<start>_<end>.mp4 in <split>/<label>/; K600 classes in every peer draw."""
  k400 = splits.read_classnames("kinetics400")
  _kinetics(raw, out, "kinetics400", [k400[0], k400[1], k400[2]], [("train", 2), ("validate", 1)])
  k600 = splits.read_classnames("kinetics600")
  every = sorted(set.intersection(*map(set, splits.kinetics600_peer_zero_shot_splits())))
  _kinetics(raw, out, "kinetics600", [k600[i] for i in every[:2]], [("validate", 1)])


def charades(raw, out):
  """Charades: <id>.mp4, Charades_v1_{train,test}.csv and Charades_v1_classes.txt."""
  src = raw / "Charades_v1_480"
  names = splits.read_classnames(splits.os.path.join(splits.CLASSNAMES_DIR, "charades.txt"))
  classes = write_text(str(raw / "Charades_v1_classes.txt"),
                       [f"c{i:03d} {n}" for i, n in enumerate(names)])
  rows = {"train": [("TRN01", "c000 0.0 5.0;c001 1.0 3.0"), ("TRN02", "c001 0.0 4.0"),
                    ("TRN03", "c002 0.5 2.0")],
          "test": [("TST01", "c000 0.0 5.0"), ("TST02", "c001 0.0 2.0;c002 1.0 4.0")]}
  args = []
  for split, items in rows.items():
    path = raw / f"Charades_v1_{split}.csv"
    with open(path, "w", newline="") as f:
      w = csv.writer(f)
      w.writerow(["id", "subject", "scene", "actions", "length"])
      for i, (vid, actions) in enumerate(items):
        make_video(str(src / f"{vid}.mp4"), COLORS[i])
        w.writerow([vid, "S1", "Kitchen", actions, "10.0"])
    args += ["--csv", path]
  _run("--layout", "charades", "--src", src, *args, "--classes", classes,
       "--out", out / "charades")


MAKERS = (hmdb51, ucf101, kinetics, charades)


def prepare_all(raw, out):
  for make in MAKERS:
    make(raw, out)
  return out


def tiny_clip(tmp):
  """The `tiny` preset's architecture as an OpenAI-layout state dict (random weights,
  open_clip), converted with victr-convert-clip; returns the converted directory."""
  import torch  # pylint: disable=g-import-not-at-top
  from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg  # pylint: disable=g-import-not-at-top
  from victr_jax.clip import convert  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model = CLIP(embed_dim=32, quick_gelu=True,
               vision_cfg=CLIPVisionCfg(layers=2, width=64, head_width=32, mlp_ratio=2.0,
                                        patch_size=8, image_size=32),
               text_cfg=CLIPTextCfg(width=64, heads=2, layers=2, mlp_ratio=2.0))
  src = os.path.join(tmp, "tiny_clip.pt")
  torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, src)
  dst = os.path.join(tmp, "tiny_clip")
  assert convert.main([src, dst, "--act", "quick_gelu", "--vision_heads", "2",
                       "--text_heads", "2"]) == 0
  return dst
