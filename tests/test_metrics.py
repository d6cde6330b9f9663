"""Classification metrics (victr_jax/metrics.py) against brute-force numpy/python."""
import functools
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from victr_jax import metrics as M


# Brute-force references (plain python loops, independent of the module) ------------------


def _rank_list(row):
  """Classes of one row, best first; ties to the lower index (python's stable sort)."""
  return sorted(range(len(row)), key=lambda j: -float(row[j]))


def _bf_single(scores, labels, mask, num_classes):
  """top1, top5, mean class accuracy, confusion, n by python loops over unmasked rows."""
  conf = [[0] * num_classes for _ in range(num_classes)]
  top1 = top5 = n = 0
  for row, y, m in zip(scores, labels, mask):
    if not m:
      continue
    order = _rank_list(row)
    n += 1
    top1 += order[0] == y
    top5 += y in order[:5]
    conf[y][order[0]] += 1
  recalls = [conf[c][c] / sum(conf[c]) for c in range(num_classes) if sum(conf[c])]
  return top1 / n, top5 / n, sum(recalls) / len(recalls), np.array(conf), n


def _bf_ap(scores, positives):
  """AP by definition: mean over positives of #pos(score >= s) / #all(score >= s)."""
  precisions = []
  for s, p in zip(scores, positives):
    if p:
      above = [q for t, q in zip(scores, positives) if t >= s]
      precisions.append(sum(above) / len(above))
  return sum(precisions) / len(precisions)


def _bf_multi(scores, labels):
  """hit@1, hit@5, mean class accuracy (top-|y| recall) and mAP by python loops."""
  num_classes = len(labels[0])
  hit1 = hit5 = rows = 0
  found, total = [0] * num_classes, [0] * num_classes
  for row, y in zip(scores, labels):
    pos = [c for c in range(num_classes) if y[c]]
    if not pos:
      continue
    order = _rank_list(row)
    rows += 1
    hit1 += any(c in order[:1] for c in pos)
    hit5 += any(c in order[:5] for c in pos)
    for c in pos:
      total[c] += 1
      found[c] += c in order[:len(pos)]
  present = [c for c in range(num_classes) if total[c]]
  mca = sum(found[c] / total[c] for c in present) / len(present)
  aps = [_bf_ap([r[c] for r in scores], [bool(y[c]) for y in labels]) for c in present]
  return hit1 / rows, hit5 / rows, mca, sum(aps) / len(aps)


def _single_batch(rng, n=64, c=10, ties=True):
  """Scores (integer-valued when `ties`, to force many ties), labels, mask with padding."""
  scores = rng.integers(0, 4, (n, c)).astype(np.float32) if ties else rng.normal(size=(n, c))
  labels = rng.integers(0, c, n)
  mask = (rng.random(n) > 0.25).astype(np.int32)
  labels[mask == 0] = -1  # padding labels are garbage and must be ignored
  return scores, labels, mask


def _multi_batch(rng, n=40, c=12):
  """Rounded scores (ties), multi-hot labels with some empty rows and an absent class."""
  scores = np.round(rng.random((n, c)), 1)
  labels = (rng.random((n, c)) < 0.2).astype(np.int32)
  labels[:, 3] = 0  # a class without positives: excluded from mAP / mean class accuracy
  labels[:3] = 0  # rows without positives: negatives for mAP, no top-k target
  return scores, labels


# View aggregation ------------------------------------------------------------------------


def test_aggregate_views(rng):
  x = rng.normal(size=(3, 4, 5)).astype(np.float32)
  soft = np.exp(x) / np.exp(x).sum(-1, keepdims=True)
  sig = 1 / (1 + np.exp(-x))
  want = {"mean_probs": soft.mean(1), "mean": soft.mean(1), "mean_logits": x.mean(1),
          "mean_sigmoid": sig.mean(1), "max": sig.max(1)}
  for how, ref in want.items():
    got = M.aggregate_views(x, how)
    assert got.shape == (3, 5)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-6)
  assert np.allclose(M.aggregate_views(x), soft.mean(1), atol=1e-6)  # default: mean_probs
  jitted = jax.jit(M.aggregate_views, static_argnames="how")
  np.testing.assert_allclose(np.asarray(jitted(x, how="mean_probs")), soft.mean(1), atol=1e-6)
  with pytest.raises(ValueError):
    M.aggregate_views(x, "median")
  with pytest.raises(ValueError):
    M.aggregate_views(x[:, 0])


