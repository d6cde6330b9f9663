"""Frame sampling and spatial ops on clips, numpy + PIL, deterministic given an rng.

Sampling (T frames out of a video of n):
  stride:   T frames `stride` apart; train: a random start; test view c of C: starts
            spread evenly over the video. Short videos repeat their last frame.
  segments: the video cut into T equal segments, one frame per segment; train: a random
            frame in each; test view c of C: the frame at (c + 0.5) / C of each segment.
Spatial:
  train:    random resized crop (one box for the whole clip) or scale jitter + random
            crop, optional horizontal flip (off for direction-sensitive datasets).
  test:     short side resized to `resize` (0: the crop size), then 1 (centre) or 3
            (start, centre, end of the long side, centred on the short one) crops.
Colour (train, per clip: one draw of every factor for all frames of a clip):
  color_jitter: brightness, contrast, saturation, hue in a random order (torchvision
            ColorJitter's ranges and PIL's formulas); grayscale: ITU-R 601 luma.
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


def test_crops(frames, size: int, num_crops: int, resize: int = 0) -> np.ndarray:
  """(num_crops, T, size, size, 3): short side to `resize` (0: `size`), then crops along
  the long side (centred on the short side)."""
  if resize and resize < size:
    raise ValueError(f"test resize {resize} is smaller than the crop {size}")
  frames = resize_short_side(frames, resize or size)
  h, w = frames[0].shape[:2]
  cy, cx = (h - size) // 2, (w - size) // 2
  if num_crops == 1:
    offsets = [(cy, cx)]
  elif num_crops == 3:
    if w >= h:
      offsets = [(cy, 0), (cy, cx), (cy, w - size)]
    else:
      offsets = [(0, cx), (cy, cx), (h - size, cx)]
  else:
    raise ValueError(f"num_test_crops={num_crops}: expected 1 or 3")
  clip = np.stack(frames)
  return np.stack([clip[:, y:y + size, x:x + size] for y, x in offsets])


# ITU-R 601-2 luma, PIL's convert('L') (torchvision Grayscale / the contrast and
# saturation references).
LUMA = np.array((0.299, 0.587, 0.114), np.float32)


def _luma(x: np.ndarray) -> np.ndarray:
  """(..., 3) float -> (..., 1) grey value."""
  return (x @ LUMA)[..., None]


def adjust_brightness(x: np.ndarray, f: float) -> np.ndarray:
  """(T, H, W, 3) float in [0, 255]: blend with black, x * f."""
  return np.clip(x * f, 0, 255)


def adjust_contrast(x: np.ndarray, f: float) -> np.ndarray:
  """Blend with each frame's mean grey value: m + f (x - m)."""
  m = _luma(x).mean(axis=(1, 2, 3), keepdims=True)
  return np.clip(m + f * (x - m), 0, 255)


def adjust_saturation(x: np.ndarray, f: float) -> np.ndarray:
  """Blend with the pixel's grey value: g + f (x - g)."""
  g = _luma(x)
  return np.clip(g + f * (x - g), 0, 255)


def adjust_hue(x: np.ndarray, h: float) -> np.ndarray:
  """Rotates the hue by h turns (h in [-0.5, 0.5]) in PIL's 8-bit HSV, like torchvision."""
  shift = np.uint8(int(round(h * 255)) % 256)
  if shift == 0:
    return x
  out = np.empty(x.shape, np.uint8)
  for t, f in enumerate(np.round(x).astype(np.uint8)):
    hsv = np.array(Image.fromarray(f).convert("HSV"))
    hsv[..., 0] += shift  # wraps modulo 256
    out[t] = np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"))
  return out.astype(np.float32)


def color_jitter(clip: np.ndarray, rng: np.random.Generator, brightness=0.4, contrast=0.4,
                 saturation=0.2, hue=0.1) -> np.ndarray:
  """(T, H, W, 3) uint8 -> uint8. Factors drawn once per clip: brightness, contrast,
  saturation ~ U[max(0, 1 - v), 1 + v], hue ~ U[-hue, hue]; applied in a random order."""
  fb, fc, fs = (rng.uniform(max(0.0, 1 - v), 1 + v) for v in (brightness, contrast, saturation))
  fh = rng.uniform(-hue, hue)
  ops = (lambda x: adjust_brightness(x, fb), lambda x: adjust_contrast(x, fc),
         lambda x: adjust_saturation(x, fs), lambda x: adjust_hue(x, fh))
  x = clip.astype(np.float32)
  for i in rng.permutation(4):
    x = ops[i](x)
  return np.round(x).astype(np.uint8)


def grayscale(clip: np.ndarray) -> np.ndarray:
  """(T, H, W, 3) uint8 -> the grey value in all three channels, uint8."""
  g = np.round(_luma(clip.astype(np.float32)))
  return np.broadcast_to(g, clip.shape).astype(np.uint8)


def normalize(frames: np.ndarray) -> np.ndarray:
  """uint8 frames (..., 3) -> float32 normalised with the CLIP mean and std."""
  return ((frames.astype(np.float32) / 255.0) - MEAN) / STD
