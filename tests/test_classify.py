"""victr-classify on a generated video: converted CLIP checkpoints and trained work dirs."""
import importlib
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines import video_io
from victr_jax import classify, clip, predict, train
import xla_env


@pytest.fixture(scope="module")
def video_and_ckpt(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("classify")
  frames = np.random.default_rng(0).integers(0, 255, (12, 40, 48, 3)).astype(np.uint8)
  video = str(tmp / "clip.mp4")
  video_io.write_video(video, frames, fps=8)
  cfg = clip.get_config("tiny")
  _, params = clip.init(cfg)
  ckpt = clip.save_converted(cfg, params, str(tmp / "tiny_clip"))
  return video, ckpt


def test_console_script_prints_a_ranked_list_and_json(video_and_ckpt):
  video, ckpt = video_and_ckpt
  script = os.path.join(os.path.dirname(sys.executable), "victr-classify")
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  out = subprocess.run([script, video, "--checkpoint", ckpt, "--labels",
                        "running,jumping,swimming,cooking", "--top_k", "3"],
                       capture_output=True, text=True, env=env, check=True).stdout
  lines = [l for l in out.splitlines() if l.strip()[:2] in ("1.", "2.", "3.")]
  assert len(lines) == 3 and "CLIP zero-shot" in out
  res = json.loads(subprocess.run(
      [script, video, "--checkpoint", ckpt, "--labels", "running,jumping,swimming", "--json"],
      capture_output=True, text=True, env=env, check=True).stdout)
  probs = [p["probability"] for p in res["predictions"]]
  assert sorted(p["label"] for p in res["predictions"]) == ["jumping", "running", "swimming"]
  assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-4


def test_zero_shot_equals_clip_frame_average(video_and_ckpt):
  video, ckpt = video_and_ckpt
  res = classify.classify(video, ckpt, "running,jumping,swimming", top_k=3, num_frames=4)
  model, params = clip.load(ckpt)
  frames = predict.clip_frames(video, predict.views_config(None, 4, 32))[0][0]
  f = np.asarray(model.apply({"params": params}, frames, method=model.encode_image)).mean(0)
  tok = clip.trim_tokens(clip.tokenize([f"a photo of a {l}." for l in
                                        ("running", "jumping", "swimming")]))
  e = np.asarray(model.apply({"params": params}, tok, method=model.encode_text))
  logits = min(np.exp(float(params["logit_scale"])), 100) * (
      f / np.linalg.norm(f)) @ (e / np.linalg.norm(e, axis=1, keepdims=True)).T
  p = np.exp(logits - logits.max())
  p /= p.sum()
  got = {r["label"]: r["probability"] for r in res["predictions"]}
  np.testing.assert_allclose([got[l] for l in ("running", "jumping", "swimming")], p, atol=1e-4)
  pred = predict.Predictor.from_checkpoint(ckpt, ["running", "jumping", "swimming"], num_frames=4)
  out = pred(pred.frames(video)[0][None])
  assert out.logits.shape == (1, 1, 3) and out.affinities is None
  np.testing.assert_allclose(out.probs[0], p, atol=1e-4)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A trained demo work directory whose evaluation samples by stride (not segments), with
  a test_resize, 2 test clips and 3 crops: -> its path (<tmp>/wd)."""
  tmp = tmp_path_factory.mktemp("classify_wd")
  c = importlib.import_module("configs.demo").get_config("steps=1")
  c.data.synthetic_dir = str(tmp / "syn")
  c.data.synthetic_per_class = {"train": 1, "test": 1}
  c.data.batch_size = c.data.eval_batch_size = 8
  c.data.sampling, c.data.stride, c.data.test_resize = "stride", 3, 40
  c.data.num_test_clips, c.data.num_test_crops = 2, 3
  c.evals = {}
  train.run(c, str(tmp / "wd"), mode="train")
  return str(tmp / "wd")


def test_trained_work_directory(video_and_ckpt, workdir, monkeypatch):
  video, _ = video_and_ckpt
  monkeypatch.chdir(os.path.dirname(workdir))  # a relative work directory, as users type it
  res = classify.classify(video, "wd", "a red shape moving to the left,a green shape growing large", top_k=2)
  assert res["model"].startswith("victr work directory, step 1")
  assert len(res["predictions"]) == 2
  assert res["views"] == 6 and np.shape(res["frame_indices"]) == (2, 8)


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_predictor_on_a_work_directory_is_the_model_with_the_evaluations_views(
    video_and_ckpt, workdir):
  """Predictor probabilities = the model on the 6 views, combined as the evaluator does
  (mean of softmax; of sigmoid for multi-label), = the single-video path's; affinities
  per view."""
  from victr_jax import data  # pylint: disable=g-import-not-at-top
  video, _ = video_and_ckpt
  names = ["a red shape moving to the left", "a green shape growing large", "a blue circle"]
  pred = predict.Predictor.from_checkpoint(workdir, names)
  frames, _ = pred.frames(video)
  out = pred(frames[None])
  model, params, config, _ = predict.load_model(workdir)
  aux_tokens, cats, _ = data.aux_prompts(config)
  ref = model.apply({"params": params}, frames, data.class_tokens(names, config.prompt_template),
                    aux_tokens, cats)
  logits = np.asarray(ref["logits"])  # (6, 3)
  assert out.logits.shape == (1, 6, 3) and len(pred.prompts) == 3 + len(aux_tokens)
  np.testing.assert_allclose(out.logits[0], logits, atol=1e-5)
  np.testing.assert_allclose(out.probs[0], _softmax(logits).mean(0), atol=1e-6)
  np.testing.assert_allclose(out.affinities[:, 0], ref["affinities"], rtol=1e-4, atol=1e-5)
  got = {r["label"]: r["probability"]
         for r in classify.classify(video, workdir, ",".join(names), top_k=3)["predictions"]}
  np.testing.assert_allclose([got[n] for n in names], out.probs[0], atol=1e-6)
  config.data.multi_label = True
  multi = predict.Predictor(model, params, names, config)
  assert multi.how == "mean_sigmoid"
  np.testing.assert_allclose(multi(frames[None]).probs[0], (1 / (1 + np.exp(-logits))).mean(0),
                             atol=1e-6)


def test_work_directory_config_picks_its_evaluation_views(workdir, tmp_path, monkeypatch):
  """classify feeds the model exactly what the work directory's evaluation
  (pipeline.eval_views on config.data) makes of the same video's frames."""
  from data_pipelines import pipeline, records  # pylint: disable=g-import-not-at-top
  frames = np.random.default_rng(1).integers(0, 255, (50, 36, 60, 3)).astype(np.uint8)
  video = str(tmp_path / "wide.mp4")
  video_io.write_video(video, frames, fps=10)
  seen, real = [], predict.clip_frames

  def spy(v, dcfg):  # what classify feeds the model
    seen.append(real(v, dcfg))
    return seen[-1]

  monkeypatch.setattr(predict, "clip_frames", spy)
  res = classify.classify(video, workdir, "a red shape moving to the left,a blue circle", top_k=2)
  (got, idx), = seen
  # Stride 3 from the two test views' starts (0 and the last room), not segment centres.
  np.testing.assert_array_equal(idx, [np.arange(0, 22, 3), 28 + np.arange(0, 22, 3)])
  assert res["frame_indices"] == idx.tolist() and res["views"] == 6
  with open(os.path.join(workdir, "config.json")) as f:
    data_cfg = __import__("ml_collections").ConfigDict(json.load(f)["data"])
  # The evaluation's record of this video: frame i decodes to the video's frame i.
  decoded, _ = video_io.decode_video(video)
  monkeypatch.setattr(video_io, "decode_jpeg", lambda b: decoded[int(b)])
  rec = records.VideoRecord([str(i).encode() for i in range(len(decoded))], [0])
  want = pipeline.eval_views(rec, data_cfg)["frames"]
  assert got.shape == want.shape == (6, 8, 32, 32, 3)
  np.testing.assert_array_equal(got, want)


class _LiveFrames:
  """Counts the av.VideoFrames that Python code holds at once (video_io's decoder hook)."""

  def __init__(self, monkeypatch):
    self.live = self.peak = self.converted = 0
    real_open, real_to_array = video_io.av.open, video_io._to_array
    counter = self

    class Frame:
      def __init__(self, f):
        self._f = f
        counter.live += 1
        counter.peak = max(counter.peak, counter.live)

      def __getattr__(self, k):
        return getattr(self._f, k)

      def __del__(self):
        counter.live -= 1

    class Container:
      def __init__(self, c):
        self._c = c

      def __getattr__(self, k):
        return getattr(self._c, k)

      def __enter__(self):
        return self

      def __exit__(self, *a):
        return self._c.__exit__(*a)

      def decode(self, *a, **k):
        for f in self._c.decode(*a, **k):
          yield Frame(f)

    def to_array(frame, short_side=None):
      counter.converted += 1
      return real_to_array(frame, short_side)

    monkeypatch.setattr(video_io.av, "open", lambda *a, **k: Container(real_open(*a, **k)))
    monkeypatch.setattr(video_io, "_to_array", to_array)

  def measure(self, fn):
    self.live = self.peak = self.converted = 0
    out = fn()
    return out, self.peak, self.converted


def test_memory_stays_flat_as_the_video_grows(tmp_path, monkeypatch):
  """A 10x longer video: classify's decode holds the same few frames at once and converts
  the same number (the sampled ones); decode_video with a frame rate, which must hold
  every frame, shows the hook does see retained frames."""
  rng = np.random.default_rng(2)
  paths = {}
  for n in (12, 120):
    paths[n] = str(tmp_path / f"v{n}.mp4")
    video_io.write_video(paths[n], rng.integers(0, 255, (n, 32, 32, 3)).astype(np.uint8), fps=10)
  hook = _LiveFrames(monkeypatch)
  dcfg = predict.views_config(None, 8, 32)
  peaks, conversions = {}, {}
  for n, path in paths.items():
    (frames, idx), peaks[n], conversions[n] = hook.measure(
        lambda p=path: predict.clip_frames(p, dcfg))
    assert frames.shape == (1, 8, 32, 32, 3) and idx.max() < n
  assert peaks[12] == peaks[120] <= 3, peaks
  assert conversions[12] == conversions[120] == 8, conversions
  _, held, _ = hook.measure(lambda: video_io.decode_video(paths[120], fps=5))
  assert held >= 120


@pytest.mark.parametrize("ext, codec", [("mp4", "mpeg4"), ("mkv", "mpeg4")])
def test_decode_sampled_is_decode_video_at_the_indices(ext, codec, tmp_path, monkeypatch):
  """Exact decode_video frames, also when the cheap frame count is wrong (decoded again)."""
  path = str(tmp_path / f"v.{ext}")
  video_io.write_video(path, np.random.default_rng(3).integers(0, 255, (30, 24, 40, 3))
                       .astype(np.uint8), fps=8, codec=codec)
  ref, _ = video_io.decode_video(path)
  assert video_io.count_frames(path) == len(ref) == 30  # mkv: no stated count, demuxed
  pick = lambda n: np.stack([np.arange(4) * (n // 4), np.arange(4) + n - 4])  # (2, 4)
  for count in (None, 7, 45):
    if count:
      monkeypatch.setattr(video_io, "count_frames", lambda p, c=count: c)
    frames, idx = video_io.decode_sampled(path, pick, short_side=12)
    np.testing.assert_array_equal(idx, pick(30))
    want = video_io.decode_video(path, short_side=12)[0]
    for f, i in zip(frames, idx.ravel()):
      np.testing.assert_array_equal(f, want[i])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_scores_are_an_error(bad, video_and_ckpt, tmp_path, capsys):
  """A damaged checkpoint (a NaN or inf weight in the image tower) exits non-zero with a
  clear message instead of printing NaN probabilities."""
  import jax  # pylint: disable=g-import-not-at-top
  video, _ = video_and_ckpt
  cfg = clip.get_config("tiny")
  _, params = clip.init(cfg)
  params = jax.tree.map(np.array, params)
  params["visual"]["proj"][0, 0] = bad
  ckpt = clip.save_converted(cfg, params, str(tmp_path / "damaged"))
  assert classify.main([video, "--checkpoint", ckpt, "--labels", "a,b,c"]) == 2
  out = capsys.readouterr()
  assert "victr-classify: error:" in out.err and "not finite" in out.err
  assert "nan" not in out.out.lower()


@pytest.mark.parametrize("case", ["bad_video", "no_labels", "no_checkpoint"])
def test_clear_errors(case, video_and_ckpt, tmp_path, capsys):
  video, ckpt = video_and_ckpt
  bad = tmp_path / "broken.mp4"
  bad.write_bytes(b"not a video" * 10)
  argv = {"bad_video": [str(bad), "--checkpoint", ckpt, "--labels", "a,b"],
          "no_labels": [video, "--checkpoint", ckpt, "--labels", " , "],
          "no_checkpoint": [video, "--checkpoint", str(tmp_path / "missing"), "--labels", "a"]}[case]
  assert classify.main(argv) == 2
  err = capsys.readouterr().err
  want = {"bad_video": "broken.mp4", "no_labels": "--labels", "no_checkpoint": "missing"}[case]
  assert "victr-classify: error:" in err and want in err


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """<tmp>/videos: four readable videos of different lengths and containers in nested
  folders (one with an upper-case extension), a corrupt .avi and a text file."""
  root = tmp_path_factory.mktemp("bulk") / "videos"
  rng = np.random.default_rng(5)
  for k, name in enumerate(["a.mp4", "sub/b.mkv", "sub/deeper/c.mp4", "D.mp4"]):
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    video_io.write_video(str(root / name), rng.integers(0, 255, (10 + 3 * k, 36, 44, 3))
                         .astype(np.uint8), fps=8)
  (root / "D.mp4").rename(root / "D.MP4")
  (root / "sub" / "broken.avi").write_bytes(b"not a video" * 10)
  (root / "notes.txt").write_text("not a video")
  return str(root)


FOLDER_VIDEOS = ["D.MP4", "a.mp4", "sub/b.mkv", "sub/broken.avi", "sub/deeper/c.mp4"]


def _rows(path) -> dict:
  with open(path) as f:
    return {r["video"]: r for r in map(json.loads, f)}


def _same_rows(got: dict, want: dict):
  """Equal rows, probabilities to float tolerance."""
  assert sorted(got) == sorted(want)
  for video, r in got.items():
    w = want[video]
    assert {k: v for k, v in r.items() if k != "predictions"} == {
        k: v for k, v in w.items() if k != "predictions"}, video
    if "predictions" in r:
      assert [p["label"] for p in r["predictions"]] == [p["label"] for p in w["predictions"]]
      np.testing.assert_allclose([p["probability"] for p in r["predictions"]],
                                 [p["probability"] for p in w["predictions"]], atol=1e-6)


def test_a_folder_with_a_corrupt_video_gets_a_row_each_and_a_rerun_adds_nothing(
    folder, video_and_ckpt, tmp_path, capsys):
  _, ckpt = video_and_ckpt
  out = str(tmp_path / "preds.jsonl")
  argv = [folder, "--checkpoint", ckpt, "--labels", "running,jumping,swimming", "--out", out,
          "--top_k", "2", "--batch", "2", "--workers", "2"]
  assert classify.main(argv) == 0
  rows = _rows(out)
  assert sorted(os.path.relpath(v, folder) for v in rows) == FOLDER_VIDEOS
  bad = rows[os.path.join(folder, "sub", "broken.avi")]
  assert set(bad) == {"video", "error"} and "broken.avi" in bad["error"]
  good = [r for r in rows.values() if "error" not in r]
  assert len(good) == 4 and all(len(r["predictions"]) == 2 for r in good)
  err = capsys.readouterr().err
  assert "5 videos, 0 already in" in err and "Traceback" not in err
  assert "wrote 5 rows (1 of them errors)" in err
  with open(out, "rb") as f:
    before = f.read()
  assert classify.main(argv) == 0  # a rerun adds nothing
  with open(out, "rb") as f:
    assert f.read() == before
  assert "5 videos, 5 already in" in capsys.readouterr().err
  with open(out, "wb") as f:  # killed while writing the last row: it is redone
    f.write(before[:-15])
  assert classify.main(argv) == 0
  _same_rows(_rows(out), rows)


def test_a_batch_predicts_what_the_videos_do_one_by_one(folder, workdir, tmp_path):
  """A work directory (6 views a video) in batches of 3, the last one padded: every row
  is the single-video path's result for that video."""
  names = "a red shape moving to the left,a green shape growing large,a blue circle"
  out = str(tmp_path / "p.jsonl")
  assert classify.main([folder, "--checkpoint", workdir, "--labels", names, "--out", out,
                        "--batch", "3", "--top_k", "3"]) == 0
  rows = _rows(out)
  pred = predict.Predictor.from_checkpoint(workdir, names.split(","))
  one_by_one = {}
  for video in rows:
    try:
      one_by_one[video] = classify.predict_video(pred, video, 3)
    except ValueError as e:
      one_by_one[video] = {"video": video, "error": str(e)}
  _same_rows(rows, one_by_one)
  assert sum("error" in r for r in rows.values()) == 1
  assert all(r["views"] == 6 for r in rows.values() if "error" not in r)


def test_rows_are_the_same_over_two_devices(folder, video_and_ckpt, tmp_path):
  """The console script on two (forced) CPU devices, batch 5 rounded up to 6 (4 readable
  videos, padded), writes the rows the tests' 8 devices write with batch 1 (-> 8)."""
  _, ckpt = video_and_ckpt
  script = os.path.join(os.path.dirname(sys.executable), "victr-classify")
  env = xla_env.env(devices=2)
  two, one = str(tmp_path / "two.jsonl"), str(tmp_path / "one.jsonl")
  args = ["--checkpoint", ckpt, "--labels", "running,jumping,swimming"]
  run = subprocess.run([script, folder, *args, "--out", two, "--batch", "5"],
                       capture_output=True, text=True, env=env, check=True)
  assert "on 2 device(s), batch 6" in run.stderr
  assert classify.main([folder, *args, "--out", one, "--batch", "1"]) == 0
  _same_rows(_rows(two), _rows(one))


def test_inputs_glob_and_list_file_and_usage_errors(folder, video_and_ckpt, tmp_path,
                                                    monkeypatch, capsys):
  _, ckpt = video_and_ckpt
  videos, single = classify.find_videos(folder)
  assert not single and [os.path.relpath(v, folder) for v in videos] == FOLDER_VIDEOS
  videos, _ = classify.find_videos(os.path.join(folder, "**", "*.mp4"))
  assert [os.path.relpath(v, folder) for v in videos] == ["a.mp4", "sub/deeper/c.mp4"]
  monkeypatch.chdir(folder)
  (tmp_path / "list.txt").write_text("# clips\na.mp4\n\n./sub/b.mkv\na.mp4\nmissing.mp4\n")
  assert classify.find_videos(f"@{tmp_path / 'list.txt'}") == (
      ["a.mp4", "sub/b.mkv", "missing.mp4"], False)
  assert classify.find_videos("a.mp4") == (["a.mp4"], True)
  empty = tmp_path / "empty"
  empty.mkdir()
  labels = ["--labels", "a,b"]
  for argv, want in (([str(empty), "--checkpoint", ckpt, *labels, "--out", "x.jsonl"],
                      "no videos found"),
                     ([folder, "--checkpoint", ckpt, *labels], "give --out"),
                     ([folder, "--checkpoint", str(tmp_path / "nope"), *labels, "--out", "x"],
                      "nope"),
                     ([folder, "--checkpoint", ckpt, "--labels", ",", "--out", "x"], "--labels")):
    assert classify.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("victr-classify: error:") and want in err and "\n" not in err
  (tmp_path / "other.jsonl").write_text("not json\n")  # not this tool's output: untouched
  assert classify.main([folder, "--checkpoint", ckpt, *labels, "--out",
                        str(tmp_path / "other.jsonl")]) == 2
  assert "not a victr-classify row" in capsys.readouterr().err
  assert (tmp_path / "other.jsonl").read_text() == "not json\n"


def test_progress_line(monkeypatch):
  monkeypatch.setattr(classify, "PROGRESS_SECONDS", 0.0)
  stream = io.StringIO()
  progress = classify.Progress(10, stream)
  progress.add(4, 1)
  progress.add(6, 0)  # done: the closing line is the caller's
  assert re.fullmatch(r"victr-classify: 4/10 videos \(1 errors\), [\d.]+ videos/s, ETA \d+s\n",
                      stream.getvalue())
