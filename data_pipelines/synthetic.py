"""synthetic_actions: procedural videos whose classes need temporal reasoning.

Each video shows one shape ("square", "circle", "triangle") of some colour on some
background, doing one motion. A class is a (shape, motion) pair named compositionally,
e.g. "a square moving left". The motions come in reverse pairs (left/right, up/down,
growing/shrinking): a motion and its reverse show the same set of frames in opposite
order, so averaging frames (CLIP zero-shot, mean pooling) cannot tell them apart and only
temporal reasoning can. Colours and backgrounds vary independently of the class: they are
the auxiliary concepts (objects, colours, scenes). Base-to-novel splits hold out (shape,
motion) pairs whose shape and motion both appear, in other pairs, among the base classes.

Everything is generated from a seed: no files are needed, and the same seed gives the
same videos on every machine.
"""
import dataclasses
import json
import os
from typing import Iterator

import numpy as np

from data_pipelines import records, video_io

SHAPES = ("square", "circle", "triangle")
MOTIONS = ("moving left", "moving right", "moving up", "moving down", "growing", "shrinking")
COLOURS = {"red": (220, 50, 40), "green": (40, 190, 70), "blue": (50, 90, 230),
           "yellow": (235, 205, 40), "white": (235, 235, 235), "purple": (150, 60, 200)}
BACKGROUNDS = ("dark background", "light background", "noisy background", "striped background")
SPLIT_SEEDS = {"train": 0, "test": 1, "val": 2, "pretrain": 3}


def classes() -> list[str]:
  return [f"a {s} {m}" for s in SHAPES for m in MOTIONS]


