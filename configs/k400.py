"""Fully supervised Kinetics-400: top-1 / top-5 with multi-view test (4 clips x 3 crops).

  --config=configs/k400.py:root=/data/victr,model=L/14,frames=8

Data and augmentation from config_lib.peer_recipe (configs/README.md, "Data recipe"); with
3 test crops the short side is resized to the crop size (the peers' 3-crop test).
"""
from victr_jax import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, root=config_lib.DATA_ROOT, model="", frames=8,
                           clips=4, crops=3, variant="victr")
  c = config_lib.peer_recipe(config_lib.base(a.model or "L/14"))
  c.model.num_frames = a.frames
  # v5e:4x4 needs it (15.8 GiB without). On v4:2x2x2 the step without it needs 15.1 GiB of
  # temporaries of a core's 15.25 (a v4 device is one TensorCore), and XLA then recomputes
  # as much on its own (model / XLA FLOPs 0.78): pod plan.
  c.model.remat = True
  d = c.data
  d.batch_size, d.eval_batch_size = 256, 32
  d.num_test_clips, d.num_test_crops = a.clips, a.crops
  if a.crops == 3:
    d.test_resize = 0
  d.train = config_lib.records_set(f"{a.root}/kinetics400/train.tfrecord-*", "kinetics400")
  c.evals.k400_val = config_lib.records_set(f"{a.root}/kinetics400/val.tfrecord-*",
                                            "kinetics400")
  c.optim.lr = 8e-6
  c.num_epochs = 30
  c.mesh.fsdp, c.mesh.data = 8, -1  # towers sharded FSDP-style in groups of 8 chips (pods)
  return config_lib.finish(c, a)
