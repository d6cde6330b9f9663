"""victr-reproduce: the paper's tables from your own data, in one command.

  victr-reproduce PROTOCOL --root DATA --clip CKPT --workdir OUT
      [--datasets hmdb51,ucf101] [--variants victr,mean_pool,clip_zero_shot] [--shots 2,4,8,16]
      [--seeds 1,2,3] [--lists PEER_SPLITS_DIR] [--max_steps N] [--dry_run [--topology v5e:4x4]]
      [--config.FIELD=VALUE ...]

PROTOCOL: zero_shot | few_shot | base_to_novel | k400 | charades | all. Every run is an
ordinary work directory under OUT (its own `python -m victr_jax.main ...` command is printed
and kept in OUT/RUN/reproduce.json, so one run can be repeated alone). Runs go one after
another; a finished run is skipped, a killed one resumes from its checkpoint, a failed one
is reported and the others go on. OUT/table.md and OUT/table.json hold our numbers (mean ±
sample std, n) beside the published ones, for every finished run under OUT (runs of
earlier invocations included). Exit status: 0 when every run finished, 1 when
one failed, 2 for bad arguments.
"""
import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

from victr_jax import console

console.quiet_environment()  # before jax or tensorflow are imported

from data_pipelines import gpath  # noqa: E402  pylint: disable=g-import-not-at-top
from victr_jax.reproduce import plan as plan_lib  # noqa: E402  pylint: disable=g-import-not-at-top
from victr_jax.reproduce import table  # noqa: E402  pylint: disable=g-import-not-at-top

DONE = "reproduce.json"
# Train-set sizes for the dry run when the records carry no victr-prepare manifest: the
# official lists (Kinetics-400: Kay et al. 2017, 246,245 train clips; Charades: Sigurdsson
# et al. 2016, 7,985 train videos). A prepared copy is usually smaller.
OFFICIAL_TRAIN_SIZES = {"kinetics400": 246245, "charades": 7985}


def _csv(kind):
  return lambda text: tuple(kind(x) for x in text.split(",") if x.strip())


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="victr-reproduce", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("protocol", choices=plan_lib.PROTOCOLS + ("all",))
  p.add_argument("--root", default=os.environ.get("VICTR_DATA", "/data/victr"),
                 help="the prepared data (victr-prepare outputs; default $VICTR_DATA)")
  p.add_argument("--clip", default="", help="a CLIP checkpoint (converted directory or any "
                 "format victr-convert-clip reads); the model's size is read from it")
  p.add_argument("--workdir", required=True, help="OUT: one work directory per run, the table")
  p.add_argument("--datasets", type=_csv(str), default=(),
                 help="comma-separated (default: each protocol's: " + "; ".join(
                     f"{k} {','.join(v[1])}" for k, v in plan_lib.DATASETS.items()) + ")")
  p.add_argument("--variants", type=_csv(str), default=("victr", "mean_pool", "clip_zero_shot"),
                 help="comma-separated config_lib.VARIANTS (baselines and ablations; default "
                 "victr,mean_pool,clip_zero_shot)")
  p.add_argument("--shots", type=_csv(int), default=(2, 4, 8, 16), help="few-shot K values")
  p.add_argument("--seeds", type=_csv(int), default=(1, 2, 3), help="few-shot and "
                 "base-to-novel seeds (zero-shot, K400, Charades run the first)")
  p.add_argument("--lists", default="", help="the peers' split folder (ViFi-CLIP's "
                 "datasets_splits/): its few-shot, base-to-novel and Kinetics-600 lists "
                 "replace our own draws")
  p.add_argument("--max_steps", type=int, default=0, help="cap every run's training steps "
                 "(smoke runs)")
  p.add_argument("--dry_run", action="store_true", help="print the plan and exit")
  p.add_argument("--topology", default="", help="with --dry_run: a TPU slice (v5e:4x4, ...); "
                 "each run's step time from the compile planner and the plan's device-hours")
  return p


def _load_config(run):
  """The run's config as victr_jax.main would build it (without reading weights)."""
  from victr_jax import config_lib  # pylint: disable=g-import-not-at-top
  c = config_lib.load_config(run.config_path())
  for a in run.extra:
    field, value = a[len("--config."):].split("=", 1)
    config_lib.set_field(c, field, value, from_text=True)
  return c


