"""Input pipeline: DMVR records from plain TensorFlow, corrupt frames, multi-host eval,
exact resume, sampling, TFDS source."""
import io
import json

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from data_pipelines import pipeline, records, synthetic, video_ops


def _cfg(**kw):
  c = ml_collections.ConfigDict(dict(
      num_frames=4, sampling="stride", stride=2, image_size=32, train_aug="random_resized_crop",
      crop_scale=(0.4, 1.0), flip=True, multi_label=False, num_classes=5, batch_size=4,
      eval_batch_size=4, num_test_clips=2, num_test_crops=3, seed=0, num_threads=2))
  c.update(kw)
  return c


def _jpeg(value, size=(40, 48)):
  buf = io.BytesIO()
  Image.fromarray(np.full((*size, 3), value, np.uint8)).save(buf, format="JPEG")
  return buf.getvalue()


def _write_plain_tf(path, n=10, corrupt=(), frames=6):
  """SequenceExamples written with TensorFlow's own protos and DMVR's keys."""
  with tf.io.TFRecordWriter(path) as w:
    for i in range(n):
      ex = tf.train.SequenceExample()
      ex.context.feature["clip/label/index"].int64_list.value[:] = [i % 5]
      ex.context.feature["clip/label/text"].bytes_list.value[:] = [f"class {i % 5}".encode()]
      ex.context.feature["video/filename"].bytes_list.value[:] = [f"v{i}.mp4".encode()]
      ex.context.feature["clip/start/timestamp"].int64_list.value[:] = [1000000 * i]
      for t in range(frames):
        data = b"\xff\xd8 not a jpeg" if (i in corrupt and t == 2) else _jpeg(20 * t + i)
        ex.feature_lists.feature_list["image/encoded"].feature.add().bytes_list.value[:] = [data]
      w.write(ex.SerializeToString())
  return path


def test_reads_plain_tensorflow_dmvr_records(tmp_path):
  path = _write_plain_tf(str(tmp_path / "dmvr.tfrecord"))
  src = records.RecordSource(path)
  rec = records.decode(src[3])
  assert (len(rec.frames), rec.labels, rec.label_texts, rec.video_id, rec.start_us) == (
      6, [3], ["class 3"], "v3.mp4", 3000000)
  batch = next(iter(pipeline.train_dataset(path, _cfg())))
  assert batch["frames"].shape == (4, 4, 32, 32, 3) and batch["frames"].dtype == np.float32
  assert set(batch["label"].tolist()) <= set(range(5))


def test_corrupt_jpeg_skipped_in_training_reported_in_eval(tmp_path):
  path = _write_plain_tf(str(tmp_path / "c.tfrecord"), n=8, corrupt=(5,))
  stats = pipeline.Stats()
  it = iter(pipeline.train_dataset(path, _cfg(sampling="segments", batch_size=2), stats=stats))
  for _ in range(8):  # two epochs of 7 good clips
    next(it)
  assert stats.corrupt >= 1 and all(":5" in w for w in stats.where)
  ev_stats = pipeline.Stats()
  ev = list(pipeline.eval_dataset(path, _cfg(num_test_clips=1, num_test_crops=1), stats=ev_stats))
  corrupt = np.concatenate([b["corrupt"] for b in ev])
  index = np.concatenate([b["index"] for b in ev])
  mask = np.concatenate([b["mask"] for b in ev])
  assert index[corrupt == 1].tolist() == [5] and mask[index == 5].tolist() == [0]
  assert mask.sum() == 7 and ev_stats.corrupt == 1


def test_eval_on_two_hosts_sees_each_example_once(tmp_path):
  path = _write_plain_tf(str(tmp_path / "e.tfrecord"), n=11)
  seen, batches = [], []
  for host in range(2):
    ev = list(pipeline.eval_dataset(path, _cfg(eval_batch_size=4), process_index=host,
                                    process_count=2))
    batches.append(len(ev))
    for b in ev:
      assert b["frames"].shape == (2, 6, 4, 32, 32, 3)  # local batch 2, 2 clips x 3 crops
      seen += b["index"][b["mask"] == 1].tolist()
  assert batches[0] == batches[1]
  assert sorted(seen) == list(range(11))


