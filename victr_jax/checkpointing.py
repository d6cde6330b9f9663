"""Checkpoints of a work directory: orbax steps, each sealed with checksums, never a
damaged one restored.

  ckpt = Checkpointer(workdir, keep=3)
  found = ckpt.restore(abstract_state)        # (step, state, data) of the newest intact step
  ckpt.save(step, state, {"iterators": ...})  # asynchronous; sealed before it is committed
  ckpt.close()
  step, state, data = restore_latest(workdir)  # inference: newest intact step, one device

Layout: `WORKDIR/checkpoints/STEP/{state,data}` as orbax writes them (a step directory
appears only once complete), plus `STEP/checksums.json`, the SHA-256 of every file of the
step but orbax's `_CHECKPOINT_METADATA` (its commit time, written after the seal). Process 0 writes it in orbax's finalisation thread after the files are written and
before the temporary directory is committed, so every committed step carries its
checksums and the training loop never waits for the hashing.

Restoring verifies the newest step first. A step whose files do not match, or whose
parameters are not finite, is damaged: it is named, moved to `WORKDIR/damaged_checkpoints/`
(training; evaluation and inference only skip it) and the previous step is tried. A step
that verifies but does not restore is not damage (a changed config, say): the error is
raised, naming the step. A step without checksums (written before they existed) is
restored unverified; if it cannot be restored it is skipped by inference and reported by
training, which cannot tell damage from a changed config there.

WORKDIR may be local or gs:// (files through data_pipelines/gpath.py, arrays through
orbax's TensorStore). On gs:// orbax writes a step in place and marks it finished with
`STEP/commit_success.txt` (after the seal): a step without it is not listed.
"""
import errno
import hashlib
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from data_pipelines import fileio, gpath

CHECKSUMS = "checksums.json"
# orbax rewrites the step's own metadata (commit time) after the seal: not covered.
UNSEALED_FILES = (CHECKSUMS, "_CHECKPOINT_METADATA")
DAMAGED_DIR = "damaged_checkpoints"
GCS_COMMIT_FILE = "commit_success.txt"  # orbax's mark of a finished step on gs://
OK, UNSEALED, DAMAGED = 0, 1, 2


class WriteError(RuntimeError):
  """A checkpoint could not be written (a full disk, a lost bucket ...). The message names
  the step, the cause and the last complete checkpoint, from which the same command
  resumes once the cause is fixed; nothing after that checkpoint was kept."""


def _cause(e: BaseException) -> str:
  """The root cause of a failed write, short: 'No space left on device' where the OS said
  so anywhere in the exception chain, else the first line of the deepest message."""
  chain, seen = [], set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    chain.append(e)
    e = e.__cause__ or e.__context__
  for x in chain:
    if getattr(x, "errno", None) == errno.ENOSPC or "No space left on device" in str(x) or (
        "OS error 28" in str(x)):
      return "No space left on device"
  text = str(chain[-1]).strip().splitlines()
  return f"{type(chain[-1]).__name__}: {text[0][:300] if text else ''}"


def _say(msg: str) -> None:
  """A message the user must see (damage, skipped steps): logged, and printed by process 0."""
  logging.warning(msg)
  if jax.process_index() == 0:
    print(f"[checkpoint] {msg}", flush=True)


def _files(step_dir: epath.Path) -> list[str]:
  """Relative paths of the files of a step directory that its checksums cover, sorted."""
  top, out = os.fspath(step_dir).rstrip("/"), []
  for root, _, names in gpath.walk(top):
    out += [f"{root}/{n}"[len(top) + 1:] for n in names]
  return sorted(rel for rel in out if rel not in UNSEALED_FILES)