def train_size(config) -> tuple[int, str]:
  """(records the run trains on, where that count comes from), without reading frames."""
  d = config.data.train
  if d.get("list_file"):
    return sum(1 for line in gpath.read_text(d.list_file).splitlines() if line.strip()), "list"
  if d.shots:
    from victr_jax import data  # pylint: disable=g-import-not-at-top
    return d.shots * len(data.subset_names(d)), f"{d.shots} shots x classes"
  folder = os.path.dirname(d.pattern)
  split = os.path.basename(d.pattern).split(".")[0]
  manifest = os.path.join(folder, "manifest.json")
  if gpath.exists(manifest):
    return json.loads(gpath.read_text(manifest))["splits"][split]["written"], "manifest"
  name = os.path.basename(folder)
  if name in OFFICIAL_TRAIN_SIZES:
    return OFFICIAL_TRAIN_SIZES[name], "official list"
  return 0, "unknown"


def _step_seconds(config, topology: str, cache: dict, key: str):
  """The roofline step time of the run's train step compiled for `topology` (cached)."""
  if key not in cache:
    import contextlib  # pylint: disable=g-import-not-at-top
    import io  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    from victr_jax import compile_report, hlo  # pylint: disable=g-import-not-at-top
    devices = hlo.slice_devices(topology)
    with contextlib.redirect_stdout(io.StringIO()):
      compiled, ctx = compile_report.compile_steps(config, devices, count_flops=False,
                                                   train_only=True)
      rep = compile_report.build_report(config, topology, devices, compiled, ctx)
    jax.clear_caches()
    cache[key] = {"step_s": (rep.get("roofline") or {}).get("step_s"), "fits": rep["fits"],
                  "chips": rep["chips"]}
  return cache[key]


def dry_run(runs, args) -> int:
  """Prints every run with its steps (and, with --topology, its step time and the plan's
  device-hours)."""
  from victr_jax import config_lib  # pylint: disable=g-import-not-at-top
  cache_path = os.path.join(args.workdir, f"dry_run_{args.topology.replace(':', '_')}.json")
  cache = {}
  if args.topology and gpath.exists(cache_path):
    cache = json.loads(gpath.read_text(cache_path))
  total_steps, device_s = 0, 0.0
  ccfg = None
  if args.clip:  # read once: every run's model follows it
    from victr_jax import clip  # pylint: disable=g-import-not-at-top
    ccfg, _ = clip.load_params(args.clip)
  for i, run in enumerate(runs, 1):
    config = _load_config(run)
    if ccfg is not None:
      config = config_lib.adopt_clip(config, ccfg, args.clip)
    steps, how = 0, "evaluation only"
    if run.trains:
      n, how = train_size(config)
      steps = config_lib.total_steps(config, n) if (n or config.num_train_steps > 0) else 0
      how = f"{n} train videos ({how})" if n else "train set size unknown"
    total_steps += steps
    line = f"[{i}/{len(runs)}] {run.name}: {steps} steps, {how}"
    if args.topology and steps:
      key = json.dumps([run.protocol, run.dataset, run.variant, config.model.clip])
      est = _step_seconds(config, args.topology, cache, key)
      gpath.atomic_write(cache_path, json.dumps(cache, indent=2))
      if est["step_s"]:
        device_s += steps * est["step_s"] * est["chips"]
        line += (f"; {est['step_s'] * 1e3:.0f} ms/step on {args.topology} "
                 f"({'fits' if est['fits'] else 'DOES NOT FIT'}), "
                 f"{steps * est['step_s'] / 3600:.2f} h")
    print(line, flush=True)
    print(f"    {run.command()}", flush=True)
  print(f"{len(runs)} runs, {total_steps} training steps" + (
      f", {device_s / 3600:.1f} chip-hours on {args.topology} (roofline bound of the train "
      "steps; evaluation not counted)" if args.topology else ""), flush=True)
  return 0


# The lines of a run's output shown on the console (all of it goes to its log).
SHOWN = ("[train]", "[eval]", "victr_jax.main: error", "model.clip=", "parameters from")


