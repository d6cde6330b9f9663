"""synthetic_actions: procedural videos whose classes need temporal reasoning.

Each video shows one coloured shape on some background doing one motion. A class is a
(colour, motion) pair named compositionally, e.g. "a red shape moving to the left". The motions
come in reverse pairs (left/right, up/down, growing/shrinking): a motion and its reverse
show the same set of frames in opposite order, so averaging frames (CLIP zero-shot, mean
pooling) over a clip that spans the video cannot tell them apart and only temporal
reasoning can. The shape (square, triangle, cross), the background, the start position
and the speed vary independently of the class; shapes, places and backgrounds are the
auxiliary concepts. Base-to-novel splits hold out (colour, motion axis) pairs whose colour
and motions all appear, in other pairs, among the base classes.

Everything is generated from a seed: no files are needed, and the same seed gives the
same videos on every machine.
"""
import dataclasses
import json
import os
from typing import Iterator

import numpy as np

from data_pipelines import gpath, records, video_io

SHAPES = ("square", "triangle", "cross")
# Named with the words frame captions ground (places, sizes): the words of a motion say where
# or how large the shape ends up, so the two motions of a reverse pair differ in a word whose
# per-frame affinity rises over one and falls over the other.
MOTIONS = ("moving to the left", "moving to the right", "moving to the top",
           "moving to the bottom", "growing large", "shrinking small")
COLOURS = {"red": (220, 50, 40), "green": (40, 190, 70), "blue": (50, 90, 230)}
PLACES = ("left", "right", "top", "bottom")
PLACE_MARGIN = 0.12  # a frame caption names a side only when the centre is this far from 0.5
BACKGROUNDS = ("dark background", "light background", "noisy background", "striped background")
SPLIT_SEEDS = {"train": 0, "test": 1, "val": 2, "pretrain": 3}
KINDS = ("actions", "sequences")  # one motion per video | two motions in turn (multi-label)
VERSION = 4  # of the generator: 4 = test videos in reverse pairs; 3 = motions named by where
# they end (2: "moving left", ...)
PAIRED_SPLITS = ("test",)  # each video of a motion comes with its time reversal (see generate)


def classes() -> list[str]:
  return [f"a {c} shape {m}" for c in COLOURS for m in MOTIONS]


