"""Video input pipelines: DMVR records, TFDS builders, protocol splits, synthetic data."""
