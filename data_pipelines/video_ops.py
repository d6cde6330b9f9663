"""Frame sampling and spatial ops on clips, numpy + PIL, deterministic given an rng.

Sampling (T frames out of a video of n):
  stride:   T frames `stride` apart; train: a random start; test view c of C: starts
            spread evenly over the video. Short videos repeat their last frame.
  segments: the video cut into T equal segments, one frame per segment; train: a random
            frame in each; test view c of C: the frame at (c + 0.5) / C of each segment.
Spatial:
  train:    random resized crop (one box for the whole clip) or scale jitter + random
            crop, optional horizontal flip (off for direction-sensitive datasets).
  test:     short side resized to the crop size, then 1 (centre) or 3 (start, centre,
            end of the long side) crops.
"""
import numpy as np
from PIL import Image

MEAN = np.array((0.48145466, 0.4578275, 0.40821073), np.float32)
STD = np.array((0.26862954, 0.26130258, 0.27577711), np.float32)


def sample_indices(n: int, num_frames: int, *, mode: str = "stride", stride: int = 1,
                   rng: np.random.Generator | None = None, view: int = 0,
                   num_views: int = 1) -> np.ndarray:
  """Frame indices (num_frames,) into a video of n frames. rng None: test view `view`."""
  if n < 1:
    raise ValueError("cannot sample frames from an empty video")
  if mode == "stride":
    span = (num_frames - 1) * stride + 1
    room = max(n - span, 0)
    if rng is not None:
      start = int(rng.integers(0, room + 1))
    elif num_views == 1:
      start = room // 2
    else:
      start = int(round(view * room / (num_views - 1)))
    return np.minimum(start + stride * np.arange(num_frames), n - 1)
  if mode == "segments":
    seg = n / num_frames
    if rng is not None:
      pos = rng.random(num_frames)
    else:
      pos = np.full(num_frames, (view + 0.5) / num_views)
    return np.minimum((seg * (np.arange(num_frames) + pos)).astype(np.int64), n - 1)
  raise ValueError(f"sampling mode {mode!r}: expected 'stride' or 'segments'")


def _resize(frame: np.ndarray, w: int, h: int) -> np.ndarray:
  if frame.shape[1] == w and frame.shape[0] == h:
    return frame
  return np.asarray(Image.fromarray(frame).resize((w, h), Image.BILINEAR))


def resize_short_side(frames: list[np.ndarray], size: int) -> list[np.ndarray]:
  h, w = frames[0].shape[:2]
  s = size / min(h, w)
  nw, nh = max(size, round(w * s)), max(size, round(h * s))
  return [_resize(f, nw, nh) for f in frames]


def random_resized_crop(frames, size: int, rng: np.random.Generator,
                        scale=(0.4, 1.0), ratio=(3 / 4, 4 / 3)) -> np.ndarray:
  """One random box (area fraction in `scale`, aspect in `ratio`) for all frames."""
  h, w = frames[0].shape[:2]
  area = h * w
  for _ in range(10):
    target = area * rng.uniform(*scale)
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
    cw, ch = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
    if 0 < cw <= w and 0 < ch <= h:
      x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
      break
  else:  # centre crop of the largest box that fits
    cw = ch = min(h, w)
    x, y = (w - cw) // 2, (h - ch) // 2
  return np.stack([_resize(np.ascontiguousarray(f[y:y + ch, x:x + cw]), size, size)
                   for f in frames])


def scale_jitter_crop(frames, size: int, rng: np.random.Generator,
                      short_range=(256 / 224, 320 / 224)) -> np.ndarray:
  """Resize the short side to size * U(short_range), then a random size x size crop."""
  short = int(round(size * rng.uniform(*short_range)))
  frames = resize_short_side(frames, short)
  h, w = frames[0].shape[:2]
  y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
  return np.stack([f[y:y + size, x:x + size] for f in frames])


def test_crops(frames, size: int, num_crops: int) -> np.ndarray:
  """(num_crops, T, size, size, 3): short side to `size`, crops along the long side."""
  frames = resize_short_side(frames, size)
  h, w = frames[0].shape[:2]
  if num_crops == 1:
    offsets = [((h - size) // 2, (w - size) // 2)]
  elif num_crops == 3:
    if w >= h:
      offsets = [(0, 0), (0, (w - size) // 2), (0, w - size)]
    else:
      offsets = [(0, 0), ((h - size) // 2, 0), (h - size, 0)]
  else:
    raise ValueError(f"num_test_crops={num_crops}: expected 1 or 3")
  clip = np.stack(frames)
  return np.stack([clip[:, y:y + size, x:x + size] for y, x in offsets])


def normalize(frames: np.ndarray) -> np.ndarray:
  """uint8 frames (..., 3) -> float32 normalised with the CLIP mean and std."""
  return ((frames.astype(np.float32) / 255.0) - MEAN) / STD