def class_parts(i: int) -> tuple[str, str]:
  """(colour, motion) of class i."""
  return list(COLOURS)[i // len(MOTIONS)], MOTIONS[i % len(MOTIONS)]


def base_novel_classes() -> tuple[list[int], list[int]]:
  """Compositional halves by (colour, motion axis): (colour + axis) even -> base (10
  classes), odd -> novel (8). A motion and its reverse stay in the same half, so both
  halves still need the direction of a motion; every colour and every motion occurs in
  both halves."""
  axis = lambda i: (i % len(MOTIONS)) // 2  # left/right, up/down, growing/shrinking
  base = [i for i in range(len(classes())) if (i // len(MOTIONS) + axis(i)) % 2 == 0]
  return base, [i for i in range(len(classes())) if i not in base]


def aux_vocab() -> tuple[list[str], np.ndarray, list[str]]:
  """(phrases, category of each, category names): shapes, places, backgrounds."""
  groups = {"objects": [f"a {s}" for s in SHAPES],
            "places": [f"a shape at the {p}" for p in PLACES],
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
  labels: tuple = ()  # every class the video shows (KINDS 'sequences'); () -> (label,)

  @property
  def all_labels(self) -> list[int]:
    return list(self.labels) or [self.label]

  def frame_attributes(self, t: int) -> dict:
    """What frame t shows, as words: size, colour, shape, place, background."""
    x, y = self.centres[t]
    r = self.radii[t]
    return {"size": SIZES[0] if r < 0.14 else SIZES[2] if r > 0.22 else SIZES[1],
            "colour": self.colour, "shape": self.shape, "place": place_words(x, y),
            "background": self.background}

  def frame_caption(self, t: int) -> str:
    """A description of frame t, position and size included: the words a frame-level
    CLIP can learn (pretraining), from which a video model can read motion."""
    return describe(**self.frame_attributes(t))


SIZES = ("small", "medium", "large")
FRAME_PLACES = ("top left", "top", "top right", "left", "middle", "right", "bottom left", "bottom",
                "bottom right")
ATTRIBUTES = {"size": SIZES, "colour": tuple(COLOURS), "shape": SHAPES, "place": FRAME_PLACES,
              "background": BACKGROUNDS}


def place_words(x: float, y: float) -> str:
  """Where a centre (x, y) in [0, 1] is, in words: a side only when it is clearly off-centre
  ('top left', 'left', 'middle'), so that every place word is true of what the frame shows."""
  m = PLACE_MARGIN
  rows = "top" if y < 0.5 - m else "bottom" if y > 0.5 + m else ""
  cols = "left" if x < 0.5 - m else "right" if x > 0.5 + m else ""
  return " ".join(w for w in (rows, cols) if w) or "middle"


def describe(size=None, colour=None, shape=None, place=None, background=None) -> str:
  """'a {size} {colour} {shape} at the {place} on a {background}' ('in the middle'); a
  missing field is left out ('shape' stands for a missing shape): 'a red shape at the left'."""
  text = "a " + " ".join([w for w in (size, colour) if w] + [shape or "shape"])
  text += "" if not place else " in the middle" if place == "middle" else f" at the {place}"
  return text + (f" on a {background}" if background else "")


MIRRORS = ("x", "y", "d")  # left-right, top-bottom, across the main diagonal (x <-> y)


def mirrored(frame: np.ndarray, attrs: dict, axis: str) -> tuple[np.ndarray, dict]:
  """A frame (S, S, 3) flipped left-right (axis 'x'), top-bottom ('y') or across the main
  diagonal ('d': x and y swapped, a place on one axis moved to the other), and its
  attributes with the place mirrored to match ('top left' -> 'top right' for 'x', 'top
  right' -> 'bottom left' for 'd'). A flipped triangle points down or sideways: still
  called a triangle."""
  swap = {"x": {"left": "right", "right": "left"}, "y": {"top": "bottom", "bottom": "top"},
          "d": {"left": "top", "top": "left", "right": "bottom", "bottom": "right"}}[axis]
  words = [swap.get(w, w) for w in attrs["place"].split()]
  rows = [w for w in words if w in ("top", "bottom")]  # 'top left': the row word first
  place = " ".join(rows + [w for w in words if w not in rows])
  image = {"x": frame[:, ::-1], "y": frame[::-1], "d": frame.transpose(1, 0, 2)}[axis]
  return image, dict(attrs, place=place)


def frames_and_captions(split: str, n: int, size: int = 32, seed: int = 0,
                        per_video: int = 2):
  """n single frames of random videos with their descriptions (the pretraining data),
  `per_video` consecutive entries from each video: (frames (n, size, size, 3) uint8,
  captions, attribute dicts). Frames of one video differ only in place or size, so a batch
  of whole groups holds the hard negatives that teach those words."""
  rng = np.random.default_rng([seed, SPLIT_SEEDS.get(split, 9), 1])
  frames, caps, attrs = [], [], []
  while len(frames) < n:
    v = render(int(rng.integers(len(classes()))), rng, num_frames=8, size=size)
    for t in rng.choice(8, per_video, replace=False):
      frames.append(v.frames[t])
      attrs.append(v.frame_attributes(int(t)))
      caps.append(v.frame_caption(int(t)))
  return np.stack(frames[:n]), caps[:n], attrs[:n]


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
  if shape == "cross":  # a plus sign: two bars of width 2r/3
    return (((np.abs(xx - cx) < r) & (np.abs(yy - cy) < r / 3)) |
            ((np.abs(yy - cy) < r) & (np.abs(xx - cx) < r / 3)))
  # triangle pointing up: inside when below the apex lines and above the base
  return (yy < cy + r) & (yy > cy - r) & (np.abs(xx - cx) < (yy - (cy - r)) / 2)


def render(label: int, rng: np.random.Generator, num_frames: int = 16,
           size: int = 64) -> Video:
  """One video of class `label` with random shape, background, position and speed."""
  colour, motion = class_parts(label)
  shape = SHAPES[int(rng.integers(len(SHAPES)))]
  bg_kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
  bg = _background(bg_kind, size, rng)
  t = np.linspace(0.0, 1.0, num_frames)
  r = np.full(num_frames, rng.uniform(0.15, 0.22))
  cx = np.full(num_frames, rng.uniform(0.35, 0.65))
  cy = np.full(num_frames, rng.uniform(0.35, 0.65))
  a, b = rng.uniform(0.2, 0.3), rng.uniform(0.7, 0.8)  # travel from a to b (or back)
  m = MOTIONS.index(motion)  # 0 left, 1 right, 2 up, 3 down, 4 growing, 5 shrinking
  if m < 2:
    cx = a + (b - a) * t if m == 1 else b - (b - a) * t
  elif m < 4:
    cy = a + (b - a) * t if m == 3 else b - (b - a) * t
  else:
    lo, hi = rng.uniform(0.07, 0.1), rng.uniform(0.26, 0.3)
    r = lo + (hi - lo) * t if m == 4 else hi - (hi - lo) * t
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


def reversed_video(v: Video, label: int) -> Video:
  """v played backwards, as a video of class `label` (its motion's reverse)."""
  return dataclasses.replace(v, frames=v.frames[::-1].copy(), label=label,
                             motion=class_parts(label)[1], centres=v.centres[::-1].copy(),
                             radii=v.radii[::-1].copy())


SEQUENCE_TRAVEL = 0.3  # distance of a position step, and size change of a size step


def render_sequence(colour: str, motions: tuple[str, str], rng: np.random.Generator,
                    num_frames: int = 16, size: int = 64) -> Video:
  """One video of the multi-label kind: a shape of `colour` does motions[0] over the first
  half of the frames, then motions[1] (of another axis) from where it got to. Labelled with
  both classes (colour, motion); the path is centred so that it stays inside the frame."""
  names = classes()
  shape = SHAPES[int(rng.integers(len(SHAPES)))]
  bg_kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
  bg = _background(bg_kind, size, rng)
  ms = [MOTIONS.index(m) for m in motions]
  if ms[0] // 2 == ms[1] // 2:
    raise ValueError(f"render_sequence: motions {motions} are on one axis")
  d = SEQUENCE_TRAVEL * rng.uniform(0.85, 1.0)
  sign = {0: (0, -1), 1: (0, 1), 2: (1, -1), 3: (1, 1)}  # motion -> (axis x/y, direction)
  half = num_frames // 2
  u = np.concatenate([np.linspace(0.0, 1.0, half), np.ones(num_frames - half)])  # step 1
  v = np.concatenate([np.zeros(half), np.linspace(0.0, 1.0, num_frames - half)])  # step 2
  pos = np.full((num_frames, 2), 0.5) + rng.uniform(-0.05, 0.05, 2)
  lo, hi = rng.uniform(0.07, 0.1), rng.uniform(0.26, 0.3)
  r = np.full(num_frames, rng.uniform(0.15, 0.22))
  for m, w in zip(ms, (u, v)):
    if m < 4:
      axis, direction = sign[m]
      pos[:, axis] += direction * d * (w - 0.5)  # centred: from -d/2 to +d/2 of the start
    else:
      r = lo + (hi - lo) * w if m == 4 else hi - (hi - lo) * w
  col = np.asarray(COLOURS[colour], np.float32)
  frames = np.empty((num_frames, size, size, 3), np.uint8)
  for i in range(num_frames):
    img = bg.copy()
    img[_mask(shape, pos[i, 0], pos[i, 1], r[i], size)] = col
    img += rng.normal(0, 4, img.shape)
    frames[i] = np.clip(img, 0, 255).astype(np.uint8)
  labels = tuple(names.index(f"a {colour} shape {m}") for m in motions)
  return Video(frames, labels[0], shape, " then ".join(motions), colour, bg_kind, pos, r,
               labels)


def reversed_sequence(v: Video) -> Video:
  """v played backwards: each step's motion reversed, in the opposite order."""
  rev = lambda c: c + 1 if c % 2 == 0 else c - 1  # a motion's reverse: its pair partner
  labels = tuple(rev(c) for c in v.labels[::-1])
  return dataclasses.replace(v, frames=v.frames[::-1].copy(), label=labels[0], labels=labels,
                             motion=" then ".join(class_parts(c)[1] for c in labels),
                             centres=v.centres[::-1].copy(), radii=v.radii[::-1].copy())


def generate_sequences(split: str, per_class: int, num_frames: int = 16, size: int = 64,
                       seed: int = 0) -> Iterator[Video]:
  """per_class x 9 videos of render_sequence (each class a positive about per_class times:
  every video has 2 of the 18), colour and the ordered pair of motions (of different axes)
  drawn at random. In PAIRED_SPLITS every second video is the one before played backwards,
  so frame averaging gives a video and its reverse the same scores."""
  rng = np.random.default_rng([seed, SPLIT_SEEDS.get(split, 9), 7])
  axis = {m: k // 2 for k, m in enumerate(MOTIONS)}
  pairs = [(a, b) for a in MOTIONS for b in MOTIONS if axis[a] != axis[b]]
  prev = None
  for i in range(per_class * len(classes()) // 2):
    if split in PAIRED_SPLITS and i % 2:
      yield reversed_sequence(prev)
      continue
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    prev = render_sequence(colour, pairs[int(rng.integers(len(pairs)))], rng, num_frames, size)
    yield prev


def generate(split: str, per_class: int, num_frames: int = 16, size: int = 64,
             seed: int = 0, class_ids=None) -> Iterator[Video]:
  """`per_class` videos of every class (or of `class_ids`), deterministic in (seed, split).

  In PAIRED_SPLITS (the test split) the second class of each reverse pair (moving to the
  right, to the bottom, shrinking) gets the first one's videos played backwards. A motion
  and its reverse then show exactly the same frames, so any model that ignores frame order
  (CLIP's frame average, mean pooling) gives both videos of a pair the same prediction and
  scores exactly 0.5 on direction: the chance level holds by construction, not by luck of
  the draw."""
  ids = range(len(classes())) if class_ids is None else class_ids
  rng = np.random.default_rng([seed, SPLIT_SEEDS.get(split, 9)])
  for _ in range(per_class):
    made = {}
    for c in ids:
      first = c - 1 if c % 2 else c  # motions come in pairs: even index, then its reverse
      if split in PAIRED_SPLITS and c % 2 and first in made:
        yield reversed_video(made[first], c)
        continue
      made[c] = render(c, rng, num_frames, size)
      yield made[c]


def write(out_dir: str, per_class: dict[str, int], num_frames: int = 16, size: int = 64,
          seed: int = 0, num_shards: int = 2, fmt: str = "tfrecord",
          jpeg_quality: int = 90, kind: str = "actions") -> dict:
  """Writes DMVR record shards per split plus classes.txt, aux vocabulary, base/novel
  class lists and manifest.json into out_dir. Returns the manifest. kind (KINDS): one
  motion per video, or 'sequences' (generate_sequences: two labels per video)."""
  if kind not in KINDS:
    raise ValueError(f"synthetic kind {kind!r}: expected one of {KINDS}")
  gpath.makedirs(out_dir)
  names = classes()
  videos = generate_sequences if kind == "sequences" else generate
  manifest = {"dataset": "synthetic_actions", "kind": kind, "version": VERSION, "seed": seed,
              "num_frames": num_frames, "size": size, "classes": len(names),
              "class_names": names, "splits": {}}
  for split, n in per_class.items():
    for old in gpath.glob(os.path.join(out_dir, f"{split}.*")):  # an earlier generation's
      gpath.remove(old)
    recs = (records.VideoRecord([video_io.encode_jpeg(f, jpeg_quality) for f in v.frames],
                                v.all_labels, [names[c] for c in v.all_labels],
                                f"{split}_{i:06d}")
            for i, v in enumerate(videos(split, n, num_frames, size, seed)))
    paths = records.write_shards(recs, os.path.join(out_dir, split), num_shards, fmt)
    count = n * len(names) // (2 if kind == "sequences" else 1)
    manifest["splits"][split] = {"videos": count, "per_class": n,
                                 "shards": [os.path.basename(p) for p in paths]}
  gpath.atomic_write(os.path.join(out_dir, "classes.txt"), "\n".join(names) + "\n")
  phrases, cats, cat_names = aux_vocab()
  for c, cname in enumerate(cat_names):
    gpath.atomic_write(os.path.join(out_dir, "aux_vocab", f"{cname}.txt"),
                       "\n".join(p for p, k in zip(phrases, cats) if k == c) + "\n")
  base, novel = base_novel_classes()
  manifest["base_classes"], manifest["novel_classes"] = base, novel
  gpath.atomic_write(os.path.join(out_dir, "manifest.json"), json.dumps(manifest, indent=2))
  return manifest


def written_as(out_dir: str, per_class: dict[str, int], num_frames: int, size: int,
               seed: int, kind: str = "actions") -> bool:
  """Whether out_dir holds records this generator would write with these settings."""
  try:
    m = json.loads(gpath.read_text(os.path.join(out_dir, "manifest.json")))
  except (OSError, ValueError):
    return False
  return (m.get("version") == VERSION and m.get("class_names") == classes() and
          m.get("kind", "actions") == kind and
          (m.get("seed"), m.get("num_frames"), m.get("size")) == (seed, num_frames, size) and
          {k: v.get("per_class") for k, v in m.get("splits", {}).items()} == dict(per_class))
