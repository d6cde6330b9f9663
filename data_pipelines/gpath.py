"""The one path layer: every file the project reads or writes, local or on gs://.

Thin over etils.epath (which orbax uses too); paths are plain strings in and out.

  gpath.open(p, "rb"), read_text / read_bytes, atomic_write(p, data), append_text(p, s)
  exists, isdir, isfile, getsize, listdir, glob(pattern), walk, makedirs, remove, rmtree
  copy(src, dst), move(src, dst), upload(local_file, p), read_range(p, offset, length)
  local_copy(p)       a local copy of a file or folder, for readers that need one
  is_remote(p)        'gs://...' and other URLs

Remote paths (gs://) go through fsspec's gcsfs, which honours STORAGE_EMULATOR_HOST, so
the same code runs on a pod and against a Cloud Storage emulator. Importing this module
sets EPATH_USE_TF=false (unless set): etils.epath would otherwise hand gs:// to
tf.io.gfile, whose GCS client has its endpoint compiled in (https://www.googleapis.com)
and no emulator setting. The setting is process-wide, so orbax's own epath calls take
gcsfs too; its arrays go through TensorStore's GCS driver (TENSORSTORE_GCS_HTTP_URL
points it at an emulator). gcsfs's listings cache is off: shards and checkpoints are
written by other processes, and a cached listing would not see them.

Pointing it at a Cloud Storage emulator (tests/test_storage.py does, on 127.0.0.1):
  STORAGE_EMULATOR_HOST=http://HOST:PORT   gcsfs (this layer)
  FSSPEC_GCS_TOKEN=anon                    gcsfs: no credentials lookup (read when fsspec
                                           is imported; fsspec.config.set_conf_env rereads)
  GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false  gcsfs: no gRPC bucket-layout probe
  TENSORSTORE_GCS_HTTP_URL=http://HOST:PORT, GOOGLE_AUTH_TOKEN_FOR_TESTING=any   TensorStore

Atomic writes: locally a temporary file in the same folder, flushed and renamed over the
target; on gs:// one object upload, which is atomic by itself (a reader sees the old
object or the new one). Directories do not exist on gs:// (`makedirs` is a no-op there
and `isdir` means "some object has this prefix"); a rename is a copy and a delete, and an
append rewrites the object (fine for metrics.jsonl, not for big logs).

What cannot go through here, and why:
  * TensorFlow's own GCS client (tf.io.gfile, tf.summary, TFRecordWriter on gs://): no
    emulator setting. TFRecord shards are written to a local temporary file and uploaded;
    TensorBoard events are written locally and uploaded (victr_jax/metrics.py). TFDS
    sources with a gs:// data_dir are read by TFDS itself, through TensorFlow: they work on
    a pod but cannot be pointed at an emulator.
  * ArrayRecord's reader and writer are C++ on local files: shards are written locally and
    uploaded, but gs:// ArrayRecord shards cannot be read (records.RecordSource says so;
    use --format tfrecord for gs://).
  * PyAV decodes local files: victr-prepare's raw videos (--src) stay local, its output
    may be on gs://; victr-classify copies a gs:// video to a temporary file first.
  * Reading a torch or safetensors CLIP checkpoint from gs:// goes through a local copy.
"""
import contextlib
import glob as _glob
import io
import os
import shutil
import tempfile
from typing import Iterator

os.environ.setdefault("EPATH_USE_TF", "false")

from etils import epath  # noqa: E402  (after EPATH_USE_TF)
from etils.epath import gpath as _epath_gpath  # noqa: E402

# epath caches its TensorFlow check at first use: forget a check made before the setting.
_tf_check = _epath_gpath._is_tf_installed  # pylint: disable=protected-access
getattr(_tf_check, "cache_clear", lambda: None)()

_WILDCARDS = "*?["
_CHUNK = 1 << 22


def _configure_fsspec() -> None:
  """No listings cache for gs:// (other processes write the shards and checkpoints)."""
  try:
    import fsspec.config  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  for proto in ("gs", "gcs"):
    fsspec.config.conf.setdefault(proto, {}).setdefault("use_listings_cache", False)


_configure_fsspec()


def is_remote(p) -> bool:
  """Whether `p` is a URL (gs://, s3://, ...) rather than a local path."""
  return "://" in os.fspath(p) and not os.fspath(p).startswith("file://")


def path(p) -> epath.Path:
  """An etils.epath.Path of `p` (local or remote)."""
  return epath.Path(p)


def _fs(p):
  """The fsspec filesystem of a remote path (the one epath uses)."""
  import fsspec  # pylint: disable=g-import-not-at-top
  return fsspec.core.url_to_fs(os.fspath(p))[0]


def open(p, mode: str = "r", encoding: str | None = None,  # pylint: disable=redefined-builtin
         newline: str | None = None):
  """Opens a file, local or remote, like the builtin open (modes r, w, rb, wb). A file
  written on gs:// is uploaded when it is closed, even by an error: for whole files that
  must never be seen half-written, use atomic_write."""
  if not is_remote(p):
    return io.open(p, mode, encoding=encoding, newline=newline)
  raw = path(p).open(mode if "b" in mode else mode + "b")
  return raw if "b" in mode else io.TextIOWrapper(raw, encoding=encoding or "utf-8",
                                                   newline=newline)


def read_text(p, encoding: str = "utf-8") -> str:
  with open(p, "rb") as f:
    return f.read().decode(encoding)


def read_bytes(p) -> bytes:
  with open(p, "rb") as f:
    return f.read()


def exists(p) -> bool:
  return os.path.exists(p) if not is_remote(p) else path(p).exists()


