"""TFDS builders over raw videos you already have (manual_dir; nothing is downloaded).

Each reads its dataset's official annotation files with the layout parsers that
victr-prepare uses (data_pipelines/layouts.py) and decodes every video with PyAV like
victr-prepare's defaults (records.video_to_record: short side 256, all frames, JPEG
quality 90; the class attributes SHORT_SIDE, FPS, JPEG_QUALITY and MAX_FRAMES of a subclass
change them). Kinetics clip times are kept (features start_us / end_us). Expected
manual_dir contents:

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

from data_pipelines import layouts, splits
from data_pipelines.layout_io import PrepareError
from data_pipelines.tfds_builders import base

_SPLIT_CONFIGS = [tfds.core.BuilderConfig(name=f"split{i}", description=f"official split {i}")
                  for i in (1, 2, 3)]


class _ManualVideoBuilder(tfds.core.GeneratorBasedBuilder):
  """Shared logic: parse the annotations with a layout parser, decode, yield examples."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "First version.",
                   "1.1.0": "Clip times (start_us, end_us) kept, as victr-prepare's records."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = ("Place the raw videos and the official annotation files in "
                                  "manual_dir as listed in data_pipelines/tfds_builders/manual.py.")
  CLASSNAMES = ""  # shipped list name; "" for num_classes
  NUM_CLASSES = 0
  SHORT_SIDE, FPS, JPEG_QUALITY, MAX_FRAMES = 256, 0.0, 90, 0  # 0: keep size / all frames

  def _info(self):
    names = splits.read_classnames(self.CLASSNAMES) if self.CLASSNAMES else None
    return self.dataset_info_from_configs(
        features=base.features(names, self.NUM_CLASSES or None),
        description=f"{self.name} from raw videos in manual_dir (see manual.py).")

  def _parse(self, root: str) -> layouts.Dataset:
    """The dataset's items per split, from manual_dir `root` (a layouts parser)."""
    raise NotImplementedError

  def _split_generators(self, dl_manager):
    root = str(dl_manager.manual_dir)
    if not os.path.isdir(root):
      raise FileNotFoundError(f"{self.name}: manual_dir {root} does not exist; see "
                              "data_pipelines/tfds_builders/manual.py for its layout")
    try:
      ds = self._parse(root)
    except PrepareError as e:
      raise ValueError(f"{self.name}: {e}") from e
    return {split: self._generate_examples(items) for split, items in ds.splits.items()}

  def _generate_examples(self, items):
    for item in items:
      try:
        rec = item.to_record(short_side=self.SHORT_SIDE, fps=self.FPS,
                             quality=self.JPEG_QUALITY, max_frames=self.MAX_FRAMES)
      except ValueError as e:
        logging.warning("skipping %s", e)
        continue
      yield item.video_id, base.example(rec)


class Ucf101(_ManualVideoBuilder):
  CLASSNAMES = "ucf101"
  BUILDER_CONFIGS = _SPLIT_CONFIGS

  def _parse(self, root):
    return layouts.parse_ucf101(os.path.join(root, "UCF-101"),
                                os.path.join(root, "ucfTrainTestlist"),
                                split_id=int(self.builder_config.name[-1]),
                                classes=self.CLASSNAMES)


class Hmdb51(_ManualVideoBuilder):
  CLASSNAMES = "hmdb51"
  BUILDER_CONFIGS = _SPLIT_CONFIGS

  def _parse(self, root):
    return layouts.parse_hmdb51(os.path.join(root, "videos"),
                                os.path.join(root, "testTrainMulti_7030_splits"),
                                split_id=int(self.builder_config.name[-1]),
                                classes=self.CLASSNAMES)


class Kinetics400(_ManualVideoBuilder):
  CLASSNAMES = "kinetics400"

  def _parse(self, root):
    csvs = [os.path.join(root, f) for f in ("train.csv", "validate.csv", "test.csv")
            if os.path.exists(os.path.join(root, f))]
    return layouts.parse_kinetics(os.path.join(root, "videos"), csvs,
                                  classes=self.CLASSNAMES)


class Kinetics600(Kinetics400):
  CLASSNAMES = "kinetics600"


class Charades(_ManualVideoBuilder):
  NUM_CLASSES = layouts.CHARADES_NUM_CLASSES

  def _parse(self, root):
    classes = os.path.join(root, "Charades_v1_classes.txt")
    return layouts.parse_charades(
        os.path.join(root, "Charades_v1_480"),
        [os.path.join(root, f) for f in ("Charades_v1_train.csv", "Charades_v1_test.csv")],
        classes=classes if os.path.exists(classes) else None)


class Ssv2(_ManualVideoBuilder):
  CLASSNAMES = "ssv2"

  def _parse(self, root):
    lab = os.path.join(root, "labels")
    return layouts.parse_ssv2(
        os.path.join(root, "20bn-something-something-v2"),
        os.path.join(lab, "something-something-v2-labels.json"),
        [os.path.join(lab, f"something-something-v2-{s}.json") for s in ("train", "validation")],
        classes=self.CLASSNAMES)
