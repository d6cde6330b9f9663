"""TFDS builders: synthetic_actions (generated), and manual_dir builders for ucf101, hmdb51,
kinetics400, kinetics600, charades, ssv2 (raw videos + annotations you already have).
Built in array_record so that `tfds.data_source` gives the pipeline random access."""
from data_pipelines.tfds_builders.base import TFDSSource, build
from data_pipelines.tfds_builders.manual import (Charades, Hmdb51, Kinetics400, Kinetics600,
                                                 Ssv2, Ucf101)
from data_pipelines.tfds_builders.synthetic_actions import SyntheticActions
