"""Video files <-> frames with PyAV; JPEG encoding and decoding of frames.

decode_video: any container PyAV reads (mp4, avi, webm, mkv ...) -> RGB uint8 frames,
optionally resampled to a frame rate and resized so that the short side is `short_side`.
"""
import io
from typing import Optional

import av
import numpy as np
from PIL import Image


def decode_video(path: str, fps: Optional[float] = None, short_side: Optional[int] = None,
                 start_s: float = 0.0, end_s: Optional[float] = None,
                 max_frames: Optional[int] = None) -> tuple[list[np.ndarray], float]:
  """Returns (frames as (H, W, 3) uint8 arrays, the frame rate of the returned frames).

  fps: keep frames nearest to a grid of 1/fps seconds (None: every frame).
  Raises ValueError naming the file when it cannot be decoded or holds no frames.
  """
  frames, times = [], []
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise ValueError(f"{path}: no video stream")
      stream = container.streams.video[0]
      stream.thread_type = "AUTO"
      src_fps = float(stream.average_rate or stream.guessed_rate or 25.0)
      for frame in container.decode(stream):
        t = float(frame.pts * stream.time_base) if frame.pts is not None else len(times) / src_fps
        if t < start_s - 1e-6:
          continue
        if end_s is not None and t > end_s + 1e-6:
          break
        frames.append(frame)
        times.append(t)
  except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: cannot decode video ({type(e).__name__}: {e})") from e
  if not frames:
    raise ValueError(f"{path}: no decodable frames")
  keep = range(len(frames))
  out_fps = src_fps
  if fps and fps > 0:
    t0, t1 = times[0], times[-1]
    grid = np.arange(t0, t1 + 1e-6, 1.0 / fps)
    keep = [int(np.argmin(np.abs(np.asarray(times) - g))) for g in grid]
    out_fps = fps
  if max_frames:
    keep = list(keep)[:max_frames]
  out = []
  for i in keep:
    img = frames[i].to_image()  # PIL RGB
    if short_side:
      w, h = img.size
      s = short_side / min(w, h)
      img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
    out.append(np.asarray(img))
  return out, out_fps


def write_video(path: str, frames, fps: int = 10, codec: str = "mpeg4"):
  """Writes RGB uint8 frames (T, H, W, 3) to a video file (tests, synthetic data)."""
  frames = np.asarray(frames, np.uint8)
  with av.open(path, mode="w") as container:
    stream = container.add_stream(codec, rate=fps)
    stream.height, stream.width = frames.shape[1], frames.shape[2]
    stream.pix_fmt = "yuv420p"
    for f in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.asarray(frame, np.uint8)).save(buf, format="JPEG", quality=quality)
  return buf.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
  """JPEG bytes -> RGB uint8 (H, W, 3); raises ValueError on a corrupt image."""
  try:
    with Image.open(io.BytesIO(data)) as img:
      return np.asarray(img.convert("RGB"))
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"corrupt JPEG frame ({type(e).__name__}: {e})") from e