# In-jit top-k ----------------------------------------------------------------------------


@pytest.mark.parametrize("ties", [True, False])
def test_topk_correct_jit_matches_bruteforce_and_accumulator(rng, ties):
  scores, labels, mask = _single_batch(rng, ties=ties)
  top1, top5, _, _, n = _bf_single(scores, labels, mask, 10)
  fn = jax.jit(M.topk_correct, static_argnames="k")
  acc = M.ClassificationAccumulator(10)
  acc.update(scores, labels, mask)
  res = acc.result()
  for k, ref in [(1, top1), (5, top5)]:
    hits, count = fn(scores, labels, k=k, mask=mask)
    assert hits.dtype == jnp.int32 and int(count) == n
    assert int(hits) == round(ref * n)
    assert int(hits) / int(count) == res[f"top{k}"]
  hits, count = M.topk_correct(scores, labels, 10, mask)  # k >= C: all correct
  assert int(hits) == int(count) == n
  hits, count = M.topk_correct(scores, np.clip(labels, 0, None), 1)  # no mask: all rows
  assert int(count) == len(labels)


def test_topk_correct_ties_go_to_lower_index():
  logits = np.array([[1., 2., 2., 0.], [1., 2., 2., 0.]])
  hits, _ = M.topk_correct(logits, np.array([1, 2]), 1)
  assert int(hits) == 1  # argmax convention: the tie goes to class 1
  assert int(M.topk_correct(logits, np.array([1, 2]), 2)[0]) == 2


def test_topk_sums_add_up_across_devices(rng):
  n_dev = jax.local_device_count()
  scores, labels, mask = _single_batch(rng, n=8 * n_dev)
  top1, _, _, _, n = _bf_single(scores, labels, mask, 10)

  @functools.partial(jax.pmap, axis_name="d")
  def step(s, y, m):
    hits, count = M.topk_correct(s, y, 1, m)
    return jax.lax.psum(hits, "d"), jax.lax.psum(count, "d")

  shard = lambda a: a.reshape(n_dev, -1, *a.shape[1:])
  hits, count = step(shard(scores), shard(labels), shard(mask))
  assert int(count[0]) == n and int(hits[0]) == round(top1 * n)


# Single-label accumulator ----------------------------------------------------------------


@pytest.mark.parametrize("ties", [True, False])
def test_single_label_accumulator_bruteforce(rng, ties):
  scores, labels, mask = _single_batch(rng, n=90, ties=ties)
  top1, top5, mca, conf, n = _bf_single(scores, labels, mask, 10)
  acc = M.ClassificationAccumulator(10)
  for i in range(0, 90, 32):  # several batches, the last one short
    acc.update(scores[i:i + 32], labels[i:i + 32], mask[i:i + 32])
  res = acc.result()
  assert set(res) == {"top1", "top5", "mean_class_accuracy", "num_examples"}
  assert all(type(v) is float for v in res.values())
  assert res["num_examples"] == n == mask.sum()
  assert res["top1"] == pytest.approx(top1) and res["top5"] == pytest.approx(top5)
  assert res["mean_class_accuracy"] == pytest.approx(mca)
  np.testing.assert_array_equal(acc.confusion, conf)
  assert acc.confusion.sum() == n
  np.testing.assert_array_equal(acc.confusion.sum(1), np.bincount(labels[mask > 0], minlength=10))


def test_mask_excludes_rows_entirely(rng):
  scores, labels, mask = _single_batch(rng)
  keep = mask > 0
  a, b = M.ClassificationAccumulator(10), M.ClassificationAccumulator(10)
  a.update(scores, labels, mask)
  b.update(scores[keep], labels[keep])
  assert a.result() == b.result()
  np.testing.assert_array_equal(a.confusion, b.confusion)


def test_mean_class_accuracy_hand_example():
  # class 0: 2/2 right, class 1: 1/4 right, class 2 absent -> (1 + 0.25) / 2; top1 = 3/6
  scores = np.eye(3)[[0, 0, 1, 0, 0, 2]]
  acc = M.ClassificationAccumulator(3)
  acc.update(scores, np.array([0, 0, 1, 1, 1, 1]))
  res = acc.result()
  assert res["mean_class_accuracy"] == 0.625 and res["top1"] == 0.5
  assert res["top5"] == 1.0  # fewer than 5 classes: top-C
  np.testing.assert_array_equal(acc.confusion, [[2, 0, 0], [2, 1, 1], [0, 0, 0]])


