"""The trainer: every config steps, sharded == single device, two processes, exact resume
after SIGKILL, SIGTERM checkpoint, bad configs rejected before compiling."""
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from data_pipelines import records, splits, video_io
from victr_jax import checkpointing, config_lib, train
import xla_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _jpeg(v):
  return video_io.encode_jpeg(np.full((36, 44, 3), v, np.uint8))


def _write(path_prefix, labels, frames=4, num_classes=None):
  recs = [records.VideoRecord([_jpeg((37 * i + 11 * t) % 250) for t in range(frames)],
                              list(l) if isinstance(l, (list, tuple)) else [l], [],
                              f"v{i}") for i, l in enumerate(labels)]
  os.makedirs(os.path.dirname(path_prefix), exist_ok=True)
  records.write_shards(recs, path_prefix, 1)


def _fake_root(root):
  """Tiny record sets where few_shot.py looks for SSv2 (174 classes)."""
  _write(f"{root}/ssv2/train", [0, 0, 1, 1, 173, 173, 2, 2])
  _write(f"{root}/ssv2/val", [0, 1, 173, 5])


def _tiny(c, workdir_data):
  """Shrinks any config to the tiny model and a CPU-sized run."""
  c.model.clip = "tiny"
  c.model.head.num_heads = 2
  c.model.num_frames = 2
  d = c.data
  d.num_frames, d.stride, d.image_size = 2, 1, 32
  d.batch_size, d.eval_batch_size, d.num_threads = 8, 8, 1
  d.num_test_clips = min(d.num_test_clips, 2)
  d.synthetic_dir = workdir_data
  d.synthetic_per_class = {"train": 1, "test": 1}
  d.synthetic_frames = 4
  c.num_train_steps = 1 if c.num_train_steps >= 0 else -1
  c.log_every = c.checkpoint_every = 1
  c.optim.warmup_steps = 0
  if c.model.head.classifier == "visual":
    c.model.head.num_classes = len(config_lib._names_of(c.data.train))
  return c


# zero_shot, few_shot (HMDB51), base_to_novel, k400 and charades run end to end, from
# victr-prepare'd official layouts, in tests/test_reproduce.py; demo.py's victr (both
# settings), no_aux, clip_zero_shot and classifier_visual in tests/test_demo.py.
CONFIGS = [("demo", "variant=mean_pool"), ("few_shot", "dataset=ssv2,shots=4")]


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("data"))
  _fake_root(root)
  return root


@pytest.mark.parametrize("name,arg", CONFIGS, ids=[f"{n}:{a}" for n, a in CONFIGS])
def test_every_config_inits_trains_and_evaluates(name, arg, fake_root, tmp_path):
  mod = importlib.import_module(f"configs.{name}")
  arg = ",".join(x for x in (arg, "" if name == "demo" else f"root={fake_root}") if x)
  c = _tiny(mod.get_config(arg), str(tmp_path / "synthetic"))
  out = train.run(c, str(tmp_path / "wd"))
  res = json.load(open(tmp_path / "wd" / "eval_results.json"))
  assert set(res["sets"]) == set(c.evals.keys())
  for r in res["sets"].values():
    assert r["num_examples"] > 0 and np.isfinite(r["mAP" if c.data.multi_label else "top1"])
  steps = int(out["state"].step)
  assert steps == (0 if "clip_zero_shot" in arg else 1)
  if name == "base_to_novel":
    assert "harmonic_mean" in res["protocol"]


def _demo_cfg(tmp, steps=3, **kw):
  c = _tiny(importlib.import_module("configs.demo").get_config(f"steps={steps}"),
            str(tmp / "synthetic"))
  c.data.synthetic_per_class = {"train": 2, "test": 1}
  c.num_train_steps = steps
  c.optim.lr = 1e-6  # peers' few-shot scale; see the closing note on Adam and tolerances
  for k, v in kw.items():
    node = c
    *parents, leaf = k.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = v
  return c


