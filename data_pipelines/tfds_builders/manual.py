"""TFDS builders over raw videos you already have (manual_dir; nothing is downloaded).

Each reads its dataset's official annotation files with the victr-prepare layout parsers
(data_pipelines/prepare.py) and decodes every video with PyAV (short side 256, all frames,
JPEG quality 90). Expected manual_dir contents:

  ucf101       UCF-101/<Class>/*.avi, ucfTrainTestlist/{classInd,trainlist0N,testlist0N}.txt
  hmdb51       videos/<class>/*.avi, testTrainMulti_7030_splits/<class>_test_splitN.txt
  kinetics400  videos/** (<youtube_id>_<start>_<end>.mp4), train.csv, validate.csv, test.csv
  kinetics600  the same layout as kinetics400
  charades     Charades_v1_480/<id>.mp4, Charades_v1_{train,test}.csv, Charades_v1_classes.txt
  ssv2         20bn-something-something-v2/<id>.webm,
               labels/something-something-v2-{labels,train,validation}.json

UCF101 and HMDB51 have one builder config per official split (split1..split3). Class
indices follow the shipped lists in data_pipelines/classnames (Charades: c000..c156). A
video that fails to decode is logged and skipped.
"""
import os

import tensorflow_datasets as tfds
from absl import logging

from data_pipelines import prepare, splits
from data_pipelines.tfds_builders import base

_SPLIT_CONFIGS = [tfds.core.BuilderConfig(name=f"split{i}", description=f"official split {i}")
                  for i in (1, 2, 3)]


class _ManualVideoBuilder(tfds.core.GeneratorBasedBuilder):
  """Shared logic: parse annotations with a prepare layout, decode, yield examples."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = ("Place the raw videos and the official annotation files in "
                                  "manual_dir as listed in data_pipelines/tfds_builders/manual.py.")
  LAYOUT = ""
  CLASSNAMES = ""  # shipped list name; "" for num_classes
  NUM_CLASSES = 0

  def _info(self):
    names = splits.read_classnames(self.CLASSNAMES) if self.CLASSNAMES else None
    return self.dataset_info_from_configs(
        features=base.features(names, self.NUM_CLASSES or None),
        description=f"{self.name} from raw videos in manual_dir (see manual.py).")

  def _layout_args(self, root):  # -> victr-prepare arguments (without --out)
    raise NotImplementedError

  def _split_generators(self, dl_manager):
    root = str(dl_manager.manual_dir)
    if not os.path.isdir(root):
      raise FileNotFoundError(f"{self.name}: manual_dir {root} does not exist; see "
                              "data_pipelines/tfds_builders/manual.py for its layout")
    argv = ["--layout", self.LAYOUT, "--out", "unused"] + self._layout_args(root)
    if self.CLASSNAMES:
      argv += ["--classes", self.CLASSNAMES]
    args = prepare.build_parser().parse_args(argv)
    try:
      ds = prepare.PARSERS[self.LAYOUT](args)
    except prepare.PrepareError as e:
      raise ValueError(f"{self.name}: {e}") from e
    return {split: self._generate_examples(items) for split, items in ds.splits.items()}

  def _generate_examples(self, items):
    for item in items:
      try:
        rec = base.video_record(item.path, item.labels, item.texts, item.video_id,
                                start_s=item.start_s or 0.0, end_s=item.end_s)
      except ValueError as e:
        logging.warning("skipping %s", e)
        continue
      yield item.video_id, base.example(rec)


class Ucf101(_ManualVideoBuilder):
  LAYOUT, CLASSNAMES = "ucf101", "ucf101"
  BUILDER_CONFIGS = _SPLIT_CONFIGS

  def _layout_args(self, root):
    return ["--src", os.path.join(root, "UCF-101"), "--annotations",
            os.path.join(root, "ucfTrainTestlist"), "--split_id", self.builder_config.name[-1]]


class Hmdb51(_ManualVideoBuilder):
  LAYOUT, CLASSNAMES = "hmdb51", "hmdb51"
  BUILDER_CONFIGS = _SPLIT_CONFIGS

  def _layout_args(self, root):
    return ["--src", os.path.join(root, "videos"), "--annotations",
            os.path.join(root, "testTrainMulti_7030_splits"), "--split_id",
            self.builder_config.name[-1]]


class Kinetics400(_ManualVideoBuilder):
  LAYOUT, CLASSNAMES = "kinetics", "kinetics400"

  def _layout_args(self, root):
    csvs = [os.path.join(root, f) for f in ("train.csv", "validate.csv", "test.csv")
            if os.path.exists(os.path.join(root, f))]
    return ["--src", os.path.join(root, "videos")] + [a for c in csvs for a in ("--csv", c)]


class Kinetics600(Kinetics400):
  CLASSNAMES = "kinetics600"


class Charades(_ManualVideoBuilder):
  LAYOUT, NUM_CLASSES = "charades", prepare.CHARADES_NUM_CLASSES

  def _layout_args(self, root):
    args = ["--src", os.path.join(root, "Charades_v1_480")]
    for f in ("Charades_v1_train.csv", "Charades_v1_test.csv"):
      args += ["--csv", os.path.join(root, f)]
    classes = os.path.join(root, "Charades_v1_classes.txt")
    return args + (["--classes", classes] if os.path.exists(classes) else [])


class Ssv2(_ManualVideoBuilder):
  LAYOUT, CLASSNAMES = "ssv2", "ssv2"

  def _layout_args(self, root):
    lab = os.path.join(root, "labels")
    return ["--src", os.path.join(root, "20bn-something-something-v2"), "--labels",
            os.path.join(lab, "something-something-v2-labels.json"), "--json",
            os.path.join(lab, "something-something-v2-train.json"), "--json",
            os.path.join(lab, "something-something-v2-validation.json")]