def test_restored_iterator_continues_exactly(tmp_path):
  synthetic.write(str(tmp_path), {"train": 2}, num_frames=8, size=32)
  cfg = _cfg(num_classes=18)
  it = iter(pipeline.train_dataset(str(tmp_path / "train*"), cfg))
  for _ in range(3):
    next(it)
  state = json.loads(json.dumps(it.get_state()))  # survives a JSON checkpoint
  want = [next(it) for _ in range(4)]
  fresh = iter(pipeline.train_dataset(str(tmp_path / "train*"), cfg))
  fresh.set_state(state)
  for w in want:
    got = next(fresh)
    np.testing.assert_array_equal(got["frames"], w["frames"])
    np.testing.assert_array_equal(got["label"], w["label"])


def test_hosts_read_disjoint_training_slices(tmp_path):
  path = _write_plain_tf(str(tmp_path / "h.tfrecord"), n=8, frames=4)
  cfg = _cfg(batch_size=4, num_frames=1, stride=1, train_aug="none", flip=False)
  firsts = []
  for host in range(2):
    it = iter(pipeline.train_dataset(path, cfg, process_index=host, process_count=2))
    vals = [round(float(b["frames"][j, 0, 0, 0, 0]), 3) for b in (next(it), next(it)) for j in range(2)]
    firsts.append(set(vals))
  assert not firsts[0] & firsts[1]


def test_multi_label_is_multi_hot(tmp_path):
  rec = records.VideoRecord([_jpeg(50)] * 3, [1, 3], ["a", "b"], "x")
  path = records.write_shards([rec] * 4, str(tmp_path / "m"), 1)[0]
  b = next(iter(pipeline.train_dataset(path, _cfg(multi_label=True, batch_size=2))))
  np.testing.assert_array_equal(b["label"][0], [0, 1, 0, 1, 0])


def test_sample_indices():
  assert video_ops.sample_indices(20, 4, stride=2).tolist() == [6, 8, 10, 12]  # centre
  assert video_ops.sample_indices(20, 4, stride=2, view=0, num_views=3).tolist() == [0, 2, 4, 6]
  assert video_ops.sample_indices(20, 4, stride=2, view=2, num_views=3).tolist() == [13, 15, 17, 19]
  assert video_ops.sample_indices(3, 4, stride=2).tolist() == [0, 2, 2, 2]  # short video
  assert video_ops.sample_indices(16, 4, mode="segments").tolist() == [2, 6, 10, 14]
  r = video_ops.sample_indices(16, 4, mode="segments", rng=np.random.default_rng(0))
  assert all(4 * k <= i < 4 * k + 4 for k, i in enumerate(r))
  with pytest.raises(ValueError, match="empty"):
    video_ops.sample_indices(0, 4)


def test_test_crops_cover_the_long_side():
  frames = [np.arange(40 * 60 * 3, dtype=np.uint32).reshape(40, 60, 3).astype(np.uint8)] * 2
  crops = video_ops.test_crops(frames, 40, 3)
  assert crops.shape == (3, 2, 40, 40, 3)
  np.testing.assert_array_equal(crops[0, 0], frames[0][:, :40])
  np.testing.assert_array_equal(crops[2, 0], frames[0][:, 20:])


def test_synthetic_motion_and_reverse_have_equal_frame_means():
  """Frame averaging cannot tell a motion from its reverse: the same frames, reversed."""
  for a, b in ((0, 1), (2, 3), (4, 5)):  # left/right, up/down, growing/shrinking
    va = synthetic.render(a, np.random.default_rng(7))
    vb = synthetic.render(b, np.random.default_rng(7))
    assert synthetic.class_parts(a)[1] != synthetic.class_parts(b)[1]
    np.testing.assert_allclose(va.frames.astype(float).mean(0), vb.frames.astype(float).mean(0),
                               atol=3.0)  # only the per-frame noise differs
    assert np.abs(va.frames.astype(float) - vb.frames.astype(float)).max() > 100


def test_synthetic_is_deterministic_and_base_novel_is_compositional():
  a = [v.frames for v in synthetic.generate("train", 1, num_frames=4, size=16)]
  b = [v.frames for v in synthetic.generate("train", 1, num_frames=4, size=16)]
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  base, novel = synthetic.base_novel_classes()
  assert sorted(base + novel) == list(range(len(synthetic.classes())))
  for half in (base, novel):
    assert {synthetic.class_parts(i)[0] for i in half} == set(synthetic.COLOURS)
    assert {synthetic.class_parts(i)[1] for i in half} == set(synthetic.MOTIONS)