def class_parts(i: int) -> tuple[str, str]:
  return SHAPES[i // len(MOTIONS)], MOTIONS[i % len(MOTIONS)]


def base_novel_classes() -> tuple[list[int], list[int]]:
  """Compositional halves: (shape + motion) even -> base, odd -> novel; every shape and
  every motion occurs in both halves."""
  base = [i for i in range(len(classes())) if (i // len(MOTIONS) + i % len(MOTIONS)) % 2 == 0]
  return base, [i for i in range(len(classes())) if i not in base]


def aux_vocab() -> tuple[list[str], np.ndarray, list[str]]:
  """(phrases, category of each, category names): shapes, colours, backgrounds."""
  groups = {"objects": [f"a {s}" for s in SHAPES],
            "colours": [f"something {c}" for c in COLOURS],
            "scenes": [f"a {b}" for b in BACKGROUNDS]}
  phrases, cats = [], []
  for c, (_, items) in enumerate(groups.items()):
    phrases += items
    cats += [c] * len(items)
  return phrases, np.asarray(cats, np.int32), list(groups)


@dataclasses.dataclass
class Video:
  frames: np.ndarray  # (T, S, S, 3) uint8
  label: int
  shape: str
  motion: str
  colour: str
  background: str
  centres: np.ndarray = None  # (T, 2) x, y in [0, 1]
  radii: np.ndarray = None  # (T,)

  @property
  def caption(self) -> str:
    return f"a {self.colour} {self.shape} on a {self.background}"

  def frame_caption(self, t: int) -> str:
    """What frame t shows, position and size included: the words a frame-level CLIP can
    learn (pretraining), from which a video model can read motion."""
    x, y = self.centres[t]
    col = "left" if x < 0.42 else "right" if x > 0.58 else "centre"
    row = "top" if y < 0.42 else "bottom" if y > 0.58 else "middle"
    r = self.radii[t]
    size = "small" if r < 0.11 else "large" if r > 0.17 else "medium"
    return f"a {size} {self.colour} {self.shape} at the {row} {col} on a {self.background}"


def _background(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
  if kind == "dark background":
    return np.full((size, size, 3), rng.integers(10, 50), np.float32)
  if kind == "light background":
    return np.full((size, size, 3), rng.integers(150, 190), np.float32)
  if kind == "noisy background":
    return rng.uniform(40, 140, (size, size, 1)).repeat(3, axis=2).astype(np.float32)
  period = int(rng.integers(6, 12))
  stripes = ((np.arange(size) // period) % 2)[None, :, None] * 70.0 + 50.0
  return np.broadcast_to(stripes, (size, size, 3)).astype(np.float32).copy()


def _mask(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
  yy, xx = (np.mgrid[:size, :size] + 0.5) / size
  if shape == "square":
    return (np.abs(xx - cx) < r) & (np.abs(yy - cy) < r)
  if shape == "circle":
    return (xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2
  # triangle pointing up: inside when below the apex lines and above the base
  return (yy < cy + r) & (yy > cy - r) & (np.abs(xx - cx) < (yy - (cy - r)) / 2)


def render(label: int, rng: np.random.Generator, num_frames: int = 16,
           size: int = 64) -> Video:
  """One video of class `label` with random colour, background, position and speed."""
  shape, motion = class_parts(label)
  colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
  bg_kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
  bg = _background(bg_kind, size, rng)
  t = np.linspace(0.0, 1.0, num_frames)
  r = np.full(num_frames, rng.uniform(0.1, 0.16))
  cx = np.full(num_frames, rng.uniform(0.35, 0.65))
  cy = np.full(num_frames, rng.uniform(0.35, 0.65))
  a, b = rng.uniform(0.2, 0.3), rng.uniform(0.7, 0.8)  # travel from a to b (or back)
  if motion in ("moving left", "moving right"):
    cx = a + (b - a) * t if motion == "moving right" else b - (b - a) * t
  elif motion in ("moving up", "moving down"):
    cy = a + (b - a) * t if motion == "moving down" else b - (b - a) * t
  else:
    lo, hi = rng.uniform(0.05, 0.08), rng.uniform(0.2, 0.26)
    r = lo + (hi - lo) * t if motion == "growing" else hi - (hi - lo) * t
  col = np.asarray(COLOURS[colour], np.float32)
  frames = np.empty((num_frames, size, size, 3), np.uint8)
  for i in range(num_frames):
    img = bg.copy()
    img[_mask(shape, cx[i], cy[i], r[i], size)] = col
    img += rng.normal(0, 4, img.shape)
    frames[i] = np.clip(img, 0, 255).astype(np.uint8)
  return Video(frames, label, shape, motion, colour, bg_kind,
               np.stack([cx * np.ones(num_frames), cy * np.ones(num_frames)], 1),
               r * np.ones(num_frames))


def generate(split: str, per_class: int, num_frames: int = 16, size: int = 64,
             seed: int = 0, class_ids=None) -> Iterator[Video]:
  """`per_class` videos of every class (or of `class_ids`), deterministic in (seed, split)."""
  ids = range(len(classes())) if class_ids is None else class_ids
  rng = np.random.default_rng([seed, SPLIT_SEEDS.get(split, 9)])
  for k in range(per_class):
    for c in ids:
      yield render(c, rng, num_frames, size)


def write(out_dir: str, per_class: dict[str, int], num_frames: int = 16, size: int = 64,
          seed: int = 0, num_shards: int = 2, fmt: str = "tfrecord",
          jpeg_quality: int = 90) -> dict:
  """Writes DMVR record shards per split plus classes.txt, aux vocabulary, base/novel
  class lists and manifest.json into out_dir. Returns the manifest."""
  os.makedirs(out_dir, exist_ok=True)
  names = classes()
  manifest = {"dataset": "synthetic_actions", "seed": seed, "num_frames": num_frames,
              "size": size, "classes": len(names), "splits": {}}
  for split, n in per_class.items():
    recs = (records.VideoRecord([video_io.encode_jpeg(f, jpeg_quality) for f in v.frames],
                                [v.label], [names[v.label]], f"{split}_{i:06d}")
            for i, v in enumerate(generate(split, n, num_frames, size, seed)))
    paths = records.write_shards(recs, os.path.join(out_dir, split), num_shards, fmt)
    manifest["splits"][split] = {"videos": n * len(names), "shards": [os.path.basename(p)
                                                                      for p in paths]}
  with open(os.path.join(out_dir, "classes.txt"), "w") as f:
    f.write("\n".join(names) + "\n")
  phrases, cats, cat_names = aux_vocab()
  os.makedirs(os.path.join(out_dir, "aux_vocab"), exist_ok=True)
  for c, cname in enumerate(cat_names):
    with open(os.path.join(out_dir, "aux_vocab", f"{cname}.txt"), "w") as f:
      f.write("\n".join(p for p, k in zip(phrases, cats) if k == c) + "\n")
  base, novel = base_novel_classes()
  manifest["base_classes"], manifest["novel_classes"] = base, novel
  with open(os.path.join(out_dir, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=2)
  return manifest