def isdir(p) -> bool:
  return os.path.isdir(p) if not is_remote(p) else path(p).is_dir()


def isfile(p) -> bool:
  if not is_remote(p):
    return os.path.isfile(p)
  return path(p).exists() and not path(p).is_dir()


def getsize(p) -> int:
  return os.path.getsize(p) if not is_remote(p) else int(_fs(p).size(os.fspath(p)))


def listdir(p) -> list[str]:
  """Names in a folder (unsorted, like os.listdir)."""
  return os.listdir(p) if not is_remote(p) else [c.name for c in path(p).iterdir()]


def glob(pattern: str) -> list[str]:
  """Sorted paths matching a glob pattern (wildcards in any part after the bucket)."""
  if not is_remote(pattern):
    return sorted(_glob.glob(pattern))
  scheme, rest = pattern.split("://", 1)
  parts = rest.split("/")
  fixed = next((i for i, s in enumerate(parts) if any(c in s for c in _WILDCARDS)), len(parts))
  if fixed == len(parts):
    return [pattern] if exists(pattern) else []
  base = f"{scheme}://" + "/".join(parts[:fixed])
  return sorted(str(m) for m in path(base).glob("/".join(parts[fixed:])))


def walk(top) -> Iterator[tuple[str, list[str], list[str]]]:
  """(folder, subfolder names, file names) below `top`, like os.walk."""
  if not is_remote(top):
    yield from os.walk(top)
    return
  scheme = os.fspath(top).split("://", 1)[0]
  for root, dirs, files in path(top).walk():
    root = os.fspath(root)
    yield (root if "://" in root else f"{scheme}://{root}"), list(dirs), list(files)


def makedirs(p) -> None:
  """Creates a folder and its parents (a no-op on gs://, which has no folders)."""
  if not is_remote(p):
    os.makedirs(p, exist_ok=True)


def remove(p) -> None:
  os.remove(p) if not is_remote(p) else path(p).unlink()


def rmtree(p, missing_ok: bool = True) -> None:
  """Removes a folder and everything below it."""
  if not is_remote(p):
    shutil.rmtree(p, ignore_errors=missing_ok)
  elif exists(p) or not missing_ok:
    path(p).rmtree()


def atomic_write(p, data: str | bytes) -> None:
  """Writes `data` (text as UTF-8, or bytes) to `p` so that a reader, or a rerun after a
  kill, sees the old file or the new one, never part of one (see the module docstring)."""
  data = data.encode("utf-8") if isinstance(data, str) else data
  if is_remote(p):
    _fs(p).pipe_file(os.fspath(p), data)
    return
  directory = os.path.dirname(os.path.abspath(p))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(p))
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, p)
  except BaseException:
    os.unlink(tmp)
    raise


def append_text(p, text: str) -> None:
  """Appends text to a file; on gs:// (no appends) the object is rewritten whole."""
  if not is_remote(p):
    with io.open(p, "a", encoding="utf-8") as f:
      f.write(text)
    return
  atomic_write(p, (read_text(p) if exists(p) else "") + text)


def upload(local_file: str, p) -> None:
  """Copies a local file to `p` (local: written beside it and renamed; gs://: one upload,
  atomic by itself)."""
  if is_remote(p):
    _fs(p).put_file(local_file, os.fspath(p))
    return
  os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
  tmp = os.fspath(p) + ".tmp"
  shutil.copyfile(local_file, tmp)
  os.replace(tmp, p)


def move(src, dst) -> None:
  """Renames a file or folder (on gs://: copies every object, then deletes the source)."""
  if not is_remote(src) and not is_remote(dst):
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    os.replace(src, dst)
    return
  if not isdir(src):
    copy(src, dst)
    remove(src)
    return
  src_root = os.fspath(src).rstrip("/")
  for root, _, files in walk(src):
    for name in files:
      rel = f"{root}/{name}"[len(src_root) + 1:]
      copy(f"{root}/{name}", f"{os.fspath(dst).rstrip('/')}/{rel}")
  rmtree(src)


def copy(src, dst) -> None:
  """Copies a file (local or remote, either way)."""
  if not is_remote(src) and not is_remote(dst):
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    shutil.copyfile(src, dst)
  elif is_remote(src) and is_remote(dst):
    _fs(src).copy(os.fspath(src), os.fspath(dst))
  elif not is_remote(dst):
    makedirs(os.path.dirname(os.path.abspath(dst)))
    _fs(src).get_file(os.fspath(src), os.fspath(dst))
  else:
    upload(src, dst)


def read_range(p, offset: int, length: int) -> bytes:
  """`length` bytes of a file from `offset` (a single ranged read on gs://)."""
  if not is_remote(p):
    with io.open(p, "rb") as f:
      f.seek(offset)
      return f.read(length)
  return _fs(p).cat_file(os.fspath(p), start=offset, end=offset + length)


@contextlib.contextmanager
def local_copy(p) -> Iterator[str]:
  """A local path with the contents of file or folder `p` (itself when already local;
  else a temporary copy, removed on exit), for readers that only take local files."""
  if not is_remote(p):
    yield os.fspath(p)
    return
  tmp = tempfile.mkdtemp(prefix="victr-gpath-")
  try:
    local = os.path.join(tmp, os.path.basename(os.fspath(p).rstrip("/")) or "root")
    if isdir(p):
      src_root = os.fspath(p).rstrip("/")
      for root, _, files in walk(p):
        for name in files:
          rel = f"{root}/{name}"[len(src_root) + 1:]
          copy(f"{root}/{name}", os.path.join(local, rel))
    else:
      copy(p, local)
    yield local
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