def test_tfds_synthetic_builder_feeds_the_pipeline(tmp_path):
  from data_pipelines import tfds_builders
  builder = tfds_builders.build(tfds_builders.SyntheticActions, str(tmp_path), config="tiny")
  assert builder.info.splits["train"].num_examples == 4 * 18
  src = tfds_builders.TFDSSource("synthetic_actions/tiny", "test", str(tmp_path))
  rec = src[0]
  assert len(rec.frames) == 16 and rec.label_texts == [synthetic.classes()[rec.labels[0]]]
  ev = list(pipeline.eval_dataset(src, _cfg(num_classes=18, eval_batch_size=8)))
  assert sum(int(b["mask"].sum()) for b in ev) == 36


def test_test_videos_come_in_reverse_pairs_so_frame_averages_score_half_on_direction():
  """In the test split each video of a reverse motion is its partner's video backwards, so
  an order-blind classifier (here: the frames' mean, nearest class mean) predicts the same
  class for both and its direction accuracy is exactly 0.5 on every axis."""
  from experiments import demo  # pylint: disable=g-import-not-at-top
  vids = list(synthetic.generate("test", 3, num_frames=5, size=16))
  train = list(synthetic.generate("train", 3, num_frames=5, size=16))
  assert not any(np.array_equal(train[0].frames, v.frames[::-1]) for v in train[1:])
  n = len(synthetic.classes())
  for k in range(3):
    for c in range(0, n, 2):
      a, b = vids[k * n + c], vids[k * n + c + 1]
      assert (a.label, b.label) == (c, c + 1) and b.motion == synthetic.MOTIONS[(c + 1) % 6]
      np.testing.assert_array_equal(b.frames, a.frames[::-1])
      np.testing.assert_array_equal(b.centres, a.centres[::-1])
  mean = lambda v: v.frames.astype(np.float64).mean(0).ravel()
  protos = np.stack([np.mean([mean(v) for v in train if v.label == c], 0) for c in range(n)])
  confusion = np.zeros((n, n))
  for v in vids:
    confusion[v.label, np.argmin(((protos - mean(v)) ** 2).sum(1))] += 1
  scores = demo.motion_scores(confusion)
  for axis, acc in scores["direction_accuracy_per_axis"].items():
    assert acc == 0.5, (axis, acc)


def test_synthetic_sequences_are_two_motions_in_turn_with_reverse_pairs(tmp_path):
  """The multi-label kind: a shape does one motion, then one of another axis, labelled
  with both classes (one colour); in the test split every second video is the one before
  played backwards, labelled with the reversed motions; the records carry both labels and
  the pipeline makes them multi-hot."""
  vids = list(synthetic.generate_sequences("test", 2, num_frames=8, size=16))
  assert len(vids) == 9 * 2
  names = synthetic.classes()
  for a, b in zip(vids[::2], vids[1::2]):
    assert len(a.labels) == 2 and len({synthetic.class_parts(c)[0] for c in a.labels}) == 1
    axes = [(c % 6) // 2 for c in a.labels]
    assert axes[0] != axes[1]
    np.testing.assert_array_equal(b.frames, a.frames[::-1])
    assert [c % 6 for c in b.labels] == [(c % 6) ^ 1 for c in a.labels[::-1]]
  v = vids[0]
  first, second = v.labels
  for c, (t0, t1) in ((first, (0, 3)), (second, (4, 7))):  # where each step moves
    m = c % 6
    if m < 4:  # left/right: x; top/bottom: y; towards smaller coordinates for even m
      delta = v.centres[t1, m // 2] - v.centres[t0, m // 2]
      assert (delta < -0.1) if m % 2 == 0 else (delta > 0.1), (names[c], delta)
    else:
      delta = v.radii[t1] - v.radii[t0]
      assert (delta > 0.1) if m == 4 else (delta < -0.1), (names[c], delta)
  assert (v.centres > 0.2).all() and (v.centres < 0.8).all()
  man = synthetic.write(str(tmp_path), {"test": 2}, num_frames=8, size=16, kind="sequences")
  assert man["kind"] == "sequences" and man["splits"]["test"]["videos"] == 18
  assert synthetic.written_as(str(tmp_path), {"test": 2}, 8, 16, 0, "sequences")
  assert not synthetic.written_as(str(tmp_path), {"test": 2}, 8, 16, 0, "actions")
  src = records.RecordSource(str(tmp_path / "test*"))
  assert sorted(records.as_record(src[0]).labels) == sorted(vids[0].labels)
  batch = next(iter(pipeline.eval_dataset(src, _cfg(num_classes=18, eval_batch_size=4,
                                                   multi_label=True))))
  assert batch["label"].shape == (4, 18) and (batch["label"].sum(1) == 2).all()
