"""Few-shot transfer: K videos per class from split-1 train, evaluated on split-1 test.

  --config=configs/few_shot.py:dataset=hmdb51,shots=2,seed=0,root=/data/victr

dataset: hmdb51 | ucf101 | k400 | ssv2; shots: 2 | 4 | 8 | 16. Start from a CLIP checkpoint
with --config.clip_checkpoint=..., or from a trained run (e.g. the zero-shot VicTR trained
on Kinetics-400) with --config.init_from=WORKDIR. Peers' recipe: 32 frames,
lr 2e-6, batch 64, 50 epochs; data and augmentation from config_lib.peer_recipe
(configs/README.md, "Data recipe").

train_list=/path/to/train1_few_shot_2.txt trains on the videos of a published list (e.g.
ViFi-CLIP's datasets_splits/*/train1_few_shot_K.txt) instead of our own draw of `shots`;
test_list= restricts the test set likewise (formats: data_pipelines/splits.read_video_list).
"""
from victr_jax import config_lib

DATASETS = config_lib.TRANSFER_DATASETS  # name -> (classnames, train glob, test glob)


def get_config(arg=None):
  a = config_lib.parse_arg(arg, dataset="hmdb51", shots=2, seed=0, root=config_lib.DATA_ROOT,
                           model="", frames=32, variant="victr", train_list="",
                           test_list="")
  if a.dataset not in DATASETS:
    raise ValueError(f"config argument dataset={a.dataset!r}: known {sorted(DATASETS)}")
  if a.shots not in (2, 4, 8, 16):
    raise ValueError(f"config argument shots={a.shots}: the protocol uses 2, 4, 8 or 16")
  names, train, test = DATASETS[a.dataset]
  c = config_lib.peer_recipe(config_lib.base(a.model or "B/16"))
  c.model.num_frames = a.frames
  # The head a few videos and queries at a time: same numbers, memory bounded at 32 frames
  # (--mode=compile: zero-shot B/16, batch 256, fits v5e:4x4; docs/method.md, "Memory").
  c.model.head.attention_chunk, c.model.head.video_chunk = 128, 64
  c.model.remat = True
  d = c.data
  d.batch_size, d.eval_batch_size = 64, 64
  d.flip = a.dataset != "ssv2"  # SSv2 has left/right classes
  d.train = config_lib.records_set(f"{a.root}/{train}", names,
                                   shots=0 if a.train_list else a.shots, shot_seed=a.seed,
                                   list_file=a.train_list)
  c.evals[f"{a.dataset}_test"] = config_lib.records_set(f"{a.root}/{test}", names,
                                                        list_file=a.test_list)
  c.optim.lr = 2e-6
  c.num_epochs = 50
  c.seed = a.seed
  return config_lib.finish(c, a)