def _sha256(path: epath.Path) -> str:
  h = hashlib.sha256()
  with gpath.open(os.fspath(path), "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      h.update(block)
  return h.hexdigest()


def seal(step_dir) -> None:
  """Writes STEP/checksums.json (atomically) for a fully written step."""
  step_dir = epath.Path(step_dir)
  sums = {rel: _sha256(step_dir / rel) for rel in _files(step_dir)}
  fileio.write_json(str(step_dir / CHECKSUMS), {"algorithm": "sha256", "files": sums})


def verify(step_dir) -> tuple[int, str]:
  """(OK, ''), (UNSEALED, '') when the step has no checksums, or (DAMAGED, a message
  naming the damaged or missing files)."""
  step_dir = epath.Path(step_dir)
  path = step_dir / CHECKSUMS
  if not gpath.exists(path):
    return UNSEALED, ""
  try:
    sums = json.loads(gpath.read_text(path))["files"]
    items = list(sums.items())
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    return DAMAGED, f"{path} is unreadable ({type(e).__name__}: {e})"
  bad = []
  for rel, digest in items:
    try:
      if _sha256(step_dir / rel) != digest:
        bad.append(f"{rel} (checksum mismatch)")
    except FileNotFoundError:
      bad.append(f"{rel} (missing)")
    except OSError as e:
      bad.append(f"{rel} (unreadable: {e})")
  if bad:
    shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    return DAMAGED, f"damaged files in {step_dir}: {shown}"
  return OK, ""


def _all_finite(tree) -> bool:
  """Whether every float array of a tree is finite (one compiled reduction)."""
  leaves = [x for x in jax.tree.leaves(tree)
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
  if not leaves:
    return True
  check = jax.jit(lambda xs: jnp.stack([jnp.isfinite(x).all() for x in xs]).all())
  return bool(np.asarray(multihost_utils.process_allgather(check(leaves))).all()
              if jax.process_count() > 1 else check(leaves))


def _steps(ckdir: epath.Path) -> list[int]:
  """Committed steps under a checkpoints directory, newest first (on gs://, those with
  orbax's commit file)."""
  if not gpath.isdir(ckdir):
    return []
  steps = [n for n in gpath.listdir(ckdir) if n.isdigit()]
  if gpath.is_remote(ckdir):
    steps = [n for n in steps if gpath.exists(ckdir / n / GCS_COMMIT_FILE)]
  return sorted(map(int, steps), reverse=True)


def _verdict(step_dir: epath.Path) -> tuple[int, str]:
  """verify(), computed once by process 0 and shared with every process."""
  code, msg = verify(step_dir) if jax.process_index() == 0 else (OK, "")
  if jax.process_count() > 1:
    code = int(multihost_utils.broadcast_one_to_all(np.int32(code)))
  return code, msg


def _quarantine(step_dir: epath.Path, dest_root: epath.Path) -> epath.Path:
  """Moves a damaged step out of the checkpoints directory (kept for inspection)."""
  dest = dest_root / step_dir.name
  if gpath.exists(dest):  # damaged again after an earlier move: keep both
    dest = dest_root / f"{step_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
  if jax.process_index() == 0:
    gpath.move(os.fspath(step_dir), os.fspath(dest))
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"quarantined {step_dir}")
  return dest


def newest_intact(ckdir, load, quarantine=None):
  """(step, load(step)) for the newest step that verifies, loads and holds finite
  parameters; None when there is none. `load(step)` returns the state or (state, extra).
  quarantine: a directory to move damaged steps to (training), or None (skip them).
  See the module docstring for what counts as damage."""
  ckdir = epath.Path(ckdir)
  if jax.process_count() > 1:  # every process lists after any earlier move
    multihost_utils.sync_global_devices(f"list {ckdir}")
  for step in _steps(ckdir):
    step_dir = ckdir / str(step)
    code, problem = _verdict(step_dir)
    if code != DAMAGED:
      try:
        loaded = load(step)
      except Exception as e:  # pylint: disable=broad-except
        why = f"{type(e).__name__}: {str(e)[:500]}"
        if code == OK:
          raise ValueError(f"checkpoint step {step} ({step_dir}) is intact (its checksums "
                           f"match) but does not restore into this run's state; was the "
                           f"config changed? {why}") from e
        if quarantine is not None:
          raise ValueError(f"checkpoint step {step} ({step_dir}) has no checksums and does "
                           f"not restore ({why}). If it is damaged, move it out of "
                           f"{ckdir} and run again; otherwise check the config.") from e
        _say(f"step {step} (no checksums) cannot be restored ({why}); skipped")
        continue
      if _all_finite(loaded[0] if isinstance(loaded, tuple) else loaded):
        if code == UNSEALED:
          _say(f"step {step} has no checksums (written before they existed): restored "
               "unverified")
        return step, loaded
      problem = f"{step_dir} holds non-finite (NaN or inf) values"
    where = "skipped"
    if quarantine is not None:
      where = f"moved to {_quarantine(step_dir, epath.Path(quarantine))}"
    _say(f"step {step} is damaged: {problem}; {where}; trying the previous step")
  return None


def set_replica_parallel(on: bool) -> None:
  """orbax's array handler, replica-parallel or not. orbax splits each replicated array
  among its replicas so that several hosts share the writing; in one process that only
  adds a compiled slice per array, shape and device (benchmarks/checkpoint_save.py: the
  first save of the demo model on 8 CPU devices 26-34x slower over two runs, later ones
  2x)."""
  level = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # orbax warns that a handler is replaced
  try:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=on), override=True)
  finally:
    logging.set_verbosity(level)