def test_eight_devices_equal_one_device(tmp_path):
  c = _demo_cfg(tmp_path, steps=3, **{"mesh.data": 4, "mesh.model": 2})
  sharded = train.run(c, str(tmp_path / "wd8"), mode="train")["state"]
  c1 = _demo_cfg(tmp_path, steps=3, **{"mesh.data": 1, "mesh.model": 1})
  single = train.run(c1, str(tmp_path / "wd1"), mode="train", devices=jax.devices()[:1])["state"]
  fc = sharded.params["clip"]["visual"]["transformer"]["resblocks_0"]["mlp"]["c_fc"]["kernel"]
  assert len(fc.sharding.device_set) == 8
  assert fc.addressable_shards[0].data.shape[1] == fc.shape[1] // 2  # split over 'model'
  diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                                       sharded.params, single.params))
  assert max(diffs) <= 1e-5
  moved = jax.tree.leaves(jax.tree.map(
      lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), sharded.params,
      train.run(_demo_cfg(tmp_path, steps=0, num_train_steps=-1), str(tmp_path / "wd0"),
                mode="train")["state"].params))
  assert max(moved) > 1e-7  # training changed the parameters


def _main_cmd(workdir, args, extra=()):
  return [sys.executable, "-m", "victr_jax.main", f"--config={ROOT}/configs/demo.py:{args}",
          f"--workdir={workdir}", *extra]


def _env(devices=8, **kw):
  return xla_env.env(devices, PYTHONPATH=ROOT, **kw)


def _demo_flags(tmp, steps, ckpt_every=2):
  return ["--config.data.synthetic_dir=" + str(tmp / "synthetic"), "--config.model.clip=tiny",
          "--config.data.synthetic_per_class.train=2", "--config.data.synthetic_per_class.test=1",
          "--config.data.batch_size=8", "--config.data.eval_batch_size=8",
          "--config.data.num_threads=1", f"--config.checkpoint_every={ckpt_every}",
          "--config.log_every=1", f"--config.num_train_steps={steps}"]


def _latest_params(workdir):
  step, state, data = checkpointing.restore_latest(str(workdir))
  return step, state["params"], data


