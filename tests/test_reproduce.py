"""victr-reproduce on mini copies of the data sets in their official layouts (prepared with
victr-prepare) and a tiny CLIP converted with victr-convert-clip: the plan, a dry run,
every protocol end to end with --max_steps 2, a killed invocation resumed, a rerun that
retrains nothing, and the table beside the published numbers.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import mini_datasets
from victr_jax.reproduce import cli, plan, table

# Every run: 2 frames, small batches (the tiny CLIP's 32-px frames come from the checkpoint).
SMALL = ("--config.data.num_frames=2", "--config.model.num_frames=2",
         "--config.data.batch_size=8", "--config.data.eval_batch_size=8",
         "--config.data.num_test_clips=1", "--config.data.num_test_crops=1")


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("mini")
  root = mini_datasets.prepare_all(tmp / "raw", tmp / "data")
  return str(root), mini_datasets.tiny_clip(str(tmp))


def peer_lists(tmp_path, root):
  """A ViFi-CLIP datasets_splits/ folder for the mini HMDB51 (one list line begins with
  '#', as two of the real 16-shot list's do) and UCF101."""
  d = tmp_path / "datasets_splits"
  hmdb = [f"#{c}_{cls}_u_nm_np1_fr_goo_0.avi {c}" for c, cls in enumerate(mini_datasets.HMDB)]
  for k in (2, 4, 8, 16):
    mini_datasets.write_text(str(d / "hmdb_splits" / f"train1_few_shot_{k}.txt"), hmdb)
  mini_datasets.write_text(str(d / "hmdb_splits" / "val1.txt"),
                           [f"{cls}_v_2.avi {c}" for c, cls in enumerate(mini_datasets.HMDB)])
  for k in (2, 4, 8, 16):  # SSv2: lists, but no records (its run fails)
    mini_datasets.write_text(str(d / "ssv2_splits" / f"train1_few_shot_{k}.txt"), ["1.webm 0"])
  mini_datasets.write_text(str(d / "ssv2_splits" / "validation.txt"), ["2.webm 0"])
  b2n = d / "base2novel_splits" / "ucf_splits"
  for s in (1, 2, 3):
    mini_datasets.write_text(str(b2n / f"fs_base_s{s}_train.txt"),
                             ["v_ApplyEyeMakeup_g08_c01.avi 0", "v_ApplyLipstick_g09_c01.avi 1"])
  mini_datasets.write_text(str(b2n / "base_val.txt"), ["v_ApplyEyeMakeup_g01_c01.avi 0"])
  mini_datasets.write_text(str(b2n / "novel_val.txt"), ["v_Archery_g01_c01.avi 0"])
  return str(d)


def test_plan_names_every_run_and_its_command(tmp_path):
  o = plan.Options("all", "/data", "ckpt", str(tmp_path), variants=("victr", "clip_zero_shot"),
                   shots=(2, 16), seeds=(1, 2), max_steps=3)
  runs = plan.plan(o)
  names = [r.name for r in runs]
  assert names[:2] == ["zero_shot/victr", "zero_shot/clip_zero_shot"]
  assert "few_shot/hmdb51/K16/seed2/victr" in names and "few_shot/ucf101/clip_zero_shot" in names
  assert "base_to_novel/ssv2/seed2/victr" in names and "base_to_novel/k400/clip_zero_shot" in names
  assert names[-2:] == ["charades/victr", "charades/clip_zero_shot"]
  # 2 zero-shot + (2 data sets x (2 K x 2 seeds + 1)) + 4 x (2 seeds + 1) + 2 + 2.
  assert len(runs) == 2 + 2 * 5 + 4 * 3 + 2 + 2
  zs = runs[1]
  assert not zs.trains and "--mode=eval" in zs.command()
  assert "evals=hmdb51+ucf101+k600" in zs.command() and "num_train_steps" not in zs.command()
  fs = runs[names.index("few_shot/hmdb51/K16/seed2/victr")]
  assert "--config.num_train_steps=3" in fs.command() and "shots=16,seed=2" in fs.command()
  assert fs.workdir == os.path.join(str(tmp_path), fs.name)
  with pytest.raises(ValueError, match="--datasets"):
    plan.plan(plan.Options("few_shot", "/d", "", "/o", datasets=("k600",)))
  with pytest.raises(ValueError, match="--lists: .*hmdb_splits.val1.txt does not exist"):
    plan.plan(plan.Options("few_shot", "/d", "", "/o", lists=str(tmp_path)))


def test_dry_run_counts_steps_from_lists_and_manifests(mini, tmp_path, capsys):
  root, ckpt = mini
  lists = peer_lists(tmp_path, root)
  rc = cli.main(["few_shot", "--root", root, "--clip", ckpt, "--workdir", str(tmp_path / "o"),
                 "--datasets", "hmdb51", "--shots", "2", "--seeds", "1", "--lists", lists,
                 "--variants", "victr", "--dry_run"])
  out = capsys.readouterr().out
  assert rc == 0
  # 3 listed videos, batch 64, 50 epochs -> 3 steps; the list replaces our draw.
  assert "few_shot/hmdb51/K2/seed1/victr: 3 steps, 3 train videos (list)" in out
  assert f"train_list={lists}/hmdb_splits/train1_few_shot_2.txt" in out
  rc = cli.main(["k400", "--root", root, "--workdir", str(tmp_path / "o"), "--variants",
                 "victr", "--dry_run"])
  # 6 videos, 30 epochs, batch 256 -> 1 step.
  assert rc == 0 and "k400/victr: 1 steps, 6 train videos (manifest)" in capsys.readouterr().out


def _reproduce(out, *argv, **popen):
  """victr-reproduce, the console script setup.py installs, as a user runs it."""
  script = os.path.join(os.path.dirname(sys.executable), "victr-reproduce")
  cmd = [script, *argv, "--workdir", out, *SMALL]
  return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          **popen)


