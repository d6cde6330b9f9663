"""Checkpoints of a work directory: orbax steps, each sealed with a checksum, never a
damaged one restored.

  ckpt = Checkpointer(workdir, keep=3)
  found = ckpt.restore(abstract_state)       # (step, state, data) of the newest intact step
  ckpt.save(step, state, {"iterators": ...})  # asynchronous; sealed once written
  ckpt.close()
  step, state, data = restore_latest(workdir)  # inference: newest intact step, one device

Layout: `WORKDIR/checkpoints/STEP/{state,data}` as orbax writes them (a step directory
appears only when complete), plus `STEP/checksums.json`: the SHA-256 of every file of the
step, written once orbax has finished the step. Restoring verifies it; a step whose files
do not match, whose metadata cannot be read, or whose parameters are not finite is named,
moved to `WORKDIR/damaged_checkpoints/` (training; inference only skips it), and the
previous step is tried. A step without checksums (written before they existed, or a run
killed between orbax's commit and the seal) is restored unverified, with a note.
"""
import hashlib
import json
import os
import shutil

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

CHECKSUMS = "checksums.json"
DAMAGED_DIR = "damaged_checkpoints"


def _say(msg: str) -> None:
  """A message the user must see (damage, skipped steps): log and print (process 0)."""
  logging.warning(msg)
  if jax.process_index() == 0:
    print(f"[checkpoint] {msg}", flush=True)


def _files(step_dir: str) -> list[str]:
  """Relative paths of every file of a step directory except the checksums, sorted."""
  out = []
  for root, _, names in os.walk(step_dir):
    for name in names:
      rel = os.path.relpath(os.path.join(root, name), step_dir)
      if rel != CHECKSUMS:
        out.append(rel)
  return sorted(out)


def _sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def seal(step_dir: str) -> None:
  """Writes STEP/checksums.json (atomically) for a step orbax has finished writing."""
  sums = {rel: _sha256(os.path.join(step_dir, rel)) for rel in _files(step_dir)}
  tmp = os.path.join(step_dir, CHECKSUMS + ".tmp")
  with open(tmp, "w") as f:
    json.dump({"algorithm": "sha256", "files": sums}, f, indent=0)
  os.replace(tmp, os.path.join(step_dir, CHECKSUMS))


def verify(step_dir: str):
  """None when the step matches its checksums; 'unsealed' when it has none; otherwise a
  message naming the damaged or missing files."""
  path = os.path.join(step_dir, CHECKSUMS)
  if not os.path.exists(path):
    return "unsealed"
  try:
    with open(path) as f:
      sums = json.load(f)["files"]
  except (OSError, ValueError, KeyError, TypeError) as e:
    return f"{path} is unreadable ({type(e).__name__}: {e})"
  bad = []
  for rel, digest in sums.items():
    full = os.path.join(step_dir, rel)
    if not os.path.isfile(full):
      bad.append(f"{rel} (missing)")
    elif _sha256(full) != digest:
      bad.append(f"{rel} (checksum mismatch)")
  if bad:
    shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    return f"damaged files in {step_dir}: {shown}"
  return None


