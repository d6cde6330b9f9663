"""TFDS builders: synthetic_actions (generated), and manual_dir builders for ucf101, hmdb51,
kinetics400, kinetics600, charades, ssv2 (raw videos + annotations you already have)."""
from data_pipelines.tfds_builders.base import TFDSSource, build
from data_pipelines.tfds_builders.synthetic_actions import SyntheticActions
