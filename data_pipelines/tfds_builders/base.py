"""A TFDS builder base for video datasets stored as DMVR-like examples.

Features: 'frames' (sequence of JPEG bytes, not re-encoded), 'labels' (class indices),
'label_texts', 'video_id', 'start_us' / 'end_us' (the clip's times in microseconds, as
records.VideoRecord has them; -1: none). Builders are written in array_record by default
so that `tfds.data_source` gives random access (the input pipeline needs it for exact
resume).
Real datasets are read from `manual_dir` (raw videos + annotation files); nothing is ever
downloaded.
"""
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from data_pipelines import records

FILE_FORMAT = "array_record"
NO_TIME = -1  # start_us / end_us of a record without clip times


def features(class_names=None, num_classes=None):
  label = (tfds.features.ClassLabel(names=list(class_names)) if class_names
           else tfds.features.ClassLabel(num_classes=num_classes))
  return tfds.features.FeaturesDict({
      "frames": tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=tf.string)),
      "labels": tfds.features.Sequence(label),
      "label_texts": tfds.features.Sequence(tfds.features.Text()),
      "video_id": tfds.features.Text(),
      "start_us": tfds.features.Scalar(dtype=np.int64),
      "end_us": tfds.features.Scalar(dtype=np.int64),
  })


def example(rec: records.VideoRecord) -> dict:
  """A VideoRecord -> a TFDS example of `features`."""
  time = lambda t: NO_TIME if t is None else int(t)
  return {"frames": rec.frames, "labels": list(rec.labels), "label_texts": rec.label_texts,
          "video_id": rec.video_id, "start_us": time(rec.start_us), "end_us": time(rec.end_us)}


def record_from_example(ex: dict) -> records.VideoRecord:
  """A TFDS example (numpy, from tfds.data_source) -> VideoRecord for the pipeline."""
  text = lambda t: t.decode("utf-8") if isinstance(t, bytes) else str(t)
  time = lambda k: None if k not in ex or int(ex[k]) == NO_TIME else int(ex[k])
  return records.VideoRecord([bytes(f) for f in ex["frames"]],
                             [int(l) for l in np.atleast_1d(ex["labels"])],
                             [text(t) for t in ex["label_texts"]], text(ex["video_id"]),
                             time("start_us"), time("end_us"))


class TFDSSource:
  """Random access over a prepared TFDS video dataset, yielding VideoRecords."""

  def __init__(self, name: str, split: str, data_dir=None):
    try:
      self._ds = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # pylint: disable=broad-except
      raise FileNotFoundError(
          f"TFDS dataset {name!r} split {split!r} is not prepared under data_dir={data_dir!r} "
          f"({type(e).__name__}: {e}); build it first, e.g. `tfds build "
          f"data_pipelines/tfds_builders/{name} --manual_dir=...`") from e
    self.name, self.split = name, split

  def __len__(self):
    return len(self._ds)

  def __getitem__(self, i) -> records.VideoRecord:
    return record_from_example(self._ds[int(i)])

  def where(self, i) -> str:
    return f"tfds:{self.name}/{self.split}[{int(i)}]"


def build(builder_cls, data_dir, manual_dir=None, **kwargs):
  """Prepares a builder (array_record) and returns it."""
  cfg = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
  builder = builder_cls(data_dir=data_dir, file_format=FILE_FORMAT, **kwargs)
  builder.download_and_prepare(download_config=cfg)
  return builder
