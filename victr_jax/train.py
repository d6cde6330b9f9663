"""The trainer: config in, trained and evaluated model out. Reads top to bottom.

  run(config, workdir, mode)   mode: 'train' | 'eval' | 'train_and_eval'

One code path for 1 CPU, 8 devices and many hosts: a device mesh from the config, logical
axis rules for parameters and activations, `jax.jit` with explicit shardings and donated
state, per-host batches assembled into global arrays. The pieces live next door: the
state in `train_state.py`, the jitted train and eval steps in `programs.py`, the objective in `losses.py`, checkpoints in
`checkpointing.py` (asynchronous, keep-N, never a half-written one, each sealed with a
checksum; a damaged one is named and the previous one used), evaluation in
`evaluate.py`. A run resumes from its work directory; SIGTERM writes a final checkpoint
and exits cleanly; a non-finite loss or gradient norm stops the run (`NonFiniteError`)
with nothing saved after the last good checkpoint.
"""
import json
import os
import signal
import time

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from data_pipelines import gpath, pipeline
from victr_jax import (checkpointing, clip, config_lib, config_version, data, evaluate,
                       metrics, models, optim, programs, sharding, train_state)
from victr_jax.config_lib import check_config, total_steps


class _Terminate:
  """Turns SIGTERM into a flag the loop checks (checkpoint, then a clean exit)."""

  def __init__(self):
    self.requested = False
    try:
      signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread
      pass

  def _handle(self, *_):
    logging.warning("SIGTERM: writing a checkpoint, then exiting")
    self.requested = True


class NonFiniteError(RuntimeError):
  """Training produced a non-finite loss or gradient norm; nothing after the last good
  checkpoint was saved."""


class _TrainLog:
  """Train metrics: averaged every `log_every` steps, printed with rate and ETA, written
  to TensorBoard and metrics.jsonl, with the corrupt videos the input skipped; and the
  finiteness check run before every log and every checkpoint."""

  def __init__(self, config, workdir, writer, num_steps, start, stats, lr_at):
    self.config, self.writer, self.num_steps, self.stats, self.lr_at = (
        config, writer, num_steps, stats, lr_at)
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.history, self.unchecked = [], []
    self.t_last, self.last_step, self.reported_corrupt = time.time(), start, 0
    self.flops_per_step = 0.0
    self.last_good = None  # the newest checkpointed step (for the error message)

  def add(self, step: int, m: dict) -> None:
    self.history.append(m)
    self.unchecked.append((step, m))

  def check_finite(self) -> None:
    """Raises NonFiniteError naming the first step whose loss or grad norm is not finite."""
    for step, m in self.unchecked:
      bad = {k: float(m[k]) for k in ("loss", "grad_norm") if not np.isfinite(float(m[k]))}
      if bad:
        where = ("no checkpoint was written yet" if self.last_good is None else
                 f"the last good checkpoint is step {self.last_good}, kept")
        raise NonFiniteError(
            f"step {step}: " + ", ".join(f"{k} is {v}" for k, v in bad.items()) +
            f"; training stopped and nothing after it was saved ({where}). Lower optim.lr "
            "or optim.clip_grad_norm, or check the input data, then resume.")
    self.unchecked = []

  def write(self, done: int, host: int) -> None:
    self.check_finite()
    m = jax.tree.map(lambda *x: float(np.mean([np.asarray(v) for v in x])), *self.history)
    self.history = []
    dt = max(time.time() - self.t_last, 1e-9)
    steps = done - self.last_step
    rate = steps * self.config.data.batch_size / dt
    m.update(learning_rate=float(self.lr_at(done)), clips_per_sec=rate,
             flops_per_sec=self.flops_per_step * steps / dt,
             corrupt_videos=float(self.stats.corrupt))
    eta = (self.num_steps - done) * dt / max(steps, 1)
    if host == 0:
      metrics.write_scalars(self.writer, self.path, done, {f"train/{k}": v for k, v in m.items()})
      print(f"[train] step {done}/{self.num_steps} loss {m['loss']:.4f} "
            f"lr {m['learning_rate']:.2e} {rate:.1f} clips/s "
            f"{m['flops_per_sec'] / 1e9:.1f} GFLOP/s ETA {eta:.0f}s", flush=True)
      if self.stats.corrupt > self.reported_corrupt:
        print(f"[train] {self.stats.corrupt} corrupt training videos skipped so far "
              f"(this process), e.g. {self.stats.where[-3:]}", flush=True)
        self.reported_corrupt = self.stats.corrupt
    self.t_last, self.last_step = time.time(), done


