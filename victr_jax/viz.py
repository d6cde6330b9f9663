"""Pictures people look at: VicTR's per-frame affinities of class and auxiliary text, and
training curves from metrics.jsonl. matplotlib (Agg), written as PNG."""
import io
import json

import numpy as np

from data_pipelines import gpath


def _figure(width, height):
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(width, height), dpi=110)
  FigureCanvasAgg(fig)
  return fig


def _save(fig, path):
  """The figure as PNG, written whole (local or gs://)."""
  buf = io.BytesIO()
  fig.savefig(buf, format="png")
  gpath.atomic_write(path, buf.getvalue())


def plot_affinities(affinities, prompts, path, video_index=0, title=""):
  """affinities (L+1, B, T, J) from a VicTR forward pass; prompts: the J texts (class
  prompts, then auxiliary). One panel per stage (initial affinity, then each layer's
  re-weighting): text x time heat maps, as in the paper's qualitative figure."""
  a = np.asarray(affinities, np.float32)[:, video_index]  # (L+1, T, J)
  stages, t, j = a.shape
  fig = _figure(3.2 * stages + 1.5, 0.22 * j + 1.6)
  for s in range(stages):
    ax = fig.add_subplot(1, stages, s + 1)
    im = ax.imshow(a[s].T, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_title("initial affinity" if s == 0 else f"layer {s} re-weighting", fontsize=8)
    ax.set_xlabel("frame", fontsize=7)
    ax.set_xticks(range(t))
    ax.tick_params(labelsize=6)
    if s == 0:
      ax.set_yticks(range(j))
      ax.set_yticklabels([p[:40] for p in prompts], fontsize=6)
    else:
      ax.set_yticks([])
    fig.colorbar(im, ax=ax, fraction=0.05)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  _save(fig, path)
  return path


def _read_metrics(metrics_jsonl):
  return [json.loads(l) for l in gpath.read_text(metrics_jsonl).splitlines() if l.strip()]


def _series(rows, key):
  """(step, value) points of one metric."""
  return [(r["step"], r[key]) for r in rows if key in r]


def plot_curves(metrics_jsonl, path, keys=("train/loss", "train/top1")):
  """Training curves from a work directory's metrics.jsonl."""
  rows = _read_metrics(metrics_jsonl)
  fig = _figure(4 * len(keys), 3)
  for i, k in enumerate(keys):
    ax = fig.add_subplot(1, len(keys), i + 1)
    pts = _series(rows, k)
    if pts:
      ax.plot(*zip(*pts), marker=".")
    evals = sorted({kk for r in rows for kk in r if kk.startswith("eval/") and kk.endswith("/top1")})
    if k.endswith("top1"):
      for e in evals:
        ax.plot(*zip(*_series(rows, e)), marker="o", label=e)
      if evals:
        ax.legend(fontsize=6)
    ax.set_title(k, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
  fig.tight_layout()
  _save(fig, path)
  return path


def plot_loss_curves(runs, path, key="train/loss"):
  """One curve per run: runs maps a name to its metrics.jsonl."""
  fig = _figure(5, 3.2)
  ax = fig.add_subplot(1, 1, 1)
  for name, metrics_jsonl in runs.items():
    pts = _series(_read_metrics(metrics_jsonl), key)
    if pts:
      ax.plot(*zip(*pts), marker=".", label=name)
  ax.set_xlabel("step", fontsize=8)
  ax.set_title(key, fontsize=9)
  ax.legend(fontsize=6)
  fig.tight_layout()
  _save(fig, path)
  return path