def test_merge_equals_concatenation(rng):
  s1, y1, m1 = _single_batch(rng)
  s2, y2, m2 = _single_batch(rng, n=33)
  a, b, whole = (M.ClassificationAccumulator(10) for _ in range(3))
  a.update(s1, y1, m1)
  b.update(s2, y2, m2)
  whole.update(np.concatenate([s1, s2]), np.concatenate([y1, y2]), np.concatenate([m1, m2]))
  assert a.merge(b).result() == whole.result()
  np.testing.assert_array_equal(a.confusion, whole.confusion)
  with pytest.raises(ValueError):
    a.merge(M.ClassificationAccumulator(10, multi_label=True))


def test_empty_and_bad_inputs():
  acc = M.ClassificationAccumulator(4)
  res = acc.result()
  assert res["num_examples"] == 0.0 and np.isnan(res["top1"])
  with pytest.raises(ValueError):
    acc.update(np.zeros((2, 4)), np.array([0, 4]))
  with pytest.raises(ValueError):
    acc.update(np.zeros((2, 3)), np.array([0, 1]))


# Multi-label accumulator -----------------------------------------------------------------


def test_average_precision_hand_worked():
  # sklearn docs example: y=[0,0,1,1], s=[.1,.4,.35,.8] -> (1/1 + 2/3) / 2
  assert M.average_precision(np.array([.1, .4, .35, .8]), np.array([0, 0, 1, 1])) == \
      pytest.approx(5 / 6)
  # ranks 1..5, positives at ranks 1, 3, 5 -> (1 + 2/3 + 3/5) / 3
  assert M.average_precision(np.array([5., 4, 3, 2, 1]), np.array([1, 0, 1, 0, 1])) == \
      pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
  # a tie between a positive and a negative counts both: precision 1/2, in any order
  assert M.average_precision(np.array([.5, .5]), np.array([1, 0])) == 0.5
  assert M.average_precision(np.array([.5, .5]), np.array([0, 1])) == 0.5
  assert np.isnan(M.average_precision(np.array([.5, .2]), np.array([0, 0])))


def test_map_hand_worked():
  # class 0 AP 5/6, class 1 AP 1 (positive ranked first), class 2 no positives: excluded
  scores = np.array([[.1, .9, .0], [.4, .2, .5], [.35, .1, .1], [.8, .3, .2]])
  labels = np.array([[0, 1, 0], [0, 0, 0], [1, 0, 0], [1, 0, 0]])
  acc = M.ClassificationAccumulator(3, multi_label=True)
  acc.update(scores, labels)
  res = acc.result()
  assert res["mAP"] == pytest.approx((5 / 6 + 1) / 2)
  # hit@1 over rows with positives: row0 yes (1), row2 yes (0), row3 yes (0) -> 1
  assert res["top1"] == 1.0 and res["num_examples"] == 4.0


def test_multi_label_accumulator_bruteforce(rng):
  scores, labels = _multi_batch(rng)
  mask = np.ones(len(scores), np.int32)
  mask[-5:] = 0
  acc = M.ClassificationAccumulator(12, multi_label=True)
  acc.update(scores[:20], labels[:20], mask[:20])
  acc.update(scores[20:], labels[20:], mask[20:])
  hit1, hit5, mca, mean_ap = _bf_multi(scores[:-5].tolist(), labels[:-5].tolist())
  res = acc.result()
  assert set(res) == {"top1", "top5", "mean_class_accuracy", "mAP", "num_examples"}
  assert all(type(v) is float for v in res.values())
  assert res["num_examples"] == 35.0
  assert res["top1"] == pytest.approx(hit1) and res["top5"] == pytest.approx(hit5)
  assert res["mean_class_accuracy"] == pytest.approx(mca)
  assert res["mAP"] == pytest.approx(mean_ap)
  try:
    from sklearn.metrics import average_precision_score
  except ImportError:
    return
  s, y = scores[:-5], labels[:-5]
  present = y.any(0)
  ref = average_precision_score(y[:, present], s[:, present], average="macro")
  assert res["mAP"] == pytest.approx(ref)