def _load_clip(config):
  """(config, CLIP parameters of config.clip_checkpoint or None). When the config names no
  model, its CLIP is the checkpoint's (or init_from's); a checkpoint that does not fit the
  model fails here, naming both."""
  if not config.clip_checkpoint:
    if config.get("init_from") and config.model.get("clip_from_checkpoint"):
      source = os.path.join(config.init_from, "config.json")
      if gpath.exists(source):
        try:
          their = config_version.read_workdir_config(config.init_from).model
        except ValueError as e:
          raise ValueError(f"config field init_from: {e}") from e
        config = config_lib.adopt_clip(config, models.clip_config_of(their), config.init_from)
    return config, None
  if not gpath.exists(config.clip_checkpoint):
    raise ValueError(f"config field clip_checkpoint: {config.clip_checkpoint} does not exist")
  act = config.model.clip_act or None  # for a format that does not record its own
  try:
    ccfg, cparams = clip.load_params(config.clip_checkpoint, default_act=act)
  except clip.CheckpointError as e:
    raise ValueError(f"config field clip_checkpoint / model.clip_act: {e}") from e
  config = config_lib.adopt_clip(config, ccfg, config.clip_checkpoint)
  models.check_clip_checkpoint(config.model, ccfg, config.clip_checkpoint)
  return config, cparams


def _params_from(workdir: str, params, shardings):
  """`params` with every parameter that work directory `workdir`'s newest intact
  checkpoint holds (towers and head), placed as `shardings`; parameters it lacks keep
  their initialisation (named on the console). A parameter whose shape differs is an
  error naming it."""
  step, state, _ = checkpointing.restore_latest(workdir)
  name_of = lambda path: jax.tree_util.keystr(path, simple=True, separator="/")
  theirs = {name_of(k): v for k, v in jax.tree_util.tree_leaves_with_path(state["params"])}
  missing = []

  def take(path, mine, sh):
    name = name_of(path)
    if name not in theirs:
      missing.append(name)
      return mine
    if tuple(theirs[name].shape) != tuple(mine.shape):
      raise ValueError(f"config field init_from: parameter {name} is {tuple(theirs[name].shape)}"
                       f" in {workdir} (step {step}) but {tuple(mine.shape)} in this model")
    return jax.device_put(np.asarray(theirs[name], mine.dtype), sh)

  out = jax.tree_util.tree_map_with_path(take, params, shardings)
  print(f"parameters from {workdir} (step {step})" + (
      f"; {len(missing)} it lacks keep their initialisation: {', '.join(missing[:4])}"
      + (" ..." if len(missing) > 4 else "") if missing else ""), flush=True)
  return out


def _iterator_states(train_iter, host: int) -> dict:
  """{process index: input iterator state} of every host, in one JSON-able dict."""
  iterators = {str(host): train_iter.get_state()} if train_iter is not None else {}
  if jax.process_count() > 1:
    blob = json.dumps(iterators).encode()
    if len(blob) > 4096:
      raise ValueError(f"input iterator state of {len(blob)} bytes exceeds the 4096 reserved")
    gathered = multihost_utils.process_allgather(np.frombuffer(blob.ljust(4096), np.uint8))
    iterators = {}
    for row in np.asarray(gathered).reshape(jax.process_count(), -1):
      iterators.update(json.loads(bytes(row).decode().strip()))
  return iterators


