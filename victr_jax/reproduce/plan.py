"""The runs a paper protocol needs, each an ordinary work directory built from a shipped
config (`victr-reproduce`'s plan).

  runs = plan(Options(protocol='few_shot', root=..., clip=..., out=...))
  for r in runs: print(r.command())

  zero_shot      one Kinetics-400 training per variant, evaluated on HMDB51 and UCF101 test
                 splits 1-3 and the Kinetics-600 draws 1-3 (n = 3 splits per data set)
  few_shot       data set x K x seed (n = seeds)
  base_to_novel  data set x seed (n = seeds; HM of the mean base and novel accuracies)
  k400           one run per variant (4 clips x 3 crops)
  charades       one run per variant (mAP)
A variant that trains nothing (clip_zero_shot) is one evaluation per data set: few-shot
reports it as K=0.
"""
import dataclasses
import os
import shlex
import sys

from data_pipelines import gpath

PROTOCOLS = ("zero_shot", "few_shot", "base_to_novel", "k400", "charades")
DATASETS = {  # protocol -> (data sets it knows, those it runs by default)
    "zero_shot": (("hmdb51", "ucf101", "k600"), ("hmdb51", "ucf101", "k600")),
    "few_shot": (("hmdb51", "ucf101", "k400", "ssv2"), ("hmdb51", "ucf101")),
    "base_to_novel": (("k400", "hmdb51", "ucf101", "ssv2"), ("k400", "hmdb51", "ucf101", "ssv2")),
    "k400": (("k400",), ("k400",)),
    "charades": (("charades",), ("charades",)),
}
TABLE_NAME = {"hmdb51": "hmdb51", "ucf101": "ucf101", "k600": "kinetics600",
              "k400": "kinetics400", "ssv2": "ssv2", "charades": "charades"}
# ViFi-CLIP's datasets_splits/ layout: the folder of each data set's lists.
PEER_FOLDER = {"hmdb51": "hmdb_splits", "ucf101": "ucf_splits", "k400": "k400_splits",
               "ssv2": "ssv2_splits"}
PEER_TEST_LIST = {"hmdb51": "val1.txt", "ucf101": "val1.txt", "ssv2": "validation.txt"}


@dataclasses.dataclass
class Options:
  protocol: str
  root: str
  clip: str
  out: str
  datasets: tuple = ()
  variants: tuple = ("victr", "mean_pool", "clip_zero_shot")
  shots: tuple = (2, 4, 8, 16)
  seeds: tuple = (1, 2, 3)
  lists: str = ""
  max_steps: int = 0
  overrides: tuple = ()  # extra '--config.FIELD=VALUE' arguments for every run


@dataclasses.dataclass
class Run:
  """One run: its work directory `out/name`, the shipped config with its argument, and
  where its numbers go in the table (protocol, data set, setting, variant, seed)."""
  name: str
  protocol: str
  dataset: str
  setting: str
  variant: str
  seed: int
  config: str            # 'few_shot.py:dataset=hmdb51,...' (a shipped config file)
  workdir: str
  trains: bool
  extra: tuple = ()      # '--config.FIELD=VALUE' arguments

  def config_path(self) -> str:
    """'FILE:args' with FILE the shipped config's path (config_lib.config_dir(): the
    repository's configs/ or an installed wheel's victr_jax/configs/), relative to the
    current directory when it lies below it."""
    from victr_jax import config_lib  # pylint: disable=g-import-not-at-top  # imports jax
    file, arg = self.config.split(":", 1)
    return f"{_short(os.path.join(config_lib.config_dir(), file))}:{arg}"

  def argv(self) -> list[str]:
    """The `python -m victr_jax.main` command line of this run."""
    return [sys.executable, "-m", "victr_jax.main", f"--config={self.config_path()}",
            f"--workdir={self.workdir}", f"--mode={'train_and_eval' if self.trains else 'eval'}",
            *self.extra]

  def command(self) -> str:
    return " ".join(shlex.quote(a) for a in ["python", *self.argv()[1:]])


def _short(path: str) -> str:
  rel = os.path.relpath(path)
  return rel if not rel.startswith("..") else path


def _arg(**kw) -> str:
  return ",".join(f"{k}={v}" for k, v in kw.items() if v != "")


def _peer_list(o: Options, *parts) -> str:
  """A list file under --lists; ValueError naming it when it is not there."""
  if not o.lists:
    return ""
  path = os.path.join(o.lists, *parts)
  if not gpath.isfile(path):
    raise ValueError(f"--lists: {path} does not exist (expected ViFi-CLIP's datasets_splits/ "
                     "layout)")
  return path


def datasets_of(o: Options, protocol: str) -> list[str]:
  known, default = DATASETS[protocol]
  if not o.datasets:
    return list(default)
  chosen = [d for d in o.datasets if d in known]
  return chosen