def _all_finite(tree) -> bool:
  """Whether every float array of a tree is finite (one compiled reduction)."""
  leaves = [x for x in jax.tree.leaves(tree)
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
  if not leaves:
    return True
  return bool(jax.jit(lambda xs: jnp.stack([jnp.isfinite(x).all() for x in xs]).all())(leaves))


def _steps(ckdir: str) -> list[int]:
  """Completed steps under a checkpoints directory, newest first."""
  if not os.path.isdir(ckdir):
    return []
  return sorted((int(d) for d in os.listdir(ckdir) if d.isdigit()), reverse=True)


def newest_intact(ckdir: str, load, quarantine: str = ""):
  """(step, load(step)) for the newest step that verifies, loads and holds finite
  parameters; None when there is none. Damaged steps are named and, when `quarantine`
  is a directory, moved there (process 0) so that training can write that step again."""
  for step in _steps(ckdir):
    step_dir = os.path.join(ckdir, str(step))
    problem = verify(step_dir)
    if problem in (None, "unsealed"):
      try:
        loaded = load(step)
        if _all_finite(loaded[0] if isinstance(loaded, tuple) else loaded):
          if problem == "unsealed":
            logging.info("checkpoint step %d has no checksums (older run, or stopped while "
                         "sealing): restored unverified", step)
          return step, loaded
        problem = f"{step_dir} holds non-finite (NaN or inf) parameters"
      except Exception as e:  # pylint: disable=broad-except
        problem = f"{step_dir} cannot be restored ({type(e).__name__}: {str(e)[:300]})"
    where = "skipped"
    if quarantine:
      dest = os.path.join(quarantine, str(step))
      if jax.process_index() == 0:
        os.makedirs(quarantine, exist_ok=True)
        if os.path.exists(dest):
          shutil.rmtree(dest)
        shutil.move(step_dir, dest)
      if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"quarantined checkpoint {step}")
      where = f"moved to {dest}"
    _say(f"step {step} is damaged: {problem}; {where}; trying the previous step")
  return None


class Checkpointer:
  """The train state and input position of a work directory, saved every N steps.

  save(step, state, data): asynchronous (orbax); the step is sealed with its checksums
  when it is complete (at the next save, `wait` or `close`). restore(abstract): newest
  intact step or None; damaged steps are named and moved aside.
  """

  def __init__(self, workdir: str, keep: int):
    self.workdir = os.path.abspath(workdir)  # orbax wants absolute paths
    self.dir = os.path.join(self.workdir, "checkpoints")
    self._keep = keep
    self._pending = None
    self._manager = None

  @property
  def manager(self) -> ocp.CheckpointManager:
    if self._manager is None:  # opened after restore has moved damaged steps aside
      self._manager = ocp.CheckpointManager(
          self.dir, options=ocp.CheckpointManagerOptions(
              max_to_keep=self._keep, enable_async_checkpointing=True),
          item_names=("state", "data"))
    return self._manager

  def restore(self, abstract_state):
    """(step, state, data) of the newest intact step, laid out as `abstract_state`
    (ShapeDtypeStructs with shardings); None when the directory has no usable step."""

    def load(step):
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
      return restored["state"], restored["data"]

    found = newest_intact(self.dir, load, os.path.join(self.workdir, DAMAGED_DIR))
    if found is None:
      return None
    if self._manager is not None:
      self._manager.reload()
    step, (state, data) = found
    return step, state, data

  def save(self, step: int, state, data: dict) -> None:
    self._seal_pending()
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    data=ocp.args.JsonSave(data)))
    self._pending = step

  def _seal_pending(self) -> None:
    if self._pending is None:
      return
    self.manager.wait_until_finished()
    step_dir = os.path.join(self.dir, str(self._pending))
    if jax.process_index() == 0 and os.path.isdir(step_dir):
      seal(step_dir)
    self._pending = None

  def wait(self) -> None:
    """Blocks until the last save is written and sealed."""
    if self._manager is not None:
      self.manager.wait_until_finished()
    self._seal_pending()

  def close(self) -> None:
    self.wait()
    if self._manager is not None:
      self._manager.close()


def restore_latest(workdir: str):
  """(step, state, data) of a work directory's newest intact checkpoint, restored onto
  this process's first device whatever mesh wrote it (inference and inspection).
  Damaged steps are named and skipped (left in place)."""
  ckdir = os.path.join(os.path.abspath(workdir), "checkpoints")
  ck = ocp.StandardCheckpointer()
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])

  def load(step):
    path = os.path.join(ckdir, str(step))
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one),
                          ck.metadata(os.path.join(path, "state")).item_metadata)
    state = ck.restore(os.path.join(path, "state"), target)
    with open(os.path.join(path, "data", "metadata")) as f:
      return state, json.load(f)

  found = newest_intact(ckdir, load)
  if found is None:
    what = "no completed checkpoint" if not _steps(ckdir) else "no intact checkpoint"
    raise ValueError(f"{workdir}: {what} under {ckdir}")
  step, (state, data) = found
  return step, state, data
