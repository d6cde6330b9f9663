"""Experiments in the embedded synthetic world, built on the library but not part of it:
the main job (demo.py), the CLIP pretraining it starts from (pretrain.py) and the
recipe-dynamics study (recipe_dynamics.py). `victr_jax` and `data_pipelines` never import
this package."""
