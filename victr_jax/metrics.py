"""Classification metrics for video models, designed the scenic way.

In-jit metrics (`topk_correct`, the train step's accuracy) return integer *sums and
counts*, never per-batch means, so they add up exactly over batches and devices; the
evaluation (`victr_jax/evaluate.py`) gathers per-video scores to every host and feeds
`ClassificationAccumulator`, which keeps counts too. Padded examples are excluded by a
0/1 mask. Shapes: B batch, V test views (clips x crops), C classes.

Ranking convention (used everywhere, in jnp and numpy alike, so they agree exactly):
the rank of class c in a row of scores s is
  #{j : s_j > s_c} + #{j < c : s_j == s_c},
i.e. the position of c in a stable descending sort, ties broken towards the lower class
index (what `argmax` and `jax.lax.top_k` do). Class c is in the top-k iff rank < k, so
top-k with k >= C is always correct (top-5 with fewer than 5 classes is top-C). A row with
any non-finite score (NaN or inf: a diverged or damaged model) is never correct: it misses
every top-k, counts against its class's accuracy, stays out of the confusion matrix, and
is counted in `ClassificationAccumulator.nonfinite`.

Average precision (multi-label, the Charades mAP) is order independent: tied scores are
ranked together, so the precision at a positive with score s is
  #{positives with score >= s} / #{examples with score >= s},
and AP is the mean of that over the class's positives. This equals
`sklearn.metrics.average_precision_score` (what PySlowFast uses for Charades), and makes
merging per-host accumulators exact whatever the order of examples.
"""
import io
import json
import os
import shutil
import tempfile
import time
import weakref
from typing import Dict, Iterable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import gpath

VIEW_AGGREGATIONS = ("mean_probs", "mean_logits", "mean_sigmoid", "max")


# View aggregation ------------------------------------------------------------------------


def aggregate_views(logits, how: str = "mean_probs"):
  """Combines the scores of V test views of each video: (B, V, C) -> (B, C).

  how:
    'mean_probs' (default; alias 'mean'): mean over views of softmax probabilities, as
      X-CLIP and ViFi-CLIP do (per-view similarity logits -> softmax -> mean).
    'mean_logits': mean over views of the raw logits (returns logits).
    'mean_sigmoid': mean over views of sigmoid probabilities (multi-label).
    'max': max over views of sigmoid probabilities, = sigmoid(max logits) (multi-label).
  Usable inside jit (`how` must be static). Returns a jax array.
  """
  logits = jnp.asarray(logits)
  if logits.ndim != 3:
    raise ValueError(f"aggregate_views expects (B, V, C) logits, got {logits.shape}")
  how = "mean_probs" if how == "mean" else how
  if how == "mean_probs":
    return jax.nn.softmax(logits, axis=-1).mean(axis=1)
  if how == "mean_logits":
    return logits.mean(axis=1)
  if how == "mean_sigmoid":
    return jax.nn.sigmoid(logits).mean(axis=1)
  if how == "max":
    return jax.nn.sigmoid(logits.max(axis=1))
  raise ValueError(f"unknown view aggregation {how!r}; expected one of {VIEW_AGGREGATIONS}")


# In-jit per-batch sums -------------------------------------------------------------------


def _label_rank(xp, scores, labels):
  """Rank of each row's label among its scores (see module docstring): (B, C), (B,) -> (B,).

  `xp` is numpy or jax.numpy; labels are clipped into [0, C) so padding labels are safe.
  """
  num_classes = scores.shape[-1]
  labels = xp.clip(labels, 0, num_classes - 1)
  s_y = xp.take_along_axis(scores, labels[:, None], axis=-1)
  before = xp.arange(num_classes)[None, :] < labels[:, None]
  return ((scores > s_y) | ((scores == s_y) & before)).sum(axis=-1)


def topk_correct(logits, labels, k: int, mask=None) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """Single-label top-k hits as (sum, count), int32 scalars; usable inside jit.

  logits: (B, C) scores (logits or probabilities; only the order matters).
  labels: (B,) int class indices (any value where mask is 0).
  k: python int (static); k >= C counts every unmasked row as correct.
  mask: (B,) 1 for real examples, 0 for padding; None means all real.
  Accuracy = sum(sums) / sum(counts) over batches.
  """
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  valid = jnp.ones(labels.shape, bool) if mask is None else jnp.asarray(mask) > 0
  finite = jnp.isfinite(logits).all(axis=-1)
  hit = (_label_rank(jnp, logits, labels) < k) & valid & finite
  return hit.sum(dtype=jnp.int32), valid.sum(dtype=jnp.int32)


# Host-side accumulator -------------------------------------------------------------------


