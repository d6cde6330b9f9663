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
import copy
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


# gcp-storage-emulator 2026.7.19 sends no x-goog-generation header with an object's bytes;
# TensorStore's gcs driver reads the object's generation from it (orbax's OCDBT manifest
# fails with "Malformed StorageGeneration" without it). The launcher adds it, as GCS does.
_LAUNCHER = """
import sys
from gcp_storage_emulator import __main__ as cli
from gcp_storage_emulator.handlers import objects
_download = objects.download

def download(request, response, storage, *args, **kwargs):
  _download(request, response, storage, *args, **kwargs)
  try:
    obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
  except Exception:  # not found: the handler answered 404
    return
  response["x-goog-generation"] = str(obj["generation"])
  response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))

objects.download = download  # objects.get (?alt=media, the JSON API) calls it by name
sys.exit(cli.main(sys.argv[1:]))
"""


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
  proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, "start", "--host",
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
  import fsspec.config  # pylint: disable=g-import-not-at-top
  saved_conf = copy.deepcopy(fsspec.config.conf)
  fsspec.config.set_conf_env(fsspec.config.conf)  # FSSPEC_* are read at import otherwise
  try:
    yield f"gs://{BUCKET}"
  finally:
    fsspec.config.conf.clear()
    fsspec.config.conf.update(saved_conf)
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


def test_records_on_gcs_read_back_and_array_record_is_refused(gcs):
  from data_pipelines import records
  recs = [records.VideoRecord([bytes([i]) * (10 + i)], [i % 3], [], f"v{i}") for i in range(7)]
  paths = records.write_shards(recs, f"{gcs}/unit/records/train", 2)
  assert paths == gpath.glob(f"{gcs}/unit/records/train*")
  source = records.RecordSource(f"{gcs}/unit/records/train*")
  got = sorted((records.decode(source[i]).video_id, records.decode(source[i]).frames)
               for i in range(len(source)))
  assert got == sorted((r.video_id, r.frames) for r in recs)
  records.write_shards(recs, f"{gcs}/unit/records/ar", 1, "array_record")
  with pytest.raises(ValueError, match=r"ar\.array_record-00000-of-00001.*local files only.*"
                     "TFRecord"):
    records.RecordSource(f"{gcs}/unit/records/ar*")


# ----------------------------------------------------------------------------- the chain


def _videos(root):
  """generic layout: ROOT/<split>/<class>/<video>.avi, one colour per class."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from data_pipelines import video_io  # pylint: disable=g-import-not-at-top
  colors = {"jumping": (220, 30, 30), "running": (30, 220, 30), "sitting": (30, 30, 220)}
  for split, n in (("train", 2), ("test", 1)):
    for cname, color in colors.items():
      for i in range(n):
        video = np.zeros((8, 32, 40, 3), np.uint8) + np.asarray(color, np.uint8)
        for t in range(8):
          video[t, 2:6, 2 + t:6 + t] = 255
        os.makedirs(root / split / cname, exist_ok=True)
        video_io.write_video(str(root / split / cname / f"{cname}_{i}.avi"), video, 10, "mpeg4")
  return sorted(colors)


def _chain_config(gcs):
  """The demo config shrunk to a CPU-sized run, with every input on gs://."""
  import importlib  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from victr_jax import config_lib  # pylint: disable=g-import-not-at-top
  c = importlib.import_module("configs.demo").get_config("steps=2")
  c.model.clip = "tiny"
  c.model.num_frames = 2
  c.clip_checkpoint = f"{gcs}/clip"
  c.aux_vocab = f"{gcs}/aux_vocab"
  d = c.data
  d.num_frames, d.stride, d.image_size = 2, 1, 32
  d.batch_size, d.eval_batch_size, d.num_threads = 8, 8, 1
  d.train = config_lib.records_set(f"{gcs}/data/train.tfrecord*", f"{gcs}/data/classes.txt")
  c.evals = ml_collections.ConfigDict({"test": config_lib.records_set(
      f"{gcs}/data/test.tfrecord*", f"{gcs}/data/classes.txt")})
  c.num_train_steps, c.log_every, c.checkpoint_every = 2, 1, 2
  c.optim.warmup_steps = 0
  return c