def test_sigkill_resume_matches_uninterrupted_run_and_sigterm_checkpoints(tmp_path):
  steps = 6
  flags = _demo_flags(tmp_path, steps)
  ref = tmp_path / "ref"
  subprocess.run(_main_cmd(ref, f"steps={steps}", flags), check=True, env=_env(),
                 capture_output=True)
  # Killed mid-training with SIGKILL once checkpoint 2 exists, then restarted.
  killed = tmp_path / "killed"
  proc = subprocess.Popen(_main_cmd(killed, f"steps={steps}", flags), env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  deadline = time.time() + 300
  while not os.path.isdir(killed / "checkpoints" / "2") and time.time() < deadline:
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not os.path.isdir(killed / "checkpoints" / str(steps))
  subprocess.run(_main_cmd(killed, f"steps={steps}", flags), check=True, env=_env(),
                 capture_output=True)
  s_ref, p_ref, _ = _latest_params(str(ref))
  s_kill, p_kill, _ = _latest_params(str(killed))
  assert s_ref == s_kill == steps
  diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), p_ref, p_kill))
  assert max(diffs) == 0.0
  r_ref = json.load(open(ref / "eval_results.json"))["sets"]
  r_kill = json.load(open(killed / "eval_results.json"))["sets"]
  for name in r_ref:
    assert {k: v for k, v in r_ref[name].items() if k != "seconds"} == {
        k: v for k, v in r_kill[name].items() if k != "seconds"}

  # SIGTERM: a complete checkpoint, a clean exit before the end.
  term = tmp_path / "term"
  proc = subprocess.Popen(_main_cmd(term, "steps=400", _demo_flags(tmp_path, 400, 1000)),
                          env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 300
  while time.time() < deadline:
    line = proc.stdout.readline()
    if "[train] step 3/" in line:
      break
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out[-2000:]
  step, params, data = _latest_params(str(term))
  assert 3 <= step < 400 and data["iterators"]["0"]
  assert not [d for d in os.listdir(term / "checkpoints") if "tmp" in d]


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_train_and_evaluate_each_example_once(tmp_path):
  port = _free_port()
  wd = tmp_path / "mh"
  flags = _demo_flags(tmp_path, 2) + [f"--coordinator=127.0.0.1:{port}", "--num_processes=2"]
  procs = [subprocess.Popen(_main_cmd(wd, "steps=2", flags + [f"--process_id={i}"]),
                            env=_env(devices=4), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), outs[0][-3000:] + outs[1][-3000:]
  res = json.load(open(wd / "eval_results.json"))
  assert res["step"] == 2
  assert res["sets"]["test"]["num_examples"] == 18  # 18 classes x 1 test video, each once
  _, _, data = _latest_params(str(wd))
  assert sorted(data["iterators"]) == ["0", "1"]


@pytest.mark.parametrize("override,field", [
    ({"data.batch_sz": 4}, "data.batch_sz"),
    ({"mesh.model": 3}, "mesh"),
    ({"data.train.source": "records", "data.train.pattern": "/nonexistent/x-*"},
     "data.train.pattern"),
    ({"model.head.attention": "diagonal"}, "head.attention"),
    ({"data.batch_size": 12}, "data.batch_size"),
])
def test_bad_config_names_the_field_before_compiling(override, field, tmp_path, monkeypatch):
  c = _demo_cfg(tmp_path)
  c.unlock()
  for k, v in override.items():
    node = c
    *parents, leaf = k.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = v
  compiled = []
  monkeypatch.setattr(jax, "jit", lambda *a, **k: compiled.append(1))
  with pytest.raises(ValueError, match=field.replace(".", r"\.")):
    train.run(c, str(tmp_path / "bad"))
  assert not compiled


def test_main_reports_a_bad_config_field(tmp_path):
  r = subprocess.run(_main_cmd(tmp_path / "x", "steps=1", ["--config.mesh.model=3"]),
                     env=_env(), capture_output=True, text=True)
  assert r.returncode != 0 and "mesh" in r.stderr


@pytest.mark.parametrize("preset,model_act", [("tiny", "gelu"), ("tiny_gelu", "")])
def test_checkpoint_activation_must_be_the_models(preset, model_act, tmp_path, monkeypatch):
  from victr_jax import clip, models
  cfg = clip.get_config(preset)  # 'tiny' is QuickGELU, 'tiny_gelu' exact GELU
  path = clip.save_converted(cfg, clip.init(cfg)[1], str(tmp_path / "clip"))
  c = _demo_cfg(tmp_path, **{"clip_checkpoint": path, "model.clip_act": model_act})
  compiled = []
  monkeypatch.setattr(jax, "jit", lambda *a, **k: compiled.append(1))
  other = "quick_gelu" if cfg.act == "gelu" else "gelu"
  with pytest.raises(ValueError, match=rf"model\.clip_act.*'{cfg.act}'.*model\.clip=.*'{other}'"):
    train.run(c, str(tmp_path / "bad"))
  assert not compiled and not os.path.exists(tmp_path / "bad")
  c.model.clip_act = cfg.act  # the checkpoint's activation: accepted
  models.check_clip_checkpoint(c.model, cfg, path)


# Published split lists (data set field list_file) -------------------------------------------

_LISTED_IDS = [  # record ids as victr-prepare writes them (generic, UCF101, Kinetics, SSv2)
    ("brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0", 0), ("v_ApplyEyeMakeup_g08_c01", 1),
    ("c1O_FxuKCI0_000110_000120", 2), ("82469", 3), ("cartwheel_f_cm_np1_le_bad_0", 1),
    ("v_Archery_g01_c02", 0), ("6xMGnefcS20_000000_000010", 3), ("117585", 2)]


def _listed_set(tmp_path, list_file, **kw):
  """(ids, labels) of the records data.open_source keeps for a records set with list_file."""
  from victr_jax import data
  if not os.path.exists(tmp_path / "rec-00000-of-00001.tfrecord"):
    recs = [records.VideoRecord([_jpeg(i)], [l], [], vid) for i, (vid, l) in enumerate(_LISTED_IDS)]
    records.write_shards(recs, str(tmp_path / "rec"), 1)
    splits.write_classnames(str(tmp_path / "names.txt"), ["a", "b", "c", "d"])
  dset = config_lib.records_set(str(tmp_path / "rec*"), str(tmp_path / "names.txt"),
                                list_file=str(list_file), **kw)
  src = data.open_source(dset, config_lib.base().data)
  recs = [records.as_record(src[i]) for i in range(len(src))]
  return [r.video_id for r in recs], [r.labels for r in recs]


def test_list_file_keeps_exactly_the_listed_videos(tmp_path):
  vifi = tmp_path / "train1_few_shot_1.txt"  # ViFi-CLIP's format: `path-or-name LABEL`
  vifi.write_text("April_09_brush_hair_u_nm_np1_ba_goo_0.avi 0\n"
                  "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
                  "train/c1O_FxuKCI0_000110_000120.mp4 2\n\n82469.webm 3\n")
  ids, labels = _listed_set(tmp_path, vifi)
  assert ids == ["brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0", "v_ApplyEyeMakeup_g08_c01",
                 "c1O_FxuKCI0_000110_000120", "82469"]
  assert labels == [[0], [1], [2], [3]]
  ours = str(tmp_path / "ours.txt")  # splits.read_list's format
  splits.write_list(ours, [("cartwheel_f_cm_np1_le_bad_0", [1]), ("v_Archery_g01_c02.avi", [0]),
                           ("6xMGnefcS20_000000_000010.mp4", [3]), ("117585", [2])])
  ids, labels = _listed_set(tmp_path, ours)
  assert ids == ["cartwheel_f_cm_np1_le_bad_0", "v_Archery_g01_c02", "6xMGnefcS20_000000_000010",
                 "117585"] and labels == [[1], [0], [3], [2]]
  ids, labels = _listed_set(tmp_path, ours, classes=[3, 1])  # with classes: renumbered
  assert ids == ["cartwheel_f_cm_np1_le_bad_0", "6xMGnefcS20_000000_000010"]
  assert labels == [[1], [0]]
  # The peers' base/novel lists number the classes their own way: a consistent one-to-one
  # relabelling is accepted, the records' labels are kept. No label (UCF101 testlist) too.
  relabelled = tmp_path / "base_train.txt"
  relabelled.write_text("v_ApplyEyeMakeup_g08_c01.avi 7\ncartwheel_f_cm_np1_le_bad_0.avi 7\n"
                        "Archery/v_Archery_g01_c02.avi 5\n117585.webm\n")
  ids, labels = _listed_set(tmp_path, relabelled)
  assert ids == ["v_ApplyEyeMakeup_g08_c01", "cartwheel_f_cm_np1_le_bad_0", "v_Archery_g01_c02",
                 "117585"] and labels == [[1], [1], [0], [2]]


def test_list_file_errors_name_the_file_line_and_video(tmp_path):
  missing = tmp_path / "missing.txt"
  missing.write_text("82469.webm 3\nv_Nope_g01_c01.avi 1\n")
  with pytest.raises(ValueError, match=r"missing\.txt: 1 listed videos are not among the 8 "
                                       r"records.*line 2 'v_Nope_g01_c01\.avi'"):
    _listed_set(tmp_path, missing)
  clash = tmp_path / "clash.txt"  # v_ApplyEyeMakeup is class 1, v_Archery class 0
  clash.write_text("v_ApplyEyeMakeup_g08_c01.avi 1\nv_Archery_g01_c02.avi 1\n")
  with pytest.raises(ValueError, match=r"clash\.txt:2: video 'v_Archery_g01_c02\.avi' is listed "
                                       r"with label \[1\] but labelled \[0\].*line 1"):
    _listed_set(tmp_path, clash)
  # The config check: a list file that does not exist, or one with shots.
  c = _demo_cfg(tmp_path)
  c.evals.test.list_file = str(tmp_path / "nowhere.txt")
  with pytest.raises(ValueError, match=r"evals\.test\.list_file: .*nowhere\.txt does not exist"):
    config_lib.check_config(c, "eval", 8)
  c.evals.test.list_file = ""
  c.data.train.list_file = str(tmp_path / "nowhere.txt")
  with pytest.raises(ValueError, match=r"data\.train\.list_file"):
    config_lib.check_config(c, "train", 8)
  c.data.train.list_file, c.data.train.shots = str(missing), 2
  with pytest.raises(ValueError, match=r"data\.train\.shots=2 with data\.train\.list_file"):
    config_lib.check_config(c, "train", 8)


def test_list_file_matching_rules(tmp_path, capsys):
  from victr_jax import data
  same = tmp_path / "same.txt"
  same.write_text("a/x.avi 0\ny.mp4 1\n")
  assert data.listed_records(str(same), ["a/x", "y", "b/z"], [[0], [1], [1]]) == [0, 1]
  assert "differently" not in capsys.readouterr().out  # the labels are the records'
  relabelled = tmp_path / "relabelled.txt"
  relabelled.write_text("a/x.avi 5\ny.mp4 6\n")
  assert data.listed_records(str(relabelled), ["a/x", "y", "b/z"], [[0], [1], [1]]) == [0, 1]
  assert "differently" in capsys.readouterr().out
  ambiguous = tmp_path / "ambiguous.txt"  # by file name alone, two records
  ambiguous.write_text("x.avi 0\n")
  with pytest.raises(ValueError, match=r"ambiguous\.txt:1: video 'x\.avi' matches 2 records"):
    data.listed_records(str(ambiguous), ["a/x", "b/x"], [[0], [0]])


def test_few_shot_and_base_to_novel_configs_take_list_arguments(tmp_path):
  from configs import base_to_novel, few_shot
  c = few_shot.get_config("train_list=/l/train.txt,test_list=/l/test.txt")
  assert (c.data.train.list_file, c.data.train.shots) == ("/l/train.txt", 0)
  assert c.evals.hmdb51_test.list_file == "/l/test.txt"
  c = base_to_novel.get_config("train_list=/l/fs.txt,novel_list=/l/novel.txt")
  assert (c.data.train.list_file, c.data.train.shots, c.evals.base.list_file,
          c.evals.novel.list_file) == ("/l/fs.txt", 0, "", "/l/novel.txt")
  assert few_shot.get_config("").data.train.list_file == ""


# Evaluation at any eval batch size: padded to the devices, padding masked -------------------


def test_padded_eval_batch():
  from data_pipelines import pipeline
  assert pipeline.padded_eval_batch(8, 8) == 8
  assert pipeline.padded_eval_batch(6, 8) == pipeline.padded_eval_batch(1, 8) == 8
  assert pipeline.padded_eval_batch(12, 8) == 16
  assert pipeline.padded_eval_batch(64, 128) == 128
  assert pipeline.padded_eval_batch(12, 4, 8) == 16  # a multiple of the processes too
  assert pipeline.padded_eval_batch(10, 6, 4) == 12
  assert pipeline.padded_eval_batch(5, 1, 1) == 5


def _eval_per_video(c, workdir, monkeypatch):
  """(results, {video index: scores}, batch sizes) of an evaluation-only run."""
  from data_pipelines import pipeline
  from victr_jax import metrics
  seen = {"index": [], "mask": [], "scores": []}
  real_ds, real_update = pipeline.eval_dataset, metrics.ClassificationAccumulator.update

  def eval_dataset(*a, **k):
    for b in real_ds(*a, **k):
      seen["index"].append(b["index"])
      seen["mask"].append(b["mask"])
      yield b

  def update(self, scores, labels, mask=None):
    seen["scores"].append(np.asarray(scores))
    return real_update(self, scores, labels, mask)

  with monkeypatch.context() as m:
    m.setattr(pipeline, "eval_dataset", eval_dataset)
    m.setattr(metrics.ClassificationAccumulator, "update", update)
    res = train.run(c, str(workdir), mode="eval")["eval"]
  index, mask = np.concatenate(seen["index"]), np.concatenate(seen["mask"])
  scores = np.concatenate(seen["scores"])
  assert len(index) == len(scores)
  valid = index[mask > 0]
  assert sorted(valid.tolist()) == list(range(len(valid)))  # every video exactly once
  assert (index[mask == 0] == -1).all()
  return res, dict(zip(valid.tolist(), scores[mask > 0])), {len(i) for i in seen["index"]}


def test_eval_batch_not_dividing_the_devices_is_padded(tmp_path, monkeypatch):
  c8 = _demo_cfg(tmp_path, steps=0, num_train_steps=-1)
  ref, ref_scores, sizes = _eval_per_video(c8, tmp_path / "wd8", monkeypatch)
  assert sizes == {8}
  c12 = _demo_cfg(tmp_path, steps=0, num_train_steps=-1, **{"data.eval_batch_size": 12})
  config_lib.check_config(c12, "eval", 8)  # no longer rejected
  got, got_scores, sizes = _eval_per_video(c12, tmp_path / "wd12", monkeypatch)
  assert sizes == {16}  # 12 padded to a multiple of the 8 devices
  assert sorted(got_scores) == sorted(ref_scores) == list(range(18))
  for i, s in ref_scores.items():
    np.testing.assert_allclose(got_scores[i], s, atol=1e-5)
  for name, r in ref["sets"].items():
    g = got["sets"][name]
    assert g["num_examples"] == r["num_examples"] == 18
    assert g["confusion"] == r["confusion"]
    for k in ("top1", "top5", "mean_class_accuracy"):
      assert g[k] == pytest.approx(r[k], abs=1e-9)