def _ranks(scores: np.ndarray) -> np.ndarray:
  """Rank of every class in every row (stable descending, ties to lower index): (N, C)."""
  order = np.argsort(-scores, axis=-1, kind="stable")
  ranks = np.empty_like(order)
  np.put_along_axis(ranks, order, np.arange(scores.shape[-1])[None, :], axis=-1)
  return ranks


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
  """AP of one class: scores (N,), positives (N,) bool -> float (nan if no positive).

  Mean over positives of precision at the positive's score, tied scores ranked together
  (module docstring); equals sklearn's average_precision_score.
  """
  positives = np.asarray(positives, bool)
  if not positives.any():
    return float("nan")
  order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
  s, y = -np.asarray(scores, np.float64)[order], positives[order]
  # Index of the last member of each example's tie group: all with score >= its score.
  last = np.searchsorted(s, s, side="right") - 1
  precision = np.cumsum(y)[last] / (last + 1)
  return float(precision[y].mean())


def _ratio(num, den) -> float:
  """num / den as a python float, nan when den is 0."""
  return float(num) / float(den) if den else float("nan")


class ClassificationAccumulator:
  """Accumulates host-side (numpy) predictions for a whole evaluation.

  Single-label: keeps a C x C confusion matrix (rows true class, columns argmax) and
  top-k hit counts only, so memory does not grow with the data set.
  Multi-label: keeps all unmasked scores and multi-hot labels (needed for mAP).
  Combine per-host accumulators with `merge`; read with `result`.
  """

  def __init__(self, num_classes: int, multi_label: bool = False,
               topk: Sequence[int] = (1, 5)):
    """num_classes: C; multi_label: labels are (B, C) multi-hot; topk: reported k's."""
    self.num_classes, self.multi_label, self.topk = int(num_classes), multi_label, tuple(topk)
    self.num_examples = 0
    self.confusion = None if multi_label else np.zeros((num_classes,) * 2, np.int64)
    self.topk_hits = {k: 0 for k in self.topk}
    self.nonfinite = np.zeros((num_classes,), np.int64)  # per true class (multi-label: any)
    self._scores, self._labels = [], []

  def update(self, scores, labels, mask=None) -> None:
    """Adds a batch. scores (B, C); labels (B,) int or (B, C) multi-hot; mask (B,) 0/1.

    Rows with mask 0 are ignored entirely (their labels may be anything, e.g. -1).
    """
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 2 or scores.shape[1] != self.num_classes:
      raise ValueError(f"scores must be (B, {self.num_classes}), got {scores.shape}")
    valid = np.ones(len(scores), bool) if mask is None else np.asarray(mask).reshape(-1) > 0
    if len(labels) != len(scores) or len(valid) != len(scores):
      raise ValueError("scores, labels and mask must have the same batch size")
    scores, labels = scores[valid], labels[valid]
    if self.multi_label:
      self._update_multi_label(scores, labels)
    else:
      self._update_single_label(scores, labels)
    self.num_examples += len(scores)

  def _update_single_label(self, scores: np.ndarray, labels: np.ndarray) -> None:
    """Confusion and top-k counts for unmasked rows: (N, C), (N,) int. Rows with a
    non-finite score count only in `nonfinite` (never correct)."""
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
      raise ValueError(f"single-label labels must be (B,) ints, got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
      raise ValueError("single-label labels out of range [0, num_classes)")
    finite = np.isfinite(scores).all(axis=-1)
    np.add.at(self.nonfinite, labels[~finite], 1)
    scores, labels = scores[finite], labels[finite]
    np.add.at(self.confusion, (labels, scores.argmax(axis=-1)), 1)
    rank = _label_rank(np, scores, labels)
    for k in self.topk:
      self.topk_hits[k] += int((rank < k).sum())

  def _update_multi_label(self, scores: np.ndarray, labels: np.ndarray) -> None:
    """Stores unmasked rows: (N, C) scores, (N, C) multi-hot labels. A row with a
    non-finite score is stored with every score -inf: it is never a hit, and for mAP its
    positives rank below every finite score (tied last)."""
    if labels.shape != scores.shape:
      raise ValueError(f"multi-label labels must be (B, C) multi-hot, got {labels.shape}")
    bad = ~np.isfinite(scores).all(axis=-1)
    if bad.any():
      scores = scores.copy()
      scores[bad] = -np.inf
      self.nonfinite[0] += int(bad.sum())
    self._scores.append(scores)
    self._labels.append(labels > 0)

  def merge(self, other: "ClassificationAccumulator") -> "ClassificationAccumulator":
    """Adds `other`'s examples to this accumulator (in place); returns self."""
    if (other.num_classes, other.multi_label, other.topk) != (
        self.num_classes, self.multi_label, self.topk):
      raise ValueError("cannot merge accumulators with different settings")
    self.num_examples += other.num_examples
    self.nonfinite += other.nonfinite
    if self.multi_label:
      self._scores += other._scores
      self._labels += other._labels
    else:
      self.confusion += other.confusion
      for k in self.topk:
        self.topk_hits[k] += other.topk_hits[k]
    return self

  def arrays(self) -> Tuple[np.ndarray, np.ndarray]:
    """Multi-label only: all stored (N, C) float64 scores and (N, C) bool labels."""
    c = self.num_classes
    if not self._scores:
      return np.zeros((0, c)), np.zeros((0, c), bool)
    return np.concatenate(self._scores), np.concatenate(self._labels)

  def result(self) -> Dict[str, float]:
    """Python floats: 'top{k}' (e.g. top1, top5), 'mean_class_accuracy', 'num_examples'
    and, multi-label, 'mAP'. Undefined values (nothing to average) are nan."""
    if self.multi_label:
      return self._multi_label_result()
    n, rows = self.num_examples, self.confusion.sum(axis=1) + self.nonfinite
    out = {f"top{k}": _ratio(self.topk_hits[k], n) for k in self.topk}
    present = rows > 0
    recall = np.diag(self.confusion)[present] / rows[present]
    out["mean_class_accuracy"] = float(recall.mean()) if present.any() else float("nan")
    out["num_examples"] = float(n)
    return out

  def _multi_label_result(self) -> Dict[str, float]:
    """Multi-label metrics (all over unmasked rows):

    top{k}: hit@k, a positive among the top k, over rows with at least one positive.
    mean_class_accuracy: per class c with positives, the fraction of its positive rows
      where c ranks within the row's top |positives| (top-1 recall when single-label),
      averaged over those classes.
    mAP: per-class AP over all rows, averaged over classes with at least one positive.
    """
    scores, labels = self.arrays()
    ranks = _ranks(scores)
    has_pos = labels.any(axis=1)
    finite = np.isfinite(scores).all(axis=1)  # rows stored as -inf: never a hit
    out = {}
    for k in self.topk:
      hit = ((ranks < k) & labels).any(axis=1) & finite
      out[f"top{k}"] = _ratio(hit[has_pos].sum(), has_pos.sum())
    found = (ranks < labels.sum(axis=1, keepdims=True)) & labels & finite[:, None]
    present = labels.any(axis=0)
    recall = found.sum(axis=0)[present] / labels.sum(axis=0)[present]
    out["mean_class_accuracy"] = float(recall.mean()) if present.any() else float("nan")
    aps = [average_precision(scores[:, c], labels[:, c]) for c in np.flatnonzero(present)]
    out["mAP"] = float(np.mean(aps)) if aps else float("nan")
    out["num_examples"] = float(self.num_examples)
    return out


# Protocol summaries ----------------------------------------------------------------------


def mean_std(values: Iterable[float]):
  """Mean and *sample* std (ddof=1; 0 for one value) over the first axis: the project's
  one convention for every ± (splits, seeds), always reported with n = len(values).
  Scalars in, floats out (3 splits -> (m, s)); rows in, arrays out (elementwise)."""
  v = np.asarray(list(values), np.float64)
  if v.size == 0:
    raise ValueError("mean_std of no values")
  std = v.std(0, ddof=1) if len(v) > 1 else np.zeros_like(v[0])
  if v.ndim == 1:
    return float(v.mean()), float(std)
  return v.mean(0), std


def harmonic_mean(a: float, b: float) -> float:
  """2ab / (a + b), e.g. base-to-novel HM of base and novel accuracy; 0 when a + b == 0."""
  a, b = float(a), float(b)
  return 2.0 * a * b / (a + b) if a + b else 0.0


def write_scalars(writer, jsonl_path: str, step: int, scalars: dict) -> None:
  """Writes scalars to a clu metric writer (None: skipped) and appends them as one JSON
  line {"step": step, **scalars} to `jsonl_path` (what the demo and viz read)."""
  if writer is not None:
    writer.write_scalars(int(step), scalars)
  gpath.append_text(jsonl_path, json.dumps({"step": int(step), **scalars}) + "\n")


def create_writer(workdir: str, just_logging: bool = False):
  """clu's default metric writer (logging, and TensorBoard files in `workdir`). For a
  remote workdir the TensorBoard files are written locally and uploaded (`MirroredWriter`)."""
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  if just_logging or not gpath.is_remote(workdir):
    return metric_writers.create_default_writer(workdir, just_logging=just_logging)
  return MirroredWriter(workdir)


class MirroredWriter:
  """A clu metric writer whose TensorBoard files go to a local staging folder and are
  uploaded to `remote_dir` through gpath on flush() and close(), and after a write when
  `every_s` seconds have passed since the last upload. tf.summary would write gs:// through
  TensorFlow's own GCS client, which has no emulator setting (see data_pipelines/gpath.py)."""

  def __init__(self, remote_dir: str, every_s: float = 60.0):
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
    self.remote, self.every_s = remote_dir.rstrip("/"), every_s
    self.local = tempfile.mkdtemp(prefix="victr-tensorboard-")
    weakref.finalize(self, shutil.rmtree, self.local, True)
    self.inner = metric_writers.create_default_writer(self.local)
    self._uploaded = time.time()

  def __getattr__(self, name):  # write_images, write_texts, ...: the inner writer's
    return getattr(self.inner, name)

  def write_scalars(self, step: int, scalars) -> None:
    self.inner.write_scalars(step, scalars)
    if time.time() - self._uploaded > self.every_s:
      self.flush()

  def _upload(self) -> None:
    for root, _, names in os.walk(self.local):
      for name in names:
        rel = os.path.relpath(os.path.join(root, name), self.local)
        gpath.upload(os.path.join(root, name), f"{self.remote}/{rel}")
    self._uploaded = time.time()

  def flush(self) -> None:
    self.inner.flush()
    self._upload()

  def close(self) -> None:
    self.inner.close()
    self._upload()


# Confusion matrix picture ----------------------------------------------------------------

LABELLED_CLASSES = 60  # above: class indices on the axes, a fixed-size picture


def plot_confusion(matrix, class_names: Optional[Sequence[str]], path: str,
                   normalize: bool = True, title: Optional[str] = None) -> str:
  """Writes a PNG of a (C, C) confusion matrix (rows true, columns predicted); returns path.

  normalize: divide each row by its sum (per-class recall; empty rows stay 0).
  Up to LABELLED_CLASSES classes every row and column carries its class name (fonts shrink
  with C, column labels rotated; cell values printed for C <= 20). Above that the names
  could not be read anyway: the picture keeps a fixed size (1440 px) with class indices on
  the axes, so that 400 or 600 classes draw in about the time of 60. Uses the Agg canvas
  directly (no global backend change).
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  m = np.asarray(matrix, np.float64)
  c = m.shape[0]
  if m.shape != (c, c):
    raise ValueError(f"confusion matrix must be square, got {m.shape}")
  names = [str(i) for i in range(c)] if class_names is None else [str(s) for s in class_names]
  if len(names) != c:
    raise ValueError(f"{len(names)} class names for {c} classes")
  if normalize:
    rows = m.sum(axis=1, keepdims=True)
    m = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
  labelled = c <= LABELLED_CLASSES
  size = max(6.0, 0.2 * c + 3.0) if labelled else 12.0
  font = max(4.0, min(10.0, 300.0 / max(c, 1))) if labelled else 8.0
  fig = Figure(figsize=(size, size), dpi=120)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  im = ax.imshow(m, cmap="Blues", interpolation="nearest", vmin=0.0,
                 vmax=1.0 if normalize else max(m.max(), 1.0))
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=font)
  if labelled:
    ax.set_xticks(np.arange(c))
    ax.set_yticks(np.arange(c))
    ax.set_xticklabels(names, rotation=90, fontsize=font)
    ax.set_yticklabels(names, fontsize=font)
  else:  # class indices (the order of the eval set's class list)
    ax.tick_params(labelsize=font)
  ax.set_xlabel("predicted" + ("" if labelled else " (class index)"), fontsize=font + 2)
  ax.set_ylabel("true" + ("" if labelled else " (class index)"), fontsize=font + 2)
  if title:
    ax.set_title(title, fontsize=font + 3)
  if c <= 20:
    for i, j in np.ndindex(c, c):
      text = f"{m[i, j]:.2f}" if normalize else f"{int(m[i, j])}"
      ax.text(j, i, text, ha="center", va="center", fontsize=font - 1,
              color="white" if m[i, j] > 0.5 * (im.norm.vmax or 1) else "black")
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png")
  gpath.atomic_write(path, buf.getvalue())
  return path


def summarize_groups(results: dict, multi_label: bool = False) -> dict:
  """Per protocol group (eval sets sharing `group`): mean, sample std and n of the headline
  metric (top1, or mAP for multi-label) over its sets; with groups 'base' and 'novel', also
  their harmonic mean (base-to-novel)."""
  key = "mAP" if multi_label else "top1"
  groups: dict[str, list] = {}
  for name, r in results.items():
    groups.setdefault(r.get("group") or name, []).append((name, r[key]))
  out = {}
  for g, items in groups.items():
    mean, std = mean_std([v for _, v in items])
    out[g] = {"metric": key, "mean": mean, "std": std, "n": len(items),
              "sets": [n for n, _ in items]}
  if "base" in out and "novel" in out:
    out["harmonic_mean"] = harmonic_mean(out["base"]["mean"], out["novel"]["mean"])
  return out
