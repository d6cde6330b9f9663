"""Base-to-novel generalisation: train on the base half of the classes (16 shots per class,
seeds 1, 2, 3), evaluate on base and novel test videos; reports their harmonic mean.

  --config=configs/base_to_novel.py:dataset=k400,seed=1,root=/data/victr

Class halves are the peers' (ViFi-CLIP) sets (data_pipelines/splits.base_novel_classes).
Data and augmentation from config_lib.peer_recipe (configs/README.md, "Data recipe").
train_list= trains on the videos of a published list (ViFi-CLIP's
datasets_splits/base2novel_splits/*/fs_base_s{1,2,3}_train.txt) instead of our own draw;
base_list= / novel_list= restrict the test sets likewise (base_val.txt, novel_val.txt).
"""
from data_pipelines import splits
from victr_jax import config_lib

DATASETS = config_lib.TRANSFER_DATASETS  # as few_shot.py's


def get_config(arg=None):
  a = config_lib.parse_arg(arg, dataset="k400", seed=1, shots=16, root=config_lib.DATA_ROOT,
                           model="", frames=32, variant="victr", train_list="",
                           base_list="", novel_list="")
  if a.dataset not in DATASETS:
    raise ValueError(f"config argument dataset={a.dataset!r}: known {sorted(DATASETS)}")
  names, train, test = DATASETS[a.dataset]
  base, novel = splits.base_novel_classes(len(splits.read_classnames(names)), names)
  c = config_lib.peer_recipe(config_lib.base(a.model or "B/16"))
  c.model.num_frames = a.frames
  # The head a few videos and queries at a time: same numbers, memory bounded at 32 frames
  # (--mode=compile: zero-shot B/16, batch 256, fits v5e:4x4; docs/method.md, "Memory").
  c.model.head.attention_chunk, c.model.head.video_chunk = 128, 64
  c.model.remat = True
  d = c.data
  d.batch_size, d.eval_batch_size = 64, 64
  d.flip = a.dataset != "ssv2"
  d.train = config_lib.records_set(f"{a.root}/{train}", names, classes=base,
                                   shots=0 if a.train_list else a.shots, shot_seed=a.seed,
                                   list_file=a.train_list)
  c.evals.base = config_lib.records_set(f"{a.root}/{test}", names, classes=base, group="base",
                                        list_file=a.base_list)
  c.evals.novel = config_lib.records_set(f"{a.root}/{test}", names, classes=novel,
                                         group="novel", list_file=a.novel_list)
  c.optim.lr = 2e-6
  c.num_epochs = 11  # ViFi-CLIP base-to-novel (configs/base2novel/*/16_32_vifi_clip_s*.yaml)
  c.seed = a.seed
  return config_lib.finish(c, a)