def execute(run, log_path: str) -> int:
  """Runs one run's command: its progress and errors to the console, all its output to
  log_path (its tail too when it fails); returns its exit status. The log is written as
  it goes to a local file (a temporary one when log_path is on gs://, uploaded after)."""
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  tail = []
  remote = gpath.is_remote(log_path)
  if remote:
    local = tempfile.NamedTemporaryFile("w", suffix=".log", delete=False).name
    if gpath.exists(log_path):
      gpath.copy(log_path, local)
  else:
    gpath.makedirs(os.path.dirname(log_path))
    local = log_path
  with open(local, "a", encoding="utf-8") as log:
    log.write(f"$ {run.command()}\n")
    proc = subprocess.Popen(run.argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    try:
      for line in proc.stdout:
        log.write(line)
        tail = (tail + [line])[-15:]
        if line.lstrip().startswith(SHOWN):
          print(f"    {line.strip()}", flush=True)
    except KeyboardInterrupt:
      proc.terminate()  # the run writes a checkpoint on SIGTERM and resumes next time
      proc.wait()
      raise
    finally:
      log.flush()
      if remote:
        gpath.upload(local, log_path)
    rc = proc.wait()
  if remote:
    os.unlink(local)
  if rc:
    print("    ... " + "    ".join(tail), end="", flush=True)
  return rc


def _finished_as(record: dict, run) -> bool:
  """A finished run's reproduce.json is this run's: the same config with its arguments, the
  same --config.FIELD=VALUE arguments and mode. Not its command text, whose config path is
  relative to the directory victr-reproduce started from (a rerun from elsewhere skips too)."""
  r = record.get("run") or {}
  return ((r.get("config"), tuple(r.get("extra") or ()), r.get("trains")) ==
          (run.config, tuple(run.extra), run.trains))


def main(argv=None) -> int:
  console.quiet_logging()
  p = build_parser()
  args, rest = p.parse_known_args(argv)
  bad = [a for a in rest if not (a.startswith("--config.") and "=" in a)]
  if bad:
    p.error(f"unrecognized arguments: {' '.join(bad)} (only --config.FIELD=VALUE passes "
            "through to the runs)")
  if args.topology and not args.dry_run:
    p.error("--topology needs --dry_run")
  if "://" not in args.workdir:
    args.workdir = os.path.abspath(args.workdir)
  opts = plan_lib.Options(
      protocol=args.protocol, root=args.root, clip=args.clip, out=args.workdir,
      datasets=args.datasets, variants=args.variants, shots=args.shots, seeds=args.seeds,
      lists=args.lists, max_steps=args.max_steps, overrides=tuple(rest))
  try:
    runs = plan_lib.plan(opts)
  except ValueError as e:
    print(f"victr-reproduce: error: {e}", file=sys.stderr)
    return 2
  if args.dry_run:
    try:
      return dry_run(runs, args)
    except (ValueError, KeyError, OSError) as e:
      print(f"victr-reproduce: error: {e}", file=sys.stderr)
      return 2
  gpath.makedirs(args.workdir)
  failed, t0 = [], time.time()
  for i, run in enumerate(runs, 1):
    done_path = os.path.join(run.workdir, DONE)
    if gpath.exists(done_path):
      if _finished_as(json.loads(gpath.read_text(done_path)), run):
        print(f"[{i}/{len(runs)}] {run.name}: done, skipped", flush=True)
        continue
      gpath.remove(done_path)  # another command in the same directory: run it (it resumes)
    elapsed = time.time() - t0
    print(f"[{i}/{len(runs)}] {run.name} (elapsed {elapsed / 60:.1f} min)\n    {run.command()}",
          flush=True)
    start = time.time()
    rc = execute(run, os.path.join(run.workdir, "reproduce.log"))
    if rc == 0 and gpath.exists(os.path.join(run.workdir, "eval_results.json")):
      gpath.atomic_write(done_path, json.dumps({
          "command": run.command(), "seconds": time.time() - start,
          "run": dataclasses.asdict(run)}, indent=2))
    else:
      failed.append(run.name)
      print(f"[{i}/{len(runs)}] {run.name}: FAILED (exit status {rc}; its log: "
            f"{os.path.join(run.workdir, 'reproduce.log')}); going on", flush=True)
    table.write(table.collect(runs, args.workdir), args.workdir)  # the table so far
  md, js = table.write(table.collect(runs, args.workdir), args.workdir)
  print(f"{len(runs) - len(failed)}/{len(runs)} runs finished in "
        f"{(time.time() - t0) / 60:.1f} min; table: {md} and {js}", flush=True)
  if failed:
    print(f"victr-reproduce: {len(failed)} runs failed: {', '.join(failed)}", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
