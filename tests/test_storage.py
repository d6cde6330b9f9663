"""Storage anywhere: the path layer (data_pipelines/gpath.py) and the whole chain on gs://,
against a Cloud Storage emulator (gcp-storage-emulator) that the tests start on 127.0.0.1.

Each client is pointed at the emulator by its documented setting (`emulator_env`):
  gcsfs (the path layer; etils.epath's fsspec backend)   STORAGE_EMULATOR_HOST, anonymous
                                                         token (FSSPEC_GCS_TOKEN=anon)
  TensorStore (orbax's arrays)                           TENSORSTORE_GCS_HTTP_URL, a fixed
                                                         token (GOOGLE_AUTH_TOKEN_FOR_TESTING)
  TensorFlow's GCS client                                none exists: the project never
                                                         hands it a gs:// path
Nothing leaves 127.0.0.1: the metadata server is pointed there too (nothing listens).
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from data_pipelines import gpath

BUCKET = "victr-test"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def emulator_env(url: str) -> dict:
  """The settings that point every client at the emulator at `url`."""
  return {
      "STORAGE_EMULATOR_HOST": url,  # gcsfs, google-cloud-storage
      "FSSPEC_GCS_TOKEN": "anon",  # gcsfs: no credentials lookup
      "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # gcsfs: no gRPC bucket-layout probe
      "TENSORSTORE_GCS_HTTP_URL": url,  # TensorStore's gcs driver (orbax)
      "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",  # TensorStore: no credentials lookup
      "GCE_METADATA_ROOT": "127.0.0.1:9", "GCE_METADATA_HOST": "127.0.0.1:9",
      "GCE_METADATA_IP": "127.0.0.1:9", "NO_GCE_CHECK": "true",
      "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
  }


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
  """gs://BUCKET on an emulator started for this module; the environment points at it."""
  port = _free_port()
  log = open(tmp_path_factory.mktemp("emulator") / "emulator.log", "wb")
  proc = subprocess.Popen([sys.executable, "-m", "gcp_storage_emulator", "start", "--host",
                           "127.0.0.1", "--port", str(port), "--in-memory", "--default-bucket",
                           BUCKET], stdout=log, stderr=subprocess.STDOUT)
  url = f"http://127.0.0.1:{port}"
  for _ in range(200):
    try:
      urllib.request.urlopen(url + "/", timeout=1).close()
      break
    except OSError:
      time.sleep(0.05)
  else:
    proc.kill()
    pytest.fail("the storage emulator did not start")
  env = emulator_env(url)
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  try:
    yield f"gs://{BUCKET}"
  finally:
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


# ----------------------------------------------------------------------------- path layer


def test_write_read_exists_listdir_and_sizes(gcs):
  d = f"{gcs}/unit/basic"
  gpath.makedirs(d)
  gpath.atomic_write(f"{d}/a.txt", "héllo\n")
  gpath.atomic_write(f"{d}/sub/b.bin", bytes(range(256)))
  assert gpath.read_text(f"{d}/a.txt") == "héllo\n"
  with gpath.open(f"{d}/a.txt", encoding="utf-8") as f:
    assert f.read() == "héllo\n"
  assert gpath.exists(f"{d}/a.txt") and gpath.isfile(f"{d}/a.txt")
  assert gpath.isdir(f"{d}/sub") and not gpath.isfile(f"{d}/sub")
  assert not gpath.exists(f"{d}/nope.txt") and not gpath.isdir(f"{d}/nope")
  assert sorted(gpath.listdir(d)) == ["a.txt", "sub"]
  assert gpath.getsize(f"{d}/sub/b.bin") == 256
  assert gpath.read_range(f"{d}/sub/b.bin", 100, 4) == bytes([100, 101, 102, 103])
  walked = {root: sorted(files) for root, _, files in gpath.walk(d)}
  assert walked == {d: ["a.txt"], f"{d}/sub": ["b.bin"]}


def test_glob_matches_wildcards_in_any_part(gcs):
  d = f"{gcs}/unit/glob"
  for name in ("train.tfrecord-00000-of-00002", "train.tfrecord-00001-of-00002",
               "test.tfrecord-00000-of-00001", "sidecars/train.tfrecord-00000-of-00002.json"):
    gpath.atomic_write(f"{d}/{name}", b"x")
  assert gpath.glob(f"{d}/train*") == [f"{d}/train.tfrecord-00000-of-00002",
                                       f"{d}/train.tfrecord-00001-of-00002"]
  assert gpath.glob(f"{d}/*.tfrecord-?????-of-00001") == [f"{d}/test.tfrecord-00000-of-00001"]
  assert gpath.glob(f"{gcs}/unit/g*/sidecars/*.json") == [
      f"{d}/sidecars/train.tfrecord-00000-of-00002.json"]
  assert gpath.glob(f"{d}/test.tfrecord-00000-of-00001") == [f"{d}/test.tfrecord-00000-of-00001"]
  assert gpath.glob(f"{d}/none*") == []


def test_atomic_write_replaces_whole_and_append_move_remove(gcs, tmp_path):
  d = f"{gcs}/unit/atomic"
  gpath.atomic_write(f"{d}/m.json", json.dumps({"v": 1}))
  gpath.atomic_write(f"{d}/m.json", json.dumps({"v": 2}))
  assert json.loads(gpath.read_text(f"{d}/m.json")) == {"v": 2}
  assert gpath.listdir(d) == ["m.json"]  # no temporary objects left behind
  gpath.append_text(f"{d}/log.jsonl", "1\n")
  gpath.append_text(f"{d}/log.jsonl", "2\n")
  assert gpath.read_text(f"{d}/log.jsonl") == "1\n2\n"
  gpath.atomic_write(f"{d}/tree/x/1.txt", "1")
  gpath.atomic_write(f"{d}/tree/2.txt", "2")
  gpath.move(f"{d}/tree", f"{d}/moved/tree")
  assert not gpath.exists(f"{d}/tree")
  assert gpath.read_text(f"{d}/moved/tree/x/1.txt") == "1"
  with gpath.local_copy(f"{d}/moved/tree") as local:
    assert open(os.path.join(local, "x", "1.txt")).read() == "1"
  (tmp_path / "up.bin").write_bytes(b"abc")
  gpath.upload(str(tmp_path / "up.bin"), f"{d}/up.bin")
  assert gpath.read_bytes(f"{d}/up.bin") == b"abc"
  gpath.remove(f"{d}/up.bin")
  gpath.rmtree(f"{d}/moved")
  assert sorted(gpath.listdir(d)) == ["log.jsonl", "m.json"]
