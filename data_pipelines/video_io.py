"""Video files <-> frames with PyAV; JPEG encoding and decoding of frames.

decode_video: any container PyAV reads (mp4, avi, webm, mkv ...) -> RGB uint8 frames,
optionally resampled to a frame rate and resized so that the short side is `short_side`.
decode_sampled: the few frames at sampled indices of a video of any length, decoded
streaming (memory independent of the length); count_frames: the frame count, no decoding.
"""
import contextlib
import io
from typing import Any, Callable, Iterator, Optional

import av
import numpy as np
from PIL import Image


@contextlib.contextmanager
def _open_video(path: str) -> Iterator[tuple[Any, Any, float]]:
  """(container, its first video stream, that stream's frame rate); PyAV's errors while
  the block runs (decoding included) become ValueError naming the file."""
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise ValueError(f"{path}: no video stream")
      stream = container.streams.video[0]
      stream.thread_type = "AUTO"
      yield container, stream, float(stream.average_rate or stream.guessed_rate or 25.0)
  except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: cannot decode video ({type(e).__name__}: {e})") from e


def _timed_frames(container, stream, src_fps: float, start_s: float = 0.0,
                  end_s: Optional[float] = None) -> Iterator[tuple[Any, float]]:
  """The decoded frames (av.VideoFrame) in [start_s, end_s] with their times in seconds,
  one at a time: the frames of decode_video, before any resampling."""
  kept = 0
  for frame in container.decode(stream):
    t = float(frame.pts * stream.time_base) if frame.pts is not None else kept / src_fps
    if t < start_s - 1e-6:
      continue
    if end_s is not None and t > end_s + 1e-6:
      break
    kept += 1
    yield frame, t


def _to_array(frame, short_side: Optional[int] = None) -> np.ndarray:
  """av.VideoFrame -> RGB uint8 (H, W, 3), the short side resized to `short_side`."""
  img = frame.to_image()  # PIL RGB
  if short_side:
    w, h = img.size
    s = short_side / min(w, h)
    img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
  return np.asarray(img)


def decode_video(path: str, fps: Optional[float] = None, short_side: Optional[int] = None,
                 start_s: float = 0.0, end_s: Optional[float] = None,
                 max_frames: Optional[int] = None) -> tuple[list[np.ndarray], float]:
  """Returns (frames as (H, W, 3) uint8 arrays, the frame rate of the returned frames).

  fps: keep frames nearest to a grid of 1/fps seconds (None: every frame).
  Raises ValueError naming the file when it cannot be decoded or holds no frames.
  Without fps, frames are converted as they are decoded (memory: the returned arrays);
  with fps the decoded frames are held until the last one's time fixes the grid. For a
  few frames of a long video use decode_sampled.
  """
  out, frames, times = [], [], []
  with _open_video(path) as (container, stream, src_fps):
    for frame, t in _timed_frames(container, stream, src_fps, start_s, end_s):
      times.append(t)
      if fps and fps > 0:
        frames.append(frame)
      elif not max_frames or len(out) < max_frames:
        out.append(_to_array(frame, short_side))
  if not times:
    raise ValueError(f"{path}: no decodable frames")
  if not (fps and fps > 0):
    return out, src_fps
  grid = np.arange(times[0], times[-1] + 1e-6, 1.0 / fps)
  keep = [int(np.argmin(np.abs(np.asarray(times) - g))) for g in grid]
  if max_frames:
    keep = keep[:max_frames]
  return [_to_array(frames[i], short_side) for i in keep], fps


def count_frames(path: str) -> int:
  """Frames of the first video stream without decoding any: the container's count when it
  states one (mp4, avi), else the video packets of a demux pass (mkv, webm). An estimate
  of len(decode_video(path)[0]): a decoder may drop a frame or the start may be cut."""
  with _open_video(path) as (container, stream, _):
    if stream.frames > 0:
      return int(stream.frames)
    return sum(1 for packet in container.demux(stream) if packet.size > 0)


def _decode_at(path: str, want: set[int], short_side: Optional[int]
               ) -> tuple[dict[int, np.ndarray], int]:
  """({i: frame i as RGB uint8} for i in want, the number of frames decoded)."""
  got, n = {}, 0
  with _open_video(path) as (container, stream, src_fps):
    for frame, _ in _timed_frames(container, stream, src_fps):
      if n in want:
        got[n] = _to_array(frame, short_side)
      n += 1
  return got, n


def decode_sampled(path: str, pick: Callable[[int], np.ndarray],
                   short_side: Optional[int] = None) -> tuple[list[np.ndarray], np.ndarray]:
  """A few frames of a video of any length: (frames, idx) with idx = pick(n) (any shape,
  ints in [0, n)) for the n frames decode_video(path)[0] would return, and frames[k] =
  that list's frame idx.flat[k] (RGB uint8 (H, W, 3), short side resized to short_side).

  The video is decoded streaming and only the frames at idx are converted and kept:
  memory O(distinct indices), whatever the video's length. n is first estimated with
  count_frames; if decoding finds another number of frames, it decodes again with the
  true n, so the result is exactly decode_video's frames at pick(n).
  Raises ValueError naming the file when it cannot be decoded or holds no frames.
  """
  n = count_frames(path)
  idx = np.asarray(pick(n)) if n > 0 else np.zeros((0,), np.int64)
  got, decoded = _decode_at(path, set(idx.ravel().tolist()), short_side)
  if decoded < 1:
    raise ValueError(f"{path}: no decodable frames")
  if decoded != n:
    idx = np.asarray(pick(decoded))
    got, _ = _decode_at(path, set(idx.ravel().tolist()), short_side)
  return [got[i] for i in idx.ravel().tolist()], idx


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
