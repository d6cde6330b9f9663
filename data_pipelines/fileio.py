"""Small file helpers shared by victr-prepare and the protocol splits: atomic writes, JSON."""
import json
import os
import tempfile
from typing import Any, Optional


def atomic_write(path: str, data: str | bytes) -> None:
  """Writes `data` (text as UTF-8, or bytes) to `path` atomically.

  The data goes to a temporary file in the same folder (created if needed), is flushed to
  disk and renamed over `path`: a reader, or a rerun after a kill, sees the old file or
  the new one, never part of one. On an error the temporary file is removed.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path))
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data.encode("utf-8") if isinstance(data, str) else data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def read_json_or_none(path: str) -> Optional[Any]:
  """A JSON file's contents, or None when it is missing or unreadable."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def write_json(path: str, obj: Any) -> None:
  """Writes `obj` as JSON (indented, keys sorted), atomically."""
  atomic_write(path, json.dumps(obj, indent=1, sort_keys=True))
