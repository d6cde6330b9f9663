"""The trainer: config in, trained and evaluated model out. Reads top to bottom.

  run(config, workdir, mode)   mode: 'train' | 'eval' | 'train_and_eval'

One code path for 1 CPU, 8 devices and many hosts: a device mesh from the config, logical
axis rules for parameters and activations, `jax.jit` with explicit shardings and donated
state, per-host batches assembled into global arrays. State (params, optimiser, step, RNG)
and the input iterator's position are checkpointed with orbax (asynchronous, keep-N,
never a half-written one); a run resumes from the work directory, and SIGTERM writes a
final checkpoint and exits cleanly.
"""
import json
import os
import signal
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from clu import metric_writers
from jax.experimental import multihost_utils

from data_pipelines import pipeline
from victr_jax import clip, config_lib, data, metrics, models, optim, sharding
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


def _jsonl(path, record):
  with open(path, "a") as f:
    f.write(json.dumps(record) + "\n")


def soft_targets(labels, num_classes: int, multi_label: bool, smoothing: float = 0.0):
  """(B,) int labels -> (B, C) one-hot smoothed to (1 - s) y + s / C; (B, C) multi-hot
  (multi-label) pass through unsmoothed."""
  if multi_label:
    return labels.astype(jnp.float32)
  y = jax.nn.one_hot(labels, num_classes)
  return optax.smooth_labels(y, smoothing) if smoothing else y


def loss_fn(logits, targets, multi_label: bool):
  """Mean over the batch of softmax cross-entropy against soft targets (B, C), or of
  sigmoid BCE (multi-label)."""
  if multi_label:
    return optax.sigmoid_binary_cross_entropy(logits, targets).mean()
  return optax.softmax_cross_entropy(logits, targets).mean()


def cutmix_box(lam, cx, cy, height: int, width: int):
  """The CutMix box of side sqrt(1 - lam) x (H, W) centred at (cx, cy), clipped to the
  frame. Returns (keep (H, W) float32: 0 inside the box, 1 outside; the kept area
  fraction, the corrected lam)."""
  cut = jnp.sqrt(1.0 - lam)
  half_w = jnp.floor(width * cut).astype(jnp.int32) // 2
  half_h = jnp.floor(height * cut).astype(jnp.int32) // 2
  x1, x2 = jnp.clip(cx - half_w, 0, width), jnp.clip(cx + half_w, 0, width)
  y1, y2 = jnp.clip(cy - half_h, 0, height), jnp.clip(cy + half_h, 0, height)
  ys, xs = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
  inside = (ys >= y1) & (ys < y2) & (xs >= x1) & (xs < x2)
  area = ((x2 - x1) * (y2 - y1)).astype(jnp.float32)
  return 1.0 - inside.astype(jnp.float32), 1.0 - area / (height * width)


def mix_batch(frames, targets, rng, mixup_alpha: float, cutmix_alpha: float = 0.0,
              switch_prob: float = 0.5):
  """Mixup or CutMix of each clip with the batch reversed (one choice and one lam per
  batch; with both on, CutMix with probability switch_prob). frames (B, T, H, W, 3),
  targets (B, C) soft -> the mixed (frames, targets); CutMix uses one box for all frames
  and weighs the targets by the kept area."""
  k_mix, k_cut, k_x, k_y, k_switch = jax.random.split(rng, 5)
  h, w = frames.shape[-3:-1]
  if mixup_alpha > 0:
    lam_mix = jax.random.beta(k_mix, mixup_alpha, mixup_alpha)
  if cutmix_alpha > 0:
    keep, lam_cut = cutmix_box(jax.random.beta(k_cut, cutmix_alpha, cutmix_alpha),
                               jax.random.randint(k_x, (), 0, w),
                               jax.random.randint(k_y, (), 0, h), h, w)
  if mixup_alpha > 0 and cutmix_alpha > 0:
    use_cut = jax.random.uniform(k_switch) < switch_prob
    weight = jnp.where(use_cut, keep, lam_mix)  # (H, W)
    lam = jnp.where(use_cut, lam_cut, lam_mix)
  elif cutmix_alpha > 0:
    weight, lam = keep, lam_cut
  elif mixup_alpha > 0:
    weight, lam = jnp.full((h, w), lam_mix), lam_mix
  else:
    raise ValueError("mix_batch needs mixup_alpha > 0 or cutmix_alpha > 0")
  weight = weight[:, :, None].astype(frames.dtype)  # (H, W, 1), broadcasts over B, T
  frames = weight * frames + (1 - weight) * frames[::-1]
  return frames, lam * targets + (1 - lam) * targets[::-1]