def test_every_protocol_end_to_end_killed_resumed_and_tabulated(mini, tmp_path):
  root, ckpt = mini
  out = str(tmp_path / "out")
  lists = peer_lists(tmp_path, root)
  common = ("--root", root, "--clip", ckpt, "--max_steps", "2", "--seeds", "1")
  # Zero-shot, killed (the whole process group, as a shell's kill of the job) once its
  # first run has finished, then run again: the finished run is skipped, the other runs.
  proc = _reproduce(out, "zero_shot", *common, "--variants", "victr,clip_zero_shot",
                    start_new_session=True)
  marker = os.path.join(out, "zero_shot", "victr", "reproduce.json")
  deadline = time.time() + 300
  while not os.path.exists(marker) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.5)
  assert os.path.exists(marker), proc.communicate()[0][-3000:]
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  again = _reproduce(out, "zero_shot", *common, "--variants", "victr,clip_zero_shot")
  log = again.communicate()[0]
  assert again.returncode == 0, log[-3000:]
  assert "[1/2] zero_shot/victr: done, skipped" in log
  assert "[eval] step 0 ucf101_split3" in log  # the clip_zero_shot evaluation ran
  # Few-shot: SSv2 has no records here, so its run fails (naming the field) and HMDB51's
  # still runs; the exit status says one failed.
  p = _reproduce(out, "few_shot", "--datasets", "ssv2,hmdb51", "--shots", "2", "--lists",
                 lists, *common, "--variants", "victr")
  log = p.communicate()[0]
  assert p.returncode == 1, log[-3000:]
  assert "few_shot/ssv2/K2/seed1/victr: FAILED" in log and "data.train.pattern" in log
  assert "1 runs failed: few_shot/ssv2/K2/seed1/victr" in log
  # The other protocols, one run each, into the same work directory, started from another
  # directory than the repository's (the runs name the shipped configs by path).
  for argv in (("base_to_novel", "--datasets", "ucf101", "--lists", lists), ("k400",),
               ("charades",)):
    p = _reproduce(out, *argv, *common, "--variants", "victr", cwd=str(tmp_path))
    log = p.communicate()[0]
    assert p.returncode == 0, log[-3000:]
  # A rerun retrains nothing, from the repository's directory too (its command names
  # configs/k400.py, the first one's an absolute path).
  ckpts = os.path.join(out, "k400", "victr", "checkpoints")
  before = sorted(os.listdir(ckpts))
  p = _reproduce(out, "k400", *common, "--variants", "victr")
  log = p.communicate()[0]
  assert p.returncode == 0 and "done, skipped" in log and "[train]" not in log
  assert sorted(os.listdir(ckpts)) == before
  # Every expected row, ours beside the published ones, with sources.
  rows = json.load(open(os.path.join(out, "table.json")))["rows"]
  got = {(r["protocol"], r["dataset"], r["setting"], r["variant"]): r for r in rows}
  for ds in ("hmdb51", "ucf101", "kinetics600"):
    for v in ("victr", "clip_zero_shot"):
      assert got[("zero_shot", ds, "", v)]["ours"]["top1"]["n"] == 3  # 3 splits / draws
  assert got[("few_shot", "hmdb51", "K=2", "victr")]["ours"]["top1"]["n"] == 1
  b2n = got[("base_to_novel", "ucf101", "", "victr")]["ours"]
  assert set(b2n) == {"base", "novel", "hm"}
  assert set(got[("k400", "kinetics400", "", "victr")]["ours"]) == {"top1", "top5"}
  assert "mAP" in got[("charades", "charades", "", "victr")]["ours"]
  assert got[("zero_shot", "hmdb51", "", "victr")]["published"]["vificlip"]["top1"][0][
      "value"] == 51.3
  md = open(os.path.join(out, "table.md")).read()
  assert "| hmdb51 | — | victr | top1 |" in md and "ViFi-CLIP" in md and "Sources:" in md
  # The published numbers all name their source and table.
  doc = json.load(open(table.PUBLISHED))
  assert all(n["source"] in doc["sources"] and n["table"] for n in doc["numbers"])