class Checkpointer:
  """The train state and input position of a work directory, saved every N steps.

  save(step, state, data): asynchronous (orbax), sealed with checksums before commit.
  restore(abstract): newest intact step or None. read_only: damaged steps are skipped, not
  moved (evaluation beside a running trainer must not touch its directory).
  """

  def __init__(self, workdir: str, keep: int, read_only: bool = False):
    self.workdir = workdir if gpath.is_remote(workdir) else os.path.abspath(workdir)
    self.dir = epath.Path(self.workdir) / "checkpoints"
    self.read_only = read_only
    self._keep, self._sealing, self._manager = keep, None, None

  @property
  def manager(self) -> ocp.CheckpointManager:
    if self._manager is None:
      set_replica_parallel(jax.process_count() > 1)
      self._manager = ocp.CheckpointManager(
          self.dir, options=ocp.CheckpointManagerOptions(
              max_to_keep=self._keep, enable_async_checkpointing=True,
              async_options=ocp.AsyncOptions(post_finalization_callback=self._seal_written)),
          item_names=("state", "data"))
    return self._manager

  def _seal_written(self) -> None:
    """orbax's hook (its finalisation thread, every process): the step's files are
    written, its temporary directory not yet committed. Process 0 seals it there."""
    step = self._sealing
    if jax.process_index() != 0 or step is None:
      return
    tmp = list(self.dir.glob(f"{step}.orbax-checkpoint-tmp*"))
    target = tmp[0] if len(tmp) == 1 else self.dir / str(step)
    if target.is_dir():
      seal(target)
    else:
      logging.warning("checkpoint step %d: no directory to seal in %s", step, self.dir)

  def restore(self, abstract_state):
    """(step, state, data) of the newest intact step, laid out as `abstract_state`
    (ShapeDtypeStructs with shardings); None when the directory has no usable step."""

    def load(step):
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
      return restored["state"], restored["data"]

    found = newest_intact(self.dir, load,
                          None if self.read_only else epath.Path(self.workdir) / DAMAGED_DIR)
    if self._manager is not None:
      self._manager.reload()  # it listed steps that may have been moved since
    if found is None:
      return None
    step, (state, data) = found
    return step, state, data

  def save(self, step: int, state, data: dict) -> None:
    """Starts writing `step` (asynchronously). Raises WriteError when this step, or the
    previous one still being written, cannot be."""
    if self.read_only:
      raise ValueError(f"{self.dir}: read-only checkpointer cannot save")
    self.wait()  # the previous step's seal must not see this step
    self._sealing = step
    try:
      saved = self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data)))
    except Exception as e:  # pylint: disable=broad-except
      raise self._write_error(step, e) from e
    if not saved:
      raise ValueError(f"checkpoint step {step} was not saved: {self.dir} already holds "
                       f"step {self.manager.latest_step()}")

  def _write_error(self, step, e: BaseException) -> WriteError:
    self._sealing = None
    done = [s for s in _steps(self.dir) if s != step]
    last = (f"the last complete checkpoint is step {done[0]} ({self.dir / str(done[0])})"
            if done else f"no complete checkpoint is in {self.dir}")
    return WriteError(f"checkpoint step {step} could not be written to {self.dir}: "
                      f"{_cause(e)}; {last}. Free space (or move the work directory), then "
                      "run the same command to resume from it.")

  def wait(self) -> None:
    """Blocks until the last save is written and sealed; warns if it did not land.
    Raises WriteError when it could not be written."""
    if self._manager is None:
      return
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._write_error(self._sealing, e) from e
    if self._sealing is not None and not (self.dir / str(self._sealing)).is_dir():
      _say(f"step {self._sealing} was not written to {self.dir} (see the log)")
    self._sealing = None

  def close(self) -> None:
    self.wait()
    if self._manager is not None:
      self._manager.close()
      self._manager = None


def restore_latest(workdir: str):
  """(step, state, data) of a work directory's newest intact checkpoint, restored onto
  this process's first device whatever mesh wrote it (inference and inspection).
  Damaged steps are named and skipped (left in place)."""
  root = workdir if gpath.is_remote(workdir) else os.path.abspath(workdir)
  ckdir = epath.Path(root) / "checkpoints"
  ck = ocp.StandardCheckpointer()
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])

  def load(step):
    path = ckdir / str(step)
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one),
                          ck.metadata(path / "state").item_metadata)
    state = ck.restore(path / "state", target)
    return state, json.loads(gpath.read_text(path / "data" / "metadata"))

  found = newest_intact(ckdir, load)
  if found is None:
    what = "no completed checkpoint" if not _steps(ckdir) else "no intact checkpoint"
    raise ValueError(f"{workdir}: {what} under {ckdir}")
  step, (state, data) = found
  return step, state, data