def run(config, workdir: str, mode: str = "train_and_eval", devices=None):
  """Trains and/or evaluates; returns {'eval': results, 'state': final train state}.
  devices: the devices of the mesh (default: all)."""
  # ---------------------------------------------------------------- setup and checks
  devices = jax.devices() if devices is None else devices
  check_config(config, mode, len(devices))  # names the field at fault; nothing compiled yet
  cparams = None
  if config.clip_checkpoint:  # a checkpoint that does not fit fails fast
    try:
      ccfg, cparams = clip.load_params(config.clip_checkpoint, act=config.clip_act or None)
    except clip.CheckpointError as e:
      raise ValueError(f"config field clip_checkpoint / clip_act: {e}") from e
    models.check_clip_checkpoint(config.model, ccfg, config.clip_checkpoint, config.clip_act)
  os.makedirs(workdir, exist_ok=True)
  host = jax.process_index()
  if host == 0:  # what victr-classify and later evaluations rebuild the model from
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  mesh = sharding.make_mesh(config.mesh, devices)
  rules = sharding.logical_rules(config.mesh.get("fsdp_params", True))
  model = models.build_model(config.model)
  dcfg = config.data
  multi_label = dcfg.multi_label
  writer = metric_writers.create_default_writer(workdir, just_logging=host > 0)
  metrics_file = os.path.join(workdir, "metrics.jsonl")

  # Prompts: the text tower runs once per step on these, not once per video.
  aux_tokens, aux_cats, _ = data.aux_prompts(config)
  train_names = data.subset_names(dcfg.train)
  train_tokens = data.class_tokens(train_names, config.prompt_template)
  num_classes = len(train_names)

  train_source = data.open_source(dcfg.train, dcfg) if mode != "eval" else None
  num_steps = total_steps(config, len(train_source)) if train_source is not None else 0

  # ---------------------------------------------------------------- model and state
  c = model.clip_cfg
  dummy = (jnp.zeros((1, dcfg.num_frames, c.image_size, c.image_size, 3)),
           jnp.asarray(train_tokens),
           None if aux_tokens is None else jnp.asarray(aux_tokens),
           None if aux_cats is None else jnp.asarray(aux_cats))
  boxed = jax.eval_shape(model.init, jax.random.key(0), *dummy)
  param_sh = sharding.param_shardings(boxed, mesh, rules)["params"]
  ocfg = config_lib.optim_config(config, num_steps)  # warm-up resolved
  tx = optim.make(ocfg, boxed["params"], num_steps)
  repl, batch_sh = sharding.replicated(mesh), sharding.batch_sharding(mesh)

  with mesh, nn.logical_axis_rules(rules):
    params = jax.jit(lambda k: nn.unbox(model.init(k, *dummy))["params"],
                     out_shardings=param_sh)(jax.random.key(config.seed))
    if cparams is not None:
      params = dict(params, clip=jax.device_put(cparams, param_sh["clip"]))
    opt_sh = sharding.shardings_like_params(jax.eval_shape(tx.init, params), params, param_sh,
                                            mesh)
    opt_state = jax.jit(tx.init, out_shardings=opt_sh)(params)
  state = {"step": jax.device_put(jnp.zeros((), jnp.int32), repl), "params": params,
           "opt_state": opt_state,
           "rng": jax.device_put(jax.random.key_data(jax.random.key(config.seed + 1)), repl)}
  state_sh = jax.tree.map(lambda x: x.sharding, state)
  n_params = sum(x.size for x in jax.tree.leaves(params))

  # ---------------------------------------------------------------- checkpoints
  ckpt = ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, "checkpoints")),
      options=ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints,
                                           enable_async_checkpointing=True),
      item_names=("state", "data"))
  train_iter = (iter(pipeline.train_dataset(train_source, _with_classes(dcfg, num_classes), host,
                                            jax.process_count()))
                if train_source is not None else None)
  start = 0
  if ckpt.latest_step() is not None:
    step = ckpt.latest_step()
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            state, state_sh)
    restored = ckpt.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
    state = restored["state"]
    if train_iter is not None:
      train_iter.set_state(restored["data"]["iterators"][str(host)])
    start = int(step)
    logging.info("resumed from step %d", start)

  def save(step):
    iterators = {str(host): train_iter.get_state()} if train_iter is not None else {}
    if jax.process_count() > 1:  # every host's iterator position, in one JSON
      blob = json.dumps(iterators).encode()
      if len(blob) > 4096:
        raise ValueError(f"input iterator state of {len(blob)} bytes exceeds the 4096 reserved")
      gathered = multihost_utils.process_allgather(np.frombuffer(blob.ljust(4096), np.uint8))
      iterators = {}
      for row in np.asarray(gathered).reshape(jax.process_count(), -1):
        iterators.update(json.loads(bytes(row).decode().strip()))
    ckpt.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                            data=ocp.args.JsonSave({"iterators": iterators})))

  # ---------------------------------------------------------------- steps
  train_step = make_train_step(model, tx, config.optim, num_classes, multi_label)
  eval_step = make_eval_step(model)

  with mesh, nn.logical_axis_rules(rules):
    p_train = jax.jit(train_step, in_shardings=(state_sh, batch_sh, repl, repl, repl),
                      out_shardings=(state_sh, repl), donate_argnums=(0,))
    p_eval = jax.jit(eval_step, in_shardings=(param_sh, batch_sh, repl, repl, repl),
                     out_shardings=repl)

  def put(x):
    return None if x is None else jax.device_put(jnp.asarray(x), repl)

  train_text = (put(train_tokens), put(aux_tokens), put(aux_cats))

  # The compiled eval step needs a batch that splits over the data x fsdp devices and the
  # processes: pad up to that (padding is masked, every video still counts once).
  eval_dcfg = dcfg.copy_and_resolve_references()
  eval_dcfg.eval_batch_size = pipeline.padded_eval_batch(
      dcfg.eval_batch_size, mesh.shape["data"] * mesh.shape["fsdp"], jax.process_count())
  if eval_dcfg.eval_batch_size != dcfg.eval_batch_size and host == 0 and config.evals:
    logging.info("data.eval_batch_size=%d padded to %d (%d data x fsdp devices, %d processes)",
                 dcfg.eval_batch_size, eval_dcfg.eval_batch_size,
                 mesh.shape["data"] * mesh.shape["fsdp"], jax.process_count())

  def evaluate(step):
    results = {}
    for name, ecfg in config.evals.items():
      names = data.subset_names(ecfg)
      tokens = put(data.class_tokens(names, config.prompt_template))
      source = data.open_source(ecfg, dcfg)
      stats = pipeline.Stats()
      acc = metrics.ClassificationAccumulator(len(names), multi_label=multi_label)
      t0 = time.time()
      for batch in pipeline.eval_dataset(source, _with_classes(eval_dcfg, len(names)), host,
                                         jax.process_count(), stats):
        frames = pipeline.to_global({"f": batch["frames"]}, batch_sh)["f"]
        with mesh, nn.logical_axis_rules(rules):
          logits = p_eval(state["params"], frames, tokens, train_text[1], train_text[2])
        logits = np.asarray(logits)
        local = {k: batch[k] for k in ("label", "mask", "index", "corrupt")}
        if jax.process_count() > 1:
          local = {k: np.asarray(multihost_utils.process_allgather(v, tiled=True))
                   for k, v in local.items()}
        scores = metrics.aggregate_views(logits, "mean_sigmoid" if multi_label else "mean_probs")
        acc.update(np.asarray(scores), local["label"], local["mask"])
      res = acc.result()
      res.update(corrupt_videos=int(stats.corrupt), corrupt_where=stats.where[:20],
                 group=ecfg.get("group", name), seconds=round(time.time() - t0, 1))
      results[name] = res
      if not multi_label and len(names) <= 200:  # rows: true class, columns: predicted
        res["confusion"] = acc.confusion.astype(int).tolist()
      if host == 0 and not multi_label and len(names) <= 200:
        metrics.plot_confusion(acc.confusion, names,
                               os.path.join(workdir, f"confusion_{name}.png"))
    summary = metrics.summarize_groups(results, multi_label)
    out = {"step": int(step), "sets": results, "protocol": summary}
    if host == 0:
      for name, r in results.items():
        print(f"[eval] step {int(step)} {name}: " + ", ".join(
            f"{k} {v:.4f}" for k, v in r.items() if k in ("top1", "top5", "mean_class_accuracy",
                                                          "mAP")) +
              f" ({r['num_examples']} videos, {r['corrupt_videos']} corrupt)", flush=True)
      with open(os.path.join(workdir, "eval_results.json"), "w") as f:
        json.dump(out, f, indent=2)
      flat = {f"eval/{n}/{k}": v for n, r in results.items() for k, v in r.items()
              if isinstance(v, (int, float))}
      writer.write_scalars(int(step), flat)
      _jsonl(metrics_file, {"step": int(step), **flat})
    return out

  # ---------------------------------------------------------------- loop
  terminate = _Terminate()
  lr_at = optim.schedule(ocfg, num_steps)
  compiled_flops = None
  if mode in ("train", "train_and_eval") and start < num_steps:
    if host == 0:
      logging.info("training %s: %.1fM params, %d steps, mesh %s, %d process(es)",
                   config.model.name, n_params / 1e6, num_steps, dict(mesh.shape),
                   jax.process_count())
    t_last, last_step, history = time.time(), start, []
    for step in range(start, num_steps):
      batch = pipeline.to_global(next(train_iter), batch_sh)
      with mesh, nn.logical_axis_rules(rules):
        if compiled_flops is None:  # compile once, ahead of time, and read its FLOPs
          p_train = p_train.lower(state, batch, *train_text).compile()
          try:
            cost = p_train.cost_analysis()
            cost = cost[0] if isinstance(cost, list) else cost
            compiled_flops = float(cost.get("flops", 0.0)) * jax.process_count()
          except Exception:  # pylint: disable=broad-except
            compiled_flops = 0.0
        state, m = p_train(state, batch, *train_text)
      done = step + 1
      history.append(m)
      if done % config.log_every == 0 or done == num_steps:
        m = jax.tree.map(lambda *x: float(np.mean([np.asarray(v) for v in x])), *history)
        history = []
        dt = time.time() - t_last
        rate = (done - last_step) * dcfg.batch_size / max(dt, 1e-9)
        m.update(learning_rate=float(lr_at(done)), clips_per_sec=rate,
                 flops_per_sec=compiled_flops * (done - last_step) / max(dt, 1e-9))
        eta = (num_steps - done) * dt / max(done - last_step, 1)
        if host == 0:
          writer.write_scalars(done, {f"train/{k}": v for k, v in m.items()})
          _jsonl(metrics_file, {"step": done, **{f"train/{k}": v for k, v in m.items()}})
          print(f"[train] step {done}/{num_steps} loss {m['loss']:.4f} lr {m['learning_rate']:.2e}"
                f" {rate:.1f} clips/s {m['flops_per_sec'] / 1e9:.1f} GFLOP/s ETA {eta:.0f}s",
                flush=True)
        t_last, last_step = time.time(), done
      if done % config.checkpoint_every == 0 or done == num_steps or terminate.requested:
        save(done)
      if terminate.requested:
        ckpt.wait_until_finished()
        logging.warning("stopped by SIGTERM at step %d; checkpoint written", done)
        writer.flush()
        return {"stopped_at": done, "state": state}
      if config.eval_every and done % config.eval_every == 0 and done < num_steps and (
          mode == "train_and_eval"):
        evaluate(done)
    ckpt.wait_until_finished()
  results = evaluate(int(state["step"])) if mode in ("eval", "train_and_eval") else {}
  writer.flush()
  ckpt.wait_until_finished()
  ckpt.close()
  return {"eval": results, "state": state}


