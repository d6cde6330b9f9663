"""Evaluation: every eval set of a config, over all test views, on any mesh and any number
of hosts.

  evaluator = Evaluator(config, model, mesh, rules, param_shardings, text, workdir, writer)
  results = evaluator(params, step)   # also writes eval_results.json, metrics, pictures

For each set in `config.evals`: open its source, run the compiled eval step over batches
of (B, V, T, S, S, 3) views, gather labels and masks from every host, aggregate the views
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
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from data_pipelines import gpath, pipeline
from victr_jax import data, metrics, sharding

HEADLINE = ("top1", "top5", "mean_class_accuracy", "mAP")
MAX_CONFUSION_CLASSES = 200


def make_eval_step(model):
  """(params, frames (B, V, T, H, W, 3), class_tokens, aux_tokens, aux_cats) -> logits
  (B, V, n) float32: every view of every video through the model, eval mode."""

  def eval_step(params, frames, class_tokens, aux_tokens, aux_cats):
    b, v = frames.shape[:2]
    out = model.apply({"params": params}, frames.reshape(b * v, *frames.shape[2:]),
                      class_tokens, aux_tokens, aux_cats, train=False)
    return out["logits"].astype(jnp.float32).reshape(b, v, -1)

  return eval_step


def eval_data_config(dcfg, mesh):
  """The data config evaluation reads with: eval_batch_size padded up to a multiple of the
  data x fsdp devices and the processes (padding is masked; every video counts once)."""
  e = dcfg.copy_and_resolve_references()
  e.eval_batch_size = pipeline.padded_eval_batch(
      dcfg.eval_batch_size, mesh.shape["data"] * mesh.shape["fsdp"], jax.process_count())
  return e


class Evaluator:
  """Evaluates params on every set of `config.evals` (see the module docstring).

  text: the trainer's `train_state.Prompts` (the auxiliary prompts are shared with
  training; each eval set brings its own class prompts).
  """

  def __init__(self, config, model, mesh, rules, param_shardings, text, workdir: str,
               writer=None):
    self.config, self.mesh, self.rules, self.workdir = config, mesh, rules, workdir
    self.writer, self.host = writer, jax.process_index()
    self.multi_label = config.data.multi_label
    self.dcfg = eval_data_config(config.data, mesh)
    self.repl, self.batch_sh = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    self.aux = (self._put(text.aux_tokens), self._put(text.aux_cats))
    repl = self.repl
    with sharding.use(mesh, rules):
      self.step_fn = jax.jit(make_eval_step(model),
                             in_shardings=(param_shardings, self.batch_sh, repl, repl, repl),
                             out_shardings=repl)
    padded = self.dcfg.eval_batch_size
    if padded != config.data.eval_batch_size and self.host == 0 and config.evals:
      logging.info("data.eval_batch_size=%d padded to %d (%d data x fsdp devices, %d processes)",
                   config.data.eval_batch_size, padded,
                   mesh.shape["data"] * mesh.shape["fsdp"], jax.process_count())

  def _put(self, x):
    return None if x is None else jax.device_put(jnp.asarray(x), self.repl)

  def evaluate_set(self, params, name: str,
                   ecfg) -> tuple[dict, tuple[np.ndarray, list[str]] | None]:
    """(results of one eval set, (its confusion matrix, class names) or None)."""
    names = data.subset_names(ecfg)
    tokens = self._put(data.class_tokens(names, self.config.prompt_template))
    source = data.open_source(ecfg, self.config.data)
    stats = pipeline.Stats()
    acc = metrics.ClassificationAccumulator(len(names), multi_label=self.multi_label)
    how = self.config.get("view_aggregation", "") or (
        "mean_sigmoid" if self.multi_label else "mean_probs")
    t0 = time.time()
    dcfg = data.with_classes(self.dcfg, len(names))
    for batch in pipeline.eval_dataset(source, dcfg, self.host, jax.process_count(), stats):
      frames = pipeline.to_global({"f": batch["frames"]}, self.batch_sh)["f"]
      with sharding.use(self.mesh, self.rules):
        logits = np.asarray(self.step_fn(params, frames, tokens, *self.aux))
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