def _zero_shot(o: Options, common: tuple) -> list[Run]:
  ds = datasets_of(o, "zero_shot")
  if not ds:
    return []
  k600_list = (_peer_list(o, "k600_splits", "ZS_split1_K600_eval.txt") and
               os.path.join(o.lists, "k600_splits", "ZS_split{}_K600_eval.txt"))
  runs = []
  for v in o.variants:
    arg = _arg(root=o.root, variant=v, evals="+".join(ds),
               k600="peer" if "k600" in ds else "none", k600_list=k600_list if "k600" in ds
               else "")
    runs.append(Run(f"zero_shot/{v}", "zero_shot", "+".join(ds), "", v, o.seeds[0],
                    f"zero_shot.py:{arg}", "", v != "clip_zero_shot", common))
  return runs


def _few_shot(o: Options, common: tuple) -> list[Run]:
  runs = []
  for d in datasets_of(o, "few_shot"):
    test = _peer_list(o, PEER_FOLDER[d], PEER_TEST_LIST[d]) if d in PEER_TEST_LIST else ""
    for v in o.variants:
      if v == "clip_zero_shot":  # trains nothing: one evaluation, the same for every K
        runs.append(Run(f"few_shot/{d}/{v}", "few_shot", d, "K=0", v, 0,
                        f"few_shot.py:{_arg(dataset=d, root=o.root, variant=v, test_list=test)}",
                        "", False, common))
        continue
      for k in o.shots:
        train = (_peer_list(o, PEER_FOLDER[d], f"train1_few_shot_{k}.txt")
                 if d != "k400" else "")  # ViFi-CLIP ships no Kinetics-400 few-shot lists
        for s in o.seeds:
          arg = _arg(dataset=d, shots=k, seed=s, root=o.root, variant=v, train_list=train,
                     test_list=test)
          runs.append(Run(f"few_shot/{d}/K{k}/seed{s}/{v}", "few_shot", d, f"K={k}", v, s,
                          f"few_shot.py:{arg}", "", True, common))
  return runs


def _base_to_novel(o: Options, common: tuple) -> list[Run]:
  runs = []
  for d in datasets_of(o, "base_to_novel"):
    folder = ("base2novel_splits", PEER_FOLDER[d])
    lists = dict(base_list=_peer_list(o, *folder, "base_val.txt"),
                 novel_list=_peer_list(o, *folder, "novel_val.txt"))
    for v in o.variants:
      seeds = [o.seeds[0]] if v == "clip_zero_shot" else o.seeds
      for s in seeds:
        train = _peer_list(o, *folder, f"fs_base_s{s}_train.txt") if v != "clip_zero_shot" \
            else ""
        arg = _arg(dataset=d, seed=s, root=o.root, variant=v, train_list=train, **lists)
        name = f"base_to_novel/{d}/{v}" if v == "clip_zero_shot" else \
            f"base_to_novel/{d}/seed{s}/{v}"
        runs.append(Run(name, "base_to_novel", d, "", v, s, f"base_to_novel.py:{arg}", "",
                        v != "clip_zero_shot", common))
  return runs


def _supervised(o: Options, common: tuple, protocol: str) -> list[Run]:
  if not datasets_of(o, protocol):
    return []
  return [Run(f"{protocol}/{v}", protocol, protocol, "", v, o.seeds[0],
              f"{protocol}.py:{_arg(root=o.root, variant=v)}", "", v != "clip_zero_shot",
              common + (f"--config.seed={o.seeds[0]}",)) for v in o.variants]


def plan(o: Options) -> list[Run]:
  """Every run of `o.protocol` ('all': every protocol), with work directories under o.out.
  Raises ValueError for an unknown protocol, data set or variant, or a missing list."""
  from victr_jax import config_lib  # pylint: disable=g-import-not-at-top
  protocols = PROTOCOLS if o.protocol == "all" else (o.protocol,)
  if o.protocol != "all" and o.protocol not in PROTOCOLS:
    raise ValueError(f"protocol {o.protocol!r}: expected one of {PROTOCOLS + ('all',)}")
  bad = [v for v in o.variants if v not in config_lib.VARIANTS]
  if bad:
    raise ValueError(f"--variants: {bad} unknown; known {sorted(config_lib.VARIANTS)}")
  known = {d for p in protocols for d in DATASETS[p][0]}
  bad = [d for d in o.datasets if d not in known]
  if bad:
    raise ValueError(f"--datasets: {bad} not in {o.protocol} (known: {sorted(known)})")
  common = (f"--config.clip_checkpoint={o.clip}",) if o.clip else ()
  runs = []
  for p in protocols:
    if p == "zero_shot":
      runs += _zero_shot(o, common)
    elif p == "few_shot":
      runs += _few_shot(o, common)
    elif p == "base_to_novel":
      runs += _base_to_novel(o, common)
    else:
      runs += _supervised(o, common, p)
  for r in runs:
    r.workdir = os.path.join(o.out, r.name)
    steps = (f"--config.num_train_steps={o.max_steps}",) if o.max_steps and r.trains else ()
    r.extra = tuple(r.extra) + steps + tuple(o.overrides)
  return runs