def run(config, workdir: str, mode: str = "train_and_eval", devices=None):
  """Trains and/or evaluates; returns {'eval': results, 'state': final train state}
  ({'stopped_at', 'state'} after SIGTERM). devices: the mesh's devices (default: all).
  Raises NonFiniteError when the loss or gradient stops being finite."""
  # ---------------------------------------------------------------- setup and checks
  devices = jax.devices() if devices is None else devices
  config, clip_params = _load_clip(config)  # the model's CLIP from the checkpoint
  config = config_lib.resolve(config)  # derived fields filled in (image size)
  check_config(config, mode, len(devices))  # names the field at fault; nothing compiled yet
  gpath.makedirs(workdir)
  host = jax.process_index()
  config_path = os.path.join(workdir, "config.json")
  if host == 0 and (mode != "eval" or not gpath.exists(config_path)):
    # What victr-classify rebuilds the model from.
    gpath.atomic_write(config_path, config.to_json_best_effort(indent=2))
  layout = sharding.layout(config.mesh, devices)
  model = models.build_model(config.model)
  dcfg = config.data
  writer = metrics.create_writer(workdir, just_logging=host > 0)
  names, text = train_state.prompts(config)  # the text tower runs once per step on these
  train_source = (data.open_source(dcfg.train, dcfg) if config_lib.trains(config, mode)
                  else None)
  num_steps = total_steps(config, len(train_source)) if train_source is not None else 0

  # ---------------------------------------------------------------- state, resumed
  init = train_state.init_state(config, model, layout, num_steps, text, clip_params)
  state = init.state
  stats = pipeline.Stats()  # corrupt training videos, reported with the train metrics
  train_iter = None
  if train_source is not None:
    train_iter = iter(pipeline.train_dataset(train_source, data.with_classes(dcfg, len(names)),
                                             host, jax.process_count(), stats))
  ckpt = checkpointing.Checkpointer(workdir, config.keep_checkpoints, read_only=mode == "eval")
  found = ckpt.restore(jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state.as_tree()))
  start = 0
  if found is not None:
    start, tree, restored = found
    state = train_state.TrainState.from_tree(tree)
    if train_iter is not None:
      train_iter.set_state(restored["iterators"][str(host)])
    if host == 0:
      print(f"resumed from step {start} ({workdir})", flush=True)
  elif config.get("init_from"):  # a fresh run from another run's trained parameters
    state = state.replace(params=_params_from(config.init_from, state.params,
                                              init.param_shardings))

  # ---------------------------------------------------------------- steps
  progs = programs.build(config, model, layout, init, len(names))
  train_text = progs.put(text)
  evaluate_at = evaluate.Evaluator(config, progs, text, workdir, writer)
  p_train = progs.train

  # ---------------------------------------------------------------- loop
  terminate = _Terminate()
  log = _TrainLog(config, workdir, writer, num_steps, start, stats,
                  optim.schedule(config_lib.optim_config(config, num_steps), num_steps))
  log.last_good = start or None
  try:  # whatever stops the loop, the last save is finished and sealed
    if mode in ("train", "train_and_eval") and start < num_steps:
      if host == 0:
        print(f"training {config.model.name}: {init.num_params / 1e6:.1f}M params, "
              f"{num_steps} steps from {start}, mesh {dict(layout.mesh.shape)}, "
              f"{jax.process_count()} process(es)", flush=True)
      for step in range(start, num_steps):
        batch = pipeline.to_global(next(train_iter), layout.batch)
        with layout.use():
          if step == start:  # compile once, ahead of time, and read its FLOPs
            p_train, flops = programs.compile(p_train, state, batch, train_text)
            log.flops_per_step = flops * layout.mesh.size  # XLA counts one device's
          state, m = p_train(state, batch, train_text)
        done = step + 1
        log.add(done, m)
        if done % config.log_every == 0 or done == num_steps:
          log.write(done, host)
        if done % config.checkpoint_every == 0 or done == num_steps or terminate.requested:
          log.check_finite()  # never save a state that is not finite
          ckpt.save(done, state.as_tree(), {"iterators": _iterator_states(train_iter, host)})
          log.last_good = done
        if terminate.requested:
          logging.warning("stopped by SIGTERM at step %d; checkpoint written", done)
          return {"stopped_at": done, "state": state}
        if config.eval_every and done % config.eval_every == 0 and done < num_steps and (
            mode == "train_and_eval"):
          log.check_finite()
          evaluate_at(state.params, done)
      log.check_finite()
    return {"eval": evaluate_at(state.params, int(state.step)) if mode != "train" else {},
            "state": state}
  finally:
    writer.flush()
    ckpt.close()
