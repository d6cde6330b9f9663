"""OpenAI's published CLIP checkpoints, downloaded only when asked (victr-convert-clip --fetch).

  path = fetch.fetch("ViT-B/16")          # ~/.cache/victr-jax/clip/ViT-B-16.pt, checked

Each checkpoint's URL carries its SHA-256 (the folder before the file name), as OpenAI
publishes them. The download goes to `FILE.part` in the cache; only a file whose SHA-256
matches becomes `FILE`, so a killed or broken download never leaves a file that a later
call trusts. A dropped connection resumes from the bytes already written (HTTP Range),
or starts again where the server does not resume. Nothing in the library calls this at
import, training or evaluation time.

`VICTR_CLIP_URLS` (a JSON object {name: url}) replaces URLs, for a mirror; the tests use
it for a server on 127.0.0.1.
"""
import hashlib
import http.client
import json
import os
import re
import socket
import sys
import urllib.error
import urllib.request
from typing import Optional

# OpenAI's checkpoints (the openai/CLIP repository's clip/clip.py, `_MODELS`).
_BASE = "https://openaipublic.azureedge.net/clip/models"
OPENAI = {
    "ViT-B/32": f"{_BASE}/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    "ViT-B/16": f"{_BASE}/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    "ViT-L/14": f"{_BASE}/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    "ViT-L/14@336px": f"{_BASE}/3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt",
}
URLS_ENV = "VICTR_CLIP_URLS"
CHUNK = 1 << 20


class FetchError(Exception):
  """A checkpoint that could not be fetched: the message names the URL and what to do."""


def default_cache() -> str:
  """$XDG_CACHE_HOME/victr-jax/clip, else ~/.cache/victr-jax/clip."""
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(root, "victr-jax", "clip")


def url_of(name: str) -> str:
  """The URL of checkpoint `name` (OPENAI, or VICTR_CLIP_URLS where it names it)."""
  urls = dict(OPENAI)
  if os.environ.get(URLS_ENV):
    try:
      urls.update(json.loads(os.environ[URLS_ENV]))
    except (ValueError, TypeError) as e:
      raise FetchError(f"{URLS_ENV} is not a JSON object of name: url ({e})") from e
  if name not in urls:
    raise FetchError(f"unknown checkpoint {name!r}; known: {', '.join(urls)}")
  return urls[name]


def sha256_of(url: str) -> str:
  """The SHA-256 a URL carries (its last folder), as in OpenAI's URLs."""
  parts = url.rstrip("/").split("/")
  if len(parts) < 2 or not re.fullmatch(r"[0-9a-f]{64}", parts[-2]):
    raise FetchError(f"{url}: no SHA-256 in the URL (expected .../<64 hex digits>/FILE)")
  return parts[-2]


def _file_sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(CHUNK), b""):
      h.update(block)
  return h.hexdigest()


def _manual(url: str) -> str:
  f = os.path.basename(url)
  return (f"download it yourself (`curl -L -o {f} {url}`) and run "
          f"`victr-convert-clip {f} OUT`")


def _download(url: str, part: str, progress: bool, timeout: float) -> None:
  """Appends the rest of `url` to `part` (a Range request from its size), with a bar."""
  have = os.path.getsize(part) if os.path.exists(part) else 0
  req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
  with urllib.request.urlopen(req, timeout=timeout) as r:
    if have and r.status != 206:  # the server sends the whole file: start again
      have = 0
    size = r.headers.get("Content-Length")
    total = have + int(size) if size is not None else None
    bar = None
    if progress:
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                 desc=os.path.basename(url), file=sys.stderr, dynamic_ncols=True)
    try:
      with open(part, "ab" if have else "wb") as f:
        while True:
          block = r.read(CHUNK)
          if not block:
            break
          f.write(block)
          if bar is not None:
            bar.update(len(block))
    finally:
      if bar is not None:
        bar.close()
    if total is not None and os.path.getsize(part) < total:
      raise http.client.IncompleteRead(b"", total - os.path.getsize(part))


def fetch(name: str, cache: Optional[str] = None, progress: bool = True,
          attempts: int = 4, timeout: float = 60.0) -> str:
  """The local path of checkpoint `name` (see the module docstring): from the cache when
  it is there and its SHA-256 matches, else downloaded (resuming a dropped connection, up
  to `attempts` tries) and checked. Raises FetchError (naming the URL) otherwise."""
  url = url_of(name)
  want = sha256_of(url)
  cache = cache or default_cache()
  os.makedirs(cache, exist_ok=True)
  final = os.path.join(cache, os.path.basename(url))
  part = final + ".part"
  if os.path.isfile(final):
    if _file_sha256(final) == want:
      return final
    os.remove(final)  # damaged since it was checked: fetched again
  error = None
  for _ in range(attempts):
    try:
      _download(url, part, progress, timeout)
      error = None
      break
    except urllib.error.HTTPError as e:
      if e.code == 416:  # the part file is already whole (or longer): check it below
        error = None
        break
      raise FetchError(f"{url}: HTTP {e.code} {e.reason}; {_manual(url)}") from e
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError,
            socket.timeout, TimeoutError) as e:
      error = e  # dropped or refused: try again from the bytes written
  if error is not None:
    reason = getattr(error, "reason", None) or error
    raise FetchError(f"could not download {url} ({attempts} tries): {reason}; "
                     f"{_manual(url)}") from error
  got = _file_sha256(part)
  if got != want:
    os.remove(part)
    raise FetchError(f"{url}: SHA-256 {got} does not match the {want} the URL carries; "
                     f"nothing was kept. Run it again; if it repeats, {_manual(url)}")
  os.replace(part, final)
  return final
