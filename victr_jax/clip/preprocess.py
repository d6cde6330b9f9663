"""CLIP image preprocessing: bicubic resize of the short side, centre crop, normalise.

Works on PIL images and uint8 arrays (H, W, 3); the result is float32 NHWC ready for
`encode_image`. Batches of frames (..., H, W, 3) are processed frame by frame.
"""
import numpy as np
from PIL import Image

MEAN = np.array((0.48145466, 0.4578275, 0.40821073), np.float32)
STD = np.array((0.26862954, 0.26130258, 0.27577711), np.float32)


def resize_short_side(img: Image.Image, size: int) -> Image.Image:
  """Bicubic resize so that the shorter side is `size` (aspect ratio kept)."""
  w, h = img.size
  if min(w, h) == size:
    return img
  if w <= h:
    new = (size, int(size * h / w))
  else:
    new = (int(size * w / h), size)
  return img.resize(new, Image.BICUBIC)


def center_crop(img: Image.Image, size: int) -> Image.Image:
  w, h = img.size
  left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
  return img.crop((left, top, left + size, top + size))


def normalize(x: np.ndarray) -> np.ndarray:
  """uint8 or [0, 1] float (..., 3) -> CLIP-normalised float32."""
  x = np.asarray(x)
  if x.dtype == np.uint8:
    x = x.astype(np.float32) / 255.0
  return ((x - MEAN) / STD).astype(np.float32)


def preprocess_image(image, size: int = 224) -> np.ndarray:
  """PIL image or uint8 array (H, W, 3) -> float32 (size, size, 3), normalised."""
  if not isinstance(image, Image.Image):
    image = Image.fromarray(np.asarray(image, np.uint8))
  image = center_crop(resize_short_side(image.convert("RGB"), size), size)
  return normalize(np.asarray(image))


def preprocess_images(images, size: int = 224) -> np.ndarray:
  """Images or frames (..., H, W, 3) uint8 (or a list of PIL images) -> (..., size, size, 3)."""
  if isinstance(images, (list, tuple)):
    return np.stack([preprocess_image(im, size) for im in images])
  arr = np.asarray(images)
  lead = arr.shape[:-3]
  flat = arr.reshape(-1, *arr.shape[-3:])
  out = np.stack([preprocess_image(im, size) for im in flat]) if len(flat) else np.zeros(
      (0, size, size, 3), np.float32)
  return out.reshape(*lead, size, size, 3)
