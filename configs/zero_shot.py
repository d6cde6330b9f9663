"""Zero-shot transfer: train on Kinetics-400, evaluate without further training on HMDB51
and UCF101 (3 official test splits each, mean and std) and on the Kinetics-600 classes not
in Kinetics-400 (3 draws of 160 of the 220).

  --config=configs/zero_shot.py:root=/data/victr,k600=peer,variant=victr,evals=ucf101

k600: peer (the peers' three draws) | ours (splits.kinetics600_zero_shot_splits) | none;
k600_list: a published list per draw, '{}' for its number (ViFi-CLIP's
datasets_splits/k600_splits/ZS_split{}_K600_eval.txt), read from all K600 records.
evals: '+'-separated sets or groups to evaluate (hmdb51, ucf101, k600; default all).
model: a size (B/16, L/14, ...); left out, the CLIP of --config.clip_checkpoint (B/16
without one).

Data (victr-prepare outputs under root): kinetics400/train.tfrecord-*,
hmdb51/split{1,2,3}/test.tfrecord-*, ucf101/split{1,2,3}/test.tfrecord-*,
kinetics600/val.tfrecord-*. Peers' recipe: 32 frames, single view, lr 8e-6, batch 256,
10 epochs, AdamW (0.9, 0.98), wd 0.001, cosine; data and augmentation from
config_lib.peer_recipe (configs/README.md, "Data recipe").
"""
from data_pipelines import splits
from victr_jax import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, root=config_lib.DATA_ROOT, model="", frames=32,
                           k600="peer", k600_list="", variant="victr")
  c = config_lib.peer_recipe(config_lib.base(a.model or "B/16"))
  c.model.num_frames = a.frames
  # The head a few videos and queries at a time: same numbers, memory bounded at 32 frames
  # (--mode=compile: zero-shot B/16, batch 256, fits v5e:4x4; docs/method.md, "Memory").
  c.model.head.attention_chunk, c.model.head.video_chunk = 128, 64
  c.model.remat = True  # v5e:4x4 needs it (15.2 GiB without: under 10% free; pod plan)
  d = c.data
  d.batch_size, d.eval_batch_size = 256, 64
  d.train = config_lib.records_set(f"{a.root}/kinetics400/train.tfrecord-*", "kinetics400")
  for ds in ("hmdb51", "ucf101"):
    for s in (1, 2, 3):
      c.evals[f"{ds}_split{s}"] = config_lib.records_set(
          f"{a.root}/{ds}/split{s}/test.tfrecord-*", ds, group=ds)
  if a.k600 not in ("peer", "ours", "none"):
    raise ValueError(f"config argument k600={a.k600!r}: expected peer | ours | none")
  draws = {"peer": splits.kinetics600_peer_zero_shot_splits,
           "ours": splits.kinetics600_zero_shot_splits, "none": list}[a.k600]()
  for i, classes in enumerate(draws):
    # A published list names videos from every official split: read all K600 records.
    c.evals[f"k600_split{i + 1}"] = config_lib.records_set(
        f"{a.root}/kinetics600/{'*' if a.k600_list else 'val'}.tfrecord-*", "kinetics600",
        classes=classes, group="k600", list_file=a.k600_list.format(i + 1))
  c.optim.lr = 8e-6
  c.num_epochs = 10
  return config_lib.finish(c, a)
