"""TFDS builder for synthetic_actions (generated on the fly, no files needed)."""
import tensorflow_datasets as tfds

from data_pipelines import records, synthetic, video_io
from data_pipelines.tfds_builders import base


class SyntheticActions(tfds.core.GeneratorBasedBuilder):
  """Procedural colour-motion videos; see data_pipelines/synthetic.py."""

  VERSION = tfds.core.Version("3.1.0")
  RELEASE_NOTES = {"1.0.0": "First version.",
                   "2.0.0": "Classes are colour x motion (were shape x motion); larger shapes.",
                   "3.0.0": "Motions named by where they end ('moving to the left', "
                            "'growing large').",
                   "3.1.0": "Clip time features start_us / end_us (-1: none), as the "
                            "manual_dir builders."}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="default", description="16 frames, 64 px, 30/10 per class"),
      tfds.core.BuilderConfig(name="tiny", description="16 frames, 64 px, 4/2 per class"),
  ]
  _PER_CLASS = {"default": {"train": 30, "test": 10}, "tiny": {"train": 4, "test": 2}}

  def _info(self):
    return self.dataset_info_from_configs(features=base.features(synthetic.classes()),
                                          description=synthetic.__doc__)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split, n)
            for split, n in self._PER_CLASS[self.builder_config.name].items()}

  def _generate_examples(self, split, per_class):
    names = synthetic.classes()
    for i, v in enumerate(synthetic.generate(split, per_class)):
      key = f"{split}_{i:06d}"
      yield key, base.example(records.VideoRecord(
          [video_io.encode_jpeg(f) for f in v.frames], [v.label], [names[v.label]], key))