def make_train_step(model, tx, ocfg, num_classes: int, multi_label: bool):
  """(state, batch, class_tokens, aux_tokens, aux_cats) -> (state, metrics)."""

  def train_step(state, batch, class_tokens, aux_tokens, aux_cats):
    rng, mix_rng = jax.random.split(jax.random.wrap_key_data(state["rng"]))
    frames, labels = batch["frames"], batch["label"]
    # Smoothing first, then mixing: the peers' (and timm's) mixed smoothed targets.
    targets = soft_targets(labels, num_classes, multi_label, ocfg.label_smoothing)
    mixup_alpha, cutmix_alpha = ocfg.mixup_alpha, ocfg.get("cutmix_alpha", 0.0)
    if mixup_alpha > 0 or cutmix_alpha > 0:
      frames, targets = mix_batch(frames, targets, mix_rng, mixup_alpha, cutmix_alpha,
                                  ocfg.get("mixup_switch_prob", 0.5))

    def loss_of(params):
      out = model.apply({"params": params}, frames, class_tokens, aux_tokens, aux_cats,
                        train=True)
      logits = out["logits"].astype(jnp.float32)
      return loss_fn(logits, targets, multi_label), logits

    (loss, logits), grads = jax.value_and_grad(loss_of, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    out = {"loss": loss, "grad_norm": optax.global_norm(grads)}
    if not multi_label:
      out["top1"] = jnp.mean(jnp.argmax(logits, -1) == labels)
    new = {"step": state["step"] + 1, "params": params, "opt_state": opt_state,
           "rng": jax.random.key_data(rng)}
    return new, out

  return train_step


def make_eval_step(model):
  """(params, frames (B, V, T, H, W, 3), tokens...) -> logits (B, V, n), float32."""

  def eval_step(params, frames, class_tokens, aux_tokens, aux_cats):
    b, v = frames.shape[:2]
    out = model.apply({"params": params}, frames.reshape(b * v, *frames.shape[2:]),
                      class_tokens, aux_tokens, aux_cats, train=False)
    return out["logits"].astype(jnp.float32).reshape(b, v, -1)

  return eval_step


def restore_latest(workdir: str):
  """(step, state, data) of a work directory's newest complete checkpoint, restored onto
  this process's first device whatever mesh wrote it (for inference and inspection)."""
  ckdir = os.path.join(os.path.abspath(workdir), "checkpoints")  # orbax wants absolute paths
  steps = sorted(int(d) for d in os.listdir(ckdir) if d.isdigit()) if os.path.isdir(ckdir) else []
  if not steps:
    raise ValueError(f"{workdir}: no completed checkpoint under {ckdir}")
  path = os.path.join(ckdir, str(steps[-1]))
  ck = ocp.StandardCheckpointer()
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one),
                        ck.metadata(os.path.join(path, "state")).item_metadata)
  state = ck.restore(os.path.join(path, "state"), target)
  with open(os.path.join(path, "data", "metadata")) as f:
    data_state = json.load(f)
  return steps[-1], state, data_state


def _with_classes(dcfg, num_classes):
  """The data config with num_classes set (multi-hot labels need it)."""
  e = dcfg.copy_and_resolve_references()
  e.num_classes = num_classes
  return e