def test_multi_label_merge_is_order_independent(rng):
  scores, labels = _multi_batch(rng)
  a, b, whole = (M.ClassificationAccumulator(12, multi_label=True) for _ in range(3))
  a.update(scores[:17], labels[:17])
  b.update(scores[17:], labels[17:])
  whole.update(scores[::-1], labels[::-1])  # reversed order: ties must not matter
  merged, ref = b.merge(a).result(), whole.result()
  assert merged.keys() == ref.keys()
  for key in ref:
    assert merged[key] == pytest.approx(ref[key], abs=1e-12)


def test_multi_label_reduces_to_single_label(rng):
  scores, labels, _ = _single_batch(rng, n=50)
  labels = np.abs(labels)
  single, multi = M.ClassificationAccumulator(10), M.ClassificationAccumulator(10, True)
  single.update(scores, labels)
  multi.update(scores, np.eye(10, dtype=int)[labels])
  s, m = single.result(), multi.result()
  for key in s:
    assert m[key] == pytest.approx(s[key])


# Protocol summaries and picture ----------------------------------------------------------


def test_mean_std_and_harmonic_mean():
  mean, std = M.mean_std([70.0, 72.0, 74.0])
  assert mean == 72.0 and std == pytest.approx(2.0)  # sample std, ddof=1: sqrt(8 / 2)
  m, s = M.mean_std([[1.0, 10.0], [3.0, 10.0]])  # rows: elementwise over the first axis
  np.testing.assert_allclose(m, [2.0, 10.0])
  np.testing.assert_allclose(s, [np.sqrt(2), 0.0])
  assert M.mean_std(np.array([5.0])) == (5.0, 0.0)
  assert M.harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
  assert M.harmonic_mean(0.0, 0.0) == 0.0 and M.harmonic_mean(50, 50) == 50.0
  with pytest.raises(ValueError):
    M.mean_std([])


@pytest.mark.parametrize("num_classes", [5, 60, 400])
def test_plot_confusion_writes_png(tmp_path, rng, num_classes):
  """A PNG for any class count; past 60 classes (K400's 400) one of a fixed 1440 px."""
  conf = rng.integers(0, 20, (num_classes, num_classes))
  conf[1] = 0  # an empty row must not divide by zero
  names = [f"class name {i}" for i in range(num_classes)]
  path = str(tmp_path / "plots" / f"conf{num_classes}.png")
  assert M.plot_confusion(conf, names, path, normalize=num_classes > 5) == path
  data = open(path, "rb").read()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
  width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
  side = 120 * (max(6.0, 0.2 * num_classes + 3.0) if num_classes <= 60 else 12.0)
  assert (width, height) == (int(side), int(side))


# Non-finite scores -----------------------------------------------------------------------


def test_nonfinite_scores_are_never_counted_correct():
  """A NaN (or inf) row is wrong for every k, in jit and in the accumulator alike: NaN
  comparisons are all False, so the plain rank formula would call it rank 0, correct."""
  nan, inf = float("nan"), float("inf")
  scores = np.array([[nan, nan, nan],      # all NaN, label 0: would be rank 0
                     [0.1, nan, 0.3],      # NaN elsewhere
                     [inf, 0.0, 0.0],      # inf on the label
                     [0.1, 0.9, 0.0]])     # finite and correct
  labels = np.array([0, 0, 0, 1])
  hits, count = M.topk_correct(scores, labels, 1)
  assert (int(hits), int(count)) == (1, 4)
  assert int(M.topk_correct(scores, labels, 3)[0]) == 1  # k >= C: still wrong
  acc = M.ClassificationAccumulator(3, topk=(1, 3))
  acc.update(scores, labels)
  res = acc.result()
  assert res["top1"] == res["top3"] == pytest.approx(0.25)
  assert res["num_examples"] == 4.0
  assert res["mean_class_accuracy"] == pytest.approx(0.5)  # class 0: 0 of 3, class 1: 1 of 1
  assert acc.nonfinite.tolist() == [3, 0, 0]
  assert acc.confusion.sum() == 1
  multi = M.ClassificationAccumulator(3, multi_label=True)
  multi.update(scores, np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0]]))
  res = multi.result()
  assert res["top1"] == pytest.approx(0.25) and int(multi.nonfinite.sum()) == 3
  assert np.isfinite(res["mAP"]) and res["mAP"] < 1.0