def test_prepare_train_evaluate_classify_reproduce_all_on_gcs(gcs, tmp_path, capsys):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from data_pipelines import prepare  # pylint: disable=g-import-not-at-top
  from victr_jax import checkpointing, classify, clip, train  # pylint: disable=g-import-not-at-top
  t0 = time.time()
  names = _videos(tmp_path / "videos")
  data = f"{gcs}/data"
  # victr-prepare: local videos in, shards, sidecars, classes.txt and manifest on gs://.
  assert prepare.main(["--layout", "generic", "--src", str(tmp_path / "videos"), "--out", data,
                       "--short_side", "32", "--num_shards", "2", "--workers", "1",
                       "--no_progress"]) == 0
  manifest = json.loads(gpath.read_text(f"{data}/manifest.json"))
  assert manifest["splits"]["train"]["written"] == 6 and manifest["splits"]["test"]["written"] == 3
  assert len(gpath.glob(f"{data}/sidecars/*.json")) == 4
  assert gpath.read_text(f"{data}/classes.txt").split() == names
  # A CLIP checkpoint and an auxiliary vocabulary on gs:// too.
  ccfg = clip.get_config("tiny")
  clip.save_converted(ccfg, clip.init(ccfg)[1], f"{gcs}/clip")
  for cat, words in (("objects", "a ball\na box"), ("places", "a gym\na park"),
                     ("poses", "standing\nlying")):
    gpath.atomic_write(f"{gcs}/aux_vocab/{cat}.txt", words + "\n")
  # Train, then evaluate from the work directory.
  wd, c = f"{gcs}/wd", _chain_config(gcs)
  assert int(train.run(c, wd, mode="train")["state"].step) == 2
  res = train.run(c, wd, mode="eval")["eval"]
  assert res["step"] == 2 and res["sets"]["test"]["num_examples"] == 3
  for name in ("config.json", "eval_results.json", "confusion_test.png",
               "checkpoints/2/checksums.json", "checkpoints/2/commit_success.txt"):
    assert gpath.isfile(f"{wd}/{name}"), name
  steps = [json.loads(l)["step"] for l in gpath.read_text(f"{wd}/metrics.jsonl").splitlines()]
  assert steps == [1, 2, 2]  # two train logs, one evaluation
  assert len(gpath.glob(f"{wd}/events.out.tfevents.*")) == 2  # the train run's and the eval's
  assert checkpointing.verify(f"{wd}/checkpoints/2") == (checkpointing.OK, "")
  # victr-classify with the gs:// work directory, labels file and video.
  video = str(tmp_path / "videos" / "test" / "running" / "running_0.avi")
  gpath.upload(video, f"{gcs}/videos/running_0.avi")
  capsys.readouterr()
  assert classify.main([f"{gcs}/videos/running_0.avi", "--checkpoint", wd, "--labels",
                        f"@{data}/classes.txt", "--json"]) == 0
  out = json.loads(capsys.readouterr().out)
  assert "work directory, step 2" in out["model"]
  assert sorted(p["label"] for p in out["predictions"]) == names
  # A damaged step on gs:// is named and moved out of checkpoints/.
  gpath.atomic_write(f"{wd}/checkpoints/2/state/_METADATA", b"garbage")
  assert checkpointing.newest_intact(f"{wd}/checkpoints", lambda s: {"x": np.zeros(2)},
                                     quarantine=f"{wd}/damaged_checkpoints") is None
  assert gpath.isfile(f"{wd}/damaged_checkpoints/2/checksums.json")
  assert not gpath.exists(f"{wd}/checkpoints/2")
  # victr-reproduce with its data root, CLIP and work directory on gs://: HMDB51 split 1 as
  # victr-prepare writes it from the official layout, CLIP zero-shot evaluated (one run),
  # its table on gs://, and a rerun that skips it.
  import mini_datasets  # pylint: disable=g-import-not-at-top
  from victr_jax.reproduce import cli  # pylint: disable=g-import-not-at-top
  mini_datasets.hmdb51(tmp_path / "raw", f"{gcs}/root", splits_=(1,))
  argv = ["few_shot", "--root", f"{gcs}/root", "--clip", f"{gcs}/clip", "--workdir",
          f"{gcs}/repro", "--datasets", "hmdb51", "--variants", "clip_zero_shot",
          "--config.data.num_frames=2", "--config.model.num_frames=2",
          "--config.data.eval_batch_size=8"]
  assert cli.main(argv) == 0, capsys.readouterr().out[-3000:]
  rows = json.loads(gpath.read_text(f"{gcs}/repro/table.json"))["rows"]
  assert [(r["dataset"], r["setting"], r["ours"]["top1"]["n"]) for r in rows] == [
      ("hmdb51", "K=0", 1)]
  assert gpath.isfile(f"{gcs}/repro/few_shot/hmdb51/clip_zero_shot/eval_results.json")
  assert "hmdb51_test" in gpath.read_text(f"{gcs}/repro/few_shot/hmdb51/clip_zero_shot/"
                                          "reproduce.log")
  capsys.readouterr()
  assert cli.main(argv) == 0 and "done, skipped" in capsys.readouterr().out
  assert not os.path.exists("gs:")  # nothing fell back to a local folder named 'gs:'
  print(f"chain on gs:// took {time.time() - t0:.0f}s")
