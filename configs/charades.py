"""Charades: long-form, multi-label (157 classes), sigmoid BCE, evaluated by mAP.

  --config=configs/charades.py:root=/data/victr

classes.txt from `victr-prepare --layout charades --classes Charades_v1_classes.txt`
gives the class names used for the prompts. Data and augmentation from
config_lib.peer_recipe (configs/README.md, "Data recipe"), without mixup / CutMix or label
smoothing (multi-label targets; the peers have no Charades recipe).
"""
from victr_jax import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, root=config_lib.DATA_ROOT, model="", frames=32,
                           clips=4, crops=1, variant="victr")
  c = config_lib.peer_recipe(config_lib.base(a.model or "L/14"))
  c.model.num_frames = a.frames
  # The head a few videos and queries at a time: same numbers, memory bounded at 32 frames
  # (--mode=compile: zero-shot B/16, batch 256, fits v5e:4x4; docs/method.md, "Memory").
  c.model.head.attention_chunk, c.model.head.video_chunk = 128, 64
  c.model.remat = True
  d = c.data
  d.multi_label = True
  # Sigmoid BCE on s cos (s about 100) starts with every sigmoid near 1: a learnable bias
  # from -10 starts them small (experiments/recipe_dynamics.py --recipes charades).
  c.model.logit_bias = True
  d.batch_size, d.eval_batch_size = 64, 16
  d.num_test_clips, d.num_test_crops = a.clips, a.crops
  names = f"{a.root}/charades/classes.txt"
  d.train = config_lib.records_set(f"{a.root}/charades/train.tfrecord-*", names)
  c.evals.charades_test = config_lib.records_set(f"{a.root}/charades/test.tfrecord-*", names)
  c.optim.lr, c.optim.label_smoothing = 8e-6, 0.0
  c.optim.mixup_alpha = c.optim.cutmix_alpha = 0.0
  c.num_epochs = 50
  c.mesh.fsdp, c.mesh.data = 8, -1  # towers sharded FSDP-style in groups of 8 chips
  return config_lib.finish(c, a)
