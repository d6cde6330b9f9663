"""Small file helpers shared by victr-prepare and the protocol splits: atomic writes, JSON.

Local paths and gs:// alike (data_pipelines/gpath.py).
"""
import json
from typing import Any, Optional

from data_pipelines import gpath


def atomic_write(path: str, data: str | bytes) -> None:
  """Writes `data` (text as UTF-8, or bytes) to `path` atomically.

  Locally the data goes to a temporary file in the same folder (created if needed), is
  flushed to disk and renamed over `path`; on gs:// it is one object upload. A reader, or
  a rerun after a kill, sees the old file or the new one, never part of one.
  """
  gpath.atomic_write(path, data)


def read_json_or_none(path: str) -> Optional[Any]:
  """A JSON file's contents, or None when it is missing or unreadable."""
  try:
    return json.loads(gpath.read_text(path))
  except (OSError, ValueError):
    return None


def write_json(path: str, obj: Any) -> None:
  """Writes `obj` as JSON (indented, keys sorted), atomically."""
  atomic_write(path, json.dumps(obj, indent=1, sort_keys=True))
