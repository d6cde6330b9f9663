"""Evaluation: every eval set of a config, over all test views, on any mesh and any number
of hosts.

  evaluator = Evaluator(config, progs, text, workdir, writer)   # progs: programs.build
  results = evaluator(params, step)   # also writes eval_results.json, metrics, pictures

For each set in `config.evals`: open its source, run the compiled eval step over batches
of (B, V, T, S, S, 3) views (the eval program of programs.py), gather labels and masks from every host, aggregate the views
of each video (mean of softmax probabilities, or of sigmoids for multi-label), accumulate
counts (`metrics.ClassificationAccumulator`), and summarise the protocol groups (mean and
std over splits, base-to-novel harmonic mean). Process 0 prints one line per set and
writes `eval_results.json`, the scalars (`metrics.jsonl`, TensorBoard) and a confusion
matrix picture per set (single-label, up to 200 classes).
"""
import json
import os
import time

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from data_pipelines import gpath, pipeline
from victr_jax import data, metrics

HEADLINE = ("top1", "top5", "mean_class_accuracy", "mAP")
MAX_CONFUSION_CLASSES = 200


def eval_data_config(dcfg, layout):
  """The data config evaluation reads with: eval_batch_size padded up to a multiple of the
  data x fsdp devices and the processes (padding is masked; every video counts once)."""
  e = dcfg.copy_and_resolve_references()
  e.eval_batch_size = pipeline.padded_eval_batch(
      dcfg.eval_batch_size, layout.batch_devices, jax.process_count())
  return e


class Evaluator:
  """Evaluates params on every set of `config.evals` (see the module docstring) with the
  eval program of `progs` (programs.build).

  text: the trainer's `train_state.Prompts` (the auxiliary prompts are shared with
  training; each eval set brings its own class prompts).
  """

  def __init__(self, config, progs, text, workdir: str, writer=None):
    self.config, self.progs, self.workdir = config, progs, workdir
    self.layout = progs.layout
    self.writer, self.host = writer, jax.process_index()
    self.multi_label = config.data.multi_label
    self.dcfg = eval_data_config(config.data, self.layout)
    self.text = text
    padded = self.dcfg.eval_batch_size
    if padded != config.data.eval_batch_size and self.host == 0 and config.evals:
      logging.info("data.eval_batch_size=%d padded to %d (%d data x fsdp devices, %d processes)",
                   config.data.eval_batch_size, padded, self.layout.batch_devices,
                   jax.process_count())

  def evaluate_set(self, params, name: str,
                   ecfg) -> tuple[dict, tuple[np.ndarray, list[str]] | None]:
    """(results of one eval set, (its confusion matrix, class names) or None)."""
    names = data.subset_names(ecfg)
    text = self.progs.put(self.text.with_classes(names, self.config.prompt_template))
    source = data.open_source(ecfg, self.config.data)
    stats = pipeline.Stats()
    acc = metrics.ClassificationAccumulator(len(names), multi_label=self.multi_label)
    how = self.config.get("view_aggregation", "") or (
        "mean_sigmoid" if self.multi_label else "mean_probs")
    t0 = time.time()
    dcfg = data.with_classes(self.dcfg, len(names))
    for batch in pipeline.eval_dataset(source, dcfg, self.host, jax.process_count(), stats):
      frames = pipeline.to_global({"f": batch["frames"]}, self.layout.batch)["f"]
      with self.layout.use():
        logits = np.asarray(self.progs.eval(params, frames, text))
      local = {k: batch[k] for k in ("label", "mask", "index", "corrupt")}
      if jax.process_count() > 1:
        local = {k: np.asarray(multihost_utils.process_allgather(v, tiled=True))
                 for k, v in local.items()}
      acc.update(np.asarray(metrics.aggregate_views(logits, how)), local["label"], local["mask"])
    res = acc.result()
    res.update(nonfinite_videos=int(acc.nonfinite.sum()), corrupt_videos=int(stats.corrupt),
               corrupt_where=stats.where[:20], group=ecfg.get("group", name),
               seconds=round(time.time() - t0, 1))
    picture = None
    if not self.multi_label and len(names) <= MAX_CONFUSION_CLASSES:  # rows true, cols predicted
      res["confusion"] = acc.confusion.astype(int).tolist()
      picture = (acc.confusion, names)
    return res, picture

  def __call__(self, params, step) -> dict:
    """{'step', 'sets': {name: results}, 'protocol': group summaries}."""
    results, confusions = {}, {}
    for name, ecfg in self.config.evals.items():
      results[name], confusions[name] = self.evaluate_set(params, name, ecfg)
    out = {"step": int(step), "sets": results,
           "protocol": metrics.summarize_groups(results, self.multi_label)}
    if self.host == 0:
      self.report(out, confusions)
    return out

  def report(self, out: dict, confusions: dict) -> None:
    """Prints a line per set and writes results, scalars and confusion pictures."""
    step = out["step"]
    for name, r in out["sets"].items():
      nonfinite = r.get("nonfinite_videos", 0)
      print(f"[eval] step {step} {name}: " + ", ".join(
          f"{k} {v:.4f}" for k, v in r.items() if k in HEADLINE) +
            f" ({r['num_examples']} videos, {r['corrupt_videos']} corrupt"
            + (f", {nonfinite} with non-finite scores, counted wrong" if nonfinite else "")
            + ")", flush=True)
      if confusions.get(name) is not None:
        matrix, names = confusions[name]
        metrics.plot_confusion(matrix, names,
                               os.path.join(self.workdir, f"confusion_{name}.png"))
    gpath.atomic_write(os.path.join(self.workdir, "eval_results.json"),
                       json.dumps(out, indent=2))
    flat = {f"eval/{n}/{k}": v for n, r in out["sets"].items() for k, v in r.items()
            if isinstance(v, (int, float))}
    metrics.write_scalars(self.writer, os.path.join(self.workdir, "metrics.jsonl"), step, flat)
