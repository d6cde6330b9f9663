"""Failures are caught and named, not passed on: damaged checkpoints (checksummed, the
previous intact step used), non-finite losses (training stops, nothing bad saved), corrupt
training videos (counted and reported with the train metrics)."""
import glob
import json
import os

import numpy as np
import pytest

from data_pipelines import pipeline, records
from test_train import _demo_cfg, _jpeg  # pylint: disable=g-bad-import-order
from victr_jax import checkpointing, config_lib, train
import xla_env  # pylint: disable=g-bad-import-order


def _flip_bits(path, every=50_000):
  """Flips one bit every `every` bytes of a file (at least one, mid-file if shorter)."""
  data = bytearray(open(path, "rb").read())
  offsets = range(every // 2, len(data), every) if len(data) > every else [len(data) // 2]
  for o in offsets:
    data[o] ^= 0x10
  open(path, "wb").write(bytes(data))


def _array_files(step_dir):
  """The array data files orbax (OCDBT) writes for the state item of a step."""
  files = [f for f in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True)
           if os.path.isfile(f)]
  assert files, os.listdir(os.path.join(step_dir, "state"))
  return files


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A demo-config work directory trained 4 steps, checkpoints at steps 2 and 4."""
  tmp = tmp_path_factory.mktemp("trained")
  c = _demo_cfg(tmp, steps=4, checkpoint_every=2, keep_checkpoints=3)
  train.run(c, str(tmp / "wd"), mode="train")
  return tmp


def _copy(trained, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.copytree(trained / "wd", tmp_path / "wd")
  return tmp_path / "wd"


def test_checkpoints_are_sealed_with_checksums(trained):
  for step in (2, 4):
    step_dir = trained / "wd" / "checkpoints" / str(step)
    sums = json.load(open(step_dir / checkpointing.CHECKSUMS))
    assert sums["algorithm"] == "sha256"
    assert any("/d/" in f for f in sums["files"])  # the array files are covered
    assert "data/metadata" in sums["files"]  # and the input position
    assert checkpointing.verify(str(step_dir)) == (checkpointing.OK, "")
  assert not list((trained / "wd" / "checkpoints").glob("*tmp*"))


def test_damaged_checkpoint_is_named_and_resume_uses_the_previous_one(trained, tmp_path, capsys):
  wd = _copy(trained, tmp_path)
  damaged = _array_files(str(wd / "checkpoints" / "4"))
  for f in damaged:
    _flip_bits(f)
  # Inference: named and skipped, nothing moved.
  step, _, _ = checkpointing.restore_latest(str(wd))
  assert step == 2
  out = capsys.readouterr().out
  assert "step 4 is damaged" in out and "checksum mismatch" in out
  assert os.path.relpath(damaged[0], wd / "checkpoints" / "4") in out
  # Training: named, moved aside (kept for inspection), resumed from step 2, trained on.
  c = _demo_cfg(trained, steps=6, checkpoint_every=2, keep_checkpoints=3)
  res = train.run(c, str(wd), mode="train_and_eval")
  out = capsys.readouterr().out
  assert "step 4 is damaged" in out and "moved to" in out
  assert (wd / checkpointing.DAMAGED_DIR / "4").is_dir()
  assert int(res["state"].step) == 6
  assert "[train] step 3/6" in out  # resumed after step 2, not 4
  assert checkpointing.verify(str(wd / "checkpoints" / "4"))[0] == checkpointing.OK  # again
  assert all(np.isfinite(r["top1"]) for r in res["eval"]["sets"].values())


def test_damaged_metadata_and_unsealed_steps(trained, tmp_path, capsys):
  wd = _copy(trained, tmp_path)
  step4 = wd / "checkpoints" / "4"
  (step4 / "data" / "metadata").write_text("{not json")  # the input position's JSON
  os.remove(step4 / checkpointing.CHECKSUMS)  # as if written before checksums existed
  step, _, data = checkpointing.restore_latest(str(wd))  # inference skips it
  assert step == 2 and "iterators" in data
  assert "step 4 (no checksums) cannot be restored" in capsys.readouterr().out
  c = _demo_cfg(trained, steps=6, checkpoint_every=2, keep_checkpoints=3)
  with pytest.raises(ValueError, match=r"checkpoint step 4 .*no checksums and does not restore"):
    train.run(c, str(wd), mode="train")  # training cannot tell damage from a config change
  assert step4.is_dir()  # and moves nothing it cannot call damaged
  for f in _array_files(str(wd / "checkpoints" / "2")):  # the sealed one, damaged
    _flip_bits(f)
  with pytest.raises(ValueError, match="no intact checkpoint"):
    checkpointing.restore_latest(str(wd))


def test_evaluation_skips_damage_without_moving_and_a_changed_config_is_no_damage(
    trained, tmp_path, capsys):
  wd = _copy(trained, tmp_path)
  for f in _array_files(str(wd / "checkpoints" / "4")):
    _flip_bits(f)
  c = _demo_cfg(trained, steps=4, checkpoint_every=2, keep_checkpoints=3)
  res = train.run(c, str(wd), mode="eval")
  assert int(res["eval"]["step"]) == 2 and "step 4 is damaged" in capsys.readouterr().out
  assert (wd / "checkpoints" / "4").is_dir() and not (wd / checkpointing.DAMAGED_DIR).exists()
  c.model.head.num_layers = 2  # another parameter tree: intact step 2 is not "damaged"
  with pytest.raises(ValueError, match=r"step 2 .*intact .*config changed"):
    train.run(c, str(wd), mode="eval")
  assert (wd / "checkpoints" / "2").is_dir()
  assert json.load(open(wd / "config.json"))["model"]["head"]["num_layers"] == 1  # kept


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(trained, tmp_path,
                                                                     monkeypatch):
  wd = _copy(trained, tmp_path)
  real = pipeline.train_example

  def nan_frames(*a, **k):
    ex = real(*a, **k)
    return dict(ex, frames=np.full_like(ex["frames"], np.nan))

  monkeypatch.setattr(pipeline, "train_example", nan_frames)
  c = _demo_cfg(trained, steps=8, checkpoint_every=2, keep_checkpoints=3)
  c.log_every = 3  # the check before the checkpoint at step 6 must catch it too
  with pytest.raises(train.NonFiniteError, match=r"step 5: loss is nan.*checkpoint is step 4"):
    train.run(c, str(wd), mode="train")
  assert sorted(os.listdir(wd / "checkpoints")) == ["2", "4"]  # nothing after the NaN
  step, state, _ = checkpointing.restore_latest(str(wd))
  assert step == 4


def test_corrupt_training_videos_are_reported(tmp_path, capsys):
  good = [records.VideoRecord([_jpeg((37 * i + 11 * t) % 250) for t in range(4)], [i % 18], [],
                              f"v{i}") for i in range(12)]
  broken = [records.VideoRecord([b"not a jpeg"] * 4, [1], [], f"broken{i}") for i in range(4)]
  records.write_shards(good + broken, str(tmp_path / "rec" / "train"), 1)
  c = _demo_cfg(tmp_path, steps=3)
  c.data.train = config_lib.records_set(str(tmp_path / "rec" / "train*"), "synthetic")
  train.run(c, str(tmp_path / "wd"), mode="train")
  out = capsys.readouterr().out
  assert "corrupt training videos skipped" in out and "corrupt JPEG frame" in out
  rows = [json.loads(l) for l in open(tmp_path / "wd" / "metrics.jsonl")]
  counts = [r["train/corrupt_videos"] for r in rows if "train/corrupt_videos" in r]
  assert len(counts) == 3 and counts[-1] >= 1  # 3 steps of 8 from 16 records: some broken


def test_a_run_prints_progress_only_and_a_full_disk_is_one_error_line(tmp_path):
  """A 10-step run of the demo config on a 25 MB disk (a tmpfs in a private mount
  namespace): the step-5 checkpoint fits, the step-10 one does not. The console holds
  progress lines and one error naming the step, the cause and the last complete
  checkpoint: no absl/glog INFO lines, no libtpu INVALID_ARGUMENT, no traceback."""
  import re
  import shutil
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  disk, data = tmp_path / "disk", tmp_path / "data"
  disk.mkdir()
  ns = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c"]
  probe = subprocess.run([*ns, f"mount -t tmpfs -o size=1m tmpfs {disk}"], capture_output=True,
                         text=True) if shutil.which("unshare") else None
  if probe is None or probe.returncode:
    pytest.skip("no private mount namespace here to make a small disk: "
                f"{probe.stderr.strip()[:200] if probe else 'unshare not found'}")
  # As a user runs it: no JAX_PLATFORMS, the machine's one CPU device (the compiler flags
  # only shorten the compile).
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  env["XLA_FLAGS"] = xla_env.flags(devices=None)
  run = (f"mount -t tmpfs -o size=25m tmpfs {disk} && exec {sys.executable} -m victr_jax.main "
         f"--config=configs/demo.py:steps=10,frames=4,evals=none,data_dir={data} "
         f"--workdir={disk}/wd --config.checkpoint_every=5 "
         "--config.data.synthetic_per_class.train=2 --config.data.synthetic_per_class.test=1")
  proc = subprocess.run([*ns, run], cwd=root, env=env, capture_output=True, text=True,
                        timeout=600)
  out = proc.stdout + proc.stderr
  assert proc.returncode == 1, out[-3000:]
  assert not re.search(r"^[IE]\d{4} ", out, re.M), out[:3000]
  assert "INVALID_ARGUMENT" not in out and "Traceback" not in out, out[:3000]
  errors = [l for l in out.splitlines() if "error" in l.lower()]
  assert len(errors) == 1, out
  assert re.search(r"checkpoint step 10 .*No space left on device.*last complete checkpoint is "
                   r"step 5", errors[0]), errors[0]
  assert "[train] step 10/10" in out
