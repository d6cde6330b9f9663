"""The main job: the whole method on the embedded synthetic_actions data, on a CPU.

  python -m experiments.demo [--workdir workdirs/demo] [--steps 200] [--pretrain_steps 2000]

1. data      synthetic_actions records: 18 classes "a {colour} shape {motion}" whose motions
             come in reverse pairs ("moving to the left" / "... right", "growing large" /
             "shrinking small") (WORKDIR/data).
2. CLIP      the `demo` CLIP preset (tiny, one 32-px patch) pretrained contrastively on
             single frames and their descriptions ("a small red cross at the top left on a
             dark background"), each group of 4 frames of a video followed by its mirror
             images, so its text tower knows the words of this world (WORKDIR/clip, a
             converted checkpoint). Printed: its zero-shot accuracy on each attribute of
             held-out frames, and on left/right, top/bottom and horizontal/vertical (a
             place against its mirror image's).
3. runs      every row of ROWS through configs/demo.py and the trainer on all 18 classes
             (seen); the HEADLINE rows (or --b2n_rows) also base-to-novel (train on the 10
             base (colour, motion axis) compositions, test on them and on the 8 novel ones;
             a motion and its reverse stay in one half) (WORKDIR/runs/VARIANT_SETTING, and
             _seedN for seeds after 0). The headline rows run --seeds seeds, the others
             --ablation_seeds; runs that share shapes reuse the compiled steps
             (WORKDIR/xla_cache, which also makes a second run of the job faster). The
             CLIP was pretrained on frames of all classes: frames show colours, sizes and
             places, never a motion word.
4. results   WORKDIR/results.json (per row: seeds, mean, std, per_seed) and results.md
             (mean ± std over seeds); pictures: curves.png,
             confusion_*.png and affinities_*.png (VicTR's per-frame affinities of class and
             auxiliary text, the paper's qualitative figure).

Motion-axis accuracy counts a prediction right when its motion is on the video's axis
(left/right, top/bottom, growing/shrinking; colour and direction ignored); direction
accuracy is the share of videos whose motion axis was right that also got the direction
right: frame averaging cannot do better than 0.5 there.
"""
import argparse
import json
import os
import sys
import time

if __name__ == "__main__":  # XLA's step buffers on huge pages (victr_jax/hostmem.py)
  if not __package__:  # run as a file (python experiments/demo.py): the repository root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from victr_jax import console, hostmem  # pylint: disable=g-import-not-at-top
  hostmem.ensure()
  console.quiet_environment()  # progress lines only (victr_jax/console.py)
  console.quiet_logging()

import jax  # noqa: E402
from jax.experimental.compilation_cache import compilation_cache  # noqa: E402
import numpy as np  # noqa: E402

from configs import demo as demo_config_module  # noqa: E402
from data_pipelines import gpath, pipeline, records, synthetic, video_ops  # noqa: E402
from experiments.pretrain import attribute_accuracy, pretrain_clip  # noqa: E402
from victr_jax import clip, config_lib, data, metrics, models, predict, train, viz  # noqa: E402

ROWS = (  # (variant of config_lib.VARIANTS, what the table calls it)
    ("clip_zero_shot", "CLIP zero-shot, frame average"),
    ("mean_pool", "mean-pool fine-tuning (ViFi-CLIP)"),
    ("victr", "VicTR"),
    ("no_aux", "VicTR, no auxiliary text"),
    ("no_reweight", "VicTR, no affinity re-weighting"),
    ("no_boost", "VicTR, no token boosting"),
    ("clip_text", "VicTR, CLIP text embedding"),
    ("clip_video", "VicTR, CLIP video embedding"),
    ("joint", "VicTR, joint attention"),
    ("classifier_text", "VicTR, text classifier"),
    ("classifier_visual", "VicTR, visual classifier (closed set)"),
    ("paper", "VicTR, the paper's structure (variant=paper)"),
)
SETTINGS = ("full", "base_to_novel")
HEADLINE = ("clip_zero_shot", "mean_pool", "victr")  # base-to-novel by default only for these
CLOSED_SET = ("classifier_visual",)  # cannot name classes it never trained on


def _log(msg):
  print(msg, flush=True)


def seeds_of(variant: str, headline: int, ablation: int) -> int:
  """Seeds a row runs: CLIP zero-shot trains nothing and evaluates deterministically (one);
  the headline rows `headline`; the ablations `ablation`."""
  if config_lib.VARIANTS[variant].get("num_train_steps") == -1:
    return 1
  return headline if variant in HEADLINE else ablation


def demo_config(variant, setting, steps, data_dir, ckpt, per_class=None):
  """configs/demo.py for one run; per_class: (train, test) videos per class, or None for
  the config's."""
  cfg = demo_config_module.get_config(
      f"variant={variant},setting={setting},steps={steps}")
  cfg.data.synthetic_dir = data_dir
  cfg.clip_checkpoint = ckpt
  if per_class:
    cfg.data.synthetic_per_class = {"train": per_class[0], "test": per_class[1]}
  return cfg


AXES = ("left_right", "top_bottom", "growing_shrinking")  # the motion pairs of synthetic.MOTIONS


def motion_scores(confusion) -> dict:
  """From an 18-class confusion matrix (rows true, columns predicted): accuracy of the
  colour alone, of the motion alone, of its axis alone and, among videos whose motion axis
  was right, of its direction (over all videos, and over the videos of each axis)."""
  m = np.asarray(confusion, np.float64)
  motion = np.arange(len(m)) % len(synthetic.MOTIONS)
  same_motion = motion[:, None] == motion[None, :]
  same_axis = (motion[:, None] // 2) == (motion[None, :] // 2)
  total = max(m.sum(), 1.0)
  direction = lambda rows: float(m[rows][same_motion[rows]].sum() /
                                 max(m[rows][same_axis[rows]].sum(), 1.0))
  colour = np.arange(len(m)) // len(synthetic.MOTIONS)
  return {"motion_accuracy": float(m[same_motion].sum() / total),
          "axis_accuracy": float(m[same_axis].sum() / total),
          "colour_accuracy": float(m[colour[:, None] == colour[None, :]].sum() / total),
          "direction_accuracy": direction(slice(None)),
          "direction_accuracy_per_axis": {
              axis: direction(motion // 2 == k) for k, axis in enumerate(AXES)}}


def row_result(setting, ev) -> dict:
  sets = ev["sets"]
  if setting == "full":
    return {"top1": sets["test"]["top1"], **motion_scores(sets["test"]["confusion"])}
  base, novel = sets["base"]["top1"], sets["novel"]["top1"]
  return {"base_top1": base, "novel_top1": novel,
          "harmonic_mean": metrics.harmonic_mean(base, novel)}


def over_seeds(per_seed: list[dict]) -> dict:
  """{'seeds': n, 'mean': ..., 'std': ..., 'per_seed': ...}: the mean and the sample
  standard deviation (0 for one seed) of every metric of `per_seed` (nested dicts too)."""
  def agg(vals, i):
    if isinstance(vals[0], dict):
      return {k: agg([v[k] for v in vals], i) for k in vals[0]}
    return metrics.mean_std(vals)[i]
  return {"seeds": len(per_seed), "mean": agg(per_seed, 0), "std": agg(per_seed, 1),
          "per_seed": per_seed}


# ------------------------------------------------------------------ 4. results
def _cell(row: dict, *keys) -> str:
  """'36.1 ± 4.2' (percent) from a row of over_seeds; '—' when the row or key is missing."""
  if not row:
    return "—"
  m, s = row["mean"], row["std"]
  for k in keys:
    m, s = m.get(k), s.get(k)
    if m is None:
      return "—"
  return f"{100 * m:.1f} ± {100 * s:.1f}"


def markdown_table(results, rows) -> str:
  """The main table (mean ± std over seeds, in percent) and the direction accuracy per
  motion axis."""
  lines = ["| model | seeds | seen top-1 | motion axis | direction | colour | base top-1 | "
           "novel top-1 | HM |", "|---|---|---|---|---|---|---|---|---|"]
  axes = ["| model | seeds | " + " | ".join(a.replace("_", " / ") for a in AXES) + " |",
          "|---|---|" + "---|" * len(AXES)]
  for variant, title in rows:
    s = results.get(f"{variant}/full", {})
    b = results.get(f"{variant}/base_to_novel", {})
    seeds = "/".join(str(r["seeds"]) for r in (s, b) if r)
    lines.append(f"| {title} | {seeds} | {_cell(s, 'top1')} | {_cell(s, 'axis_accuracy')} | "
                 f"{_cell(s, 'direction_accuracy')} | {_cell(s, 'colour_accuracy')} | "
                 f"{_cell(b, 'base_top1')} | "
                 f"{_cell(b, 'novel_top1')} | {_cell(b, 'harmonic_mean')} |")
    if s:
      axes.append(f"| {title} | {s['seeds']} | " + " | ".join(
          _cell(s, "direction_accuracy_per_axis", a) for a in AXES) + " |")
  return "\n".join(lines) + "\n\nDirection accuracy per motion axis (seen classes):\n\n" + (
      "\n".join(axes) + "\n")


def affinity_pictures(cfg, state, workdir, labels=(4, 5, 0)):
  """VicTR's affinities over time of class and auxiliary text for one test video of each
  class in `labels`, read and sampled exactly as the evaluation reads them, scored by
  predict.Predictor (the prediction over all test views; the first view's affinities)."""
  cfg = config_lib.resolve(cfg)  # data.image_size 0: the CLIP's, as the trainer reads it
  names = data.subset_names(cfg.data.train)
  pred = predict.Predictor(models.build_model(cfg.model), state.params, names, cfg)
  source = data.open_source(cfg.evals.test, cfg.data)
  first = {}
  for i in range(len(source)):
    first.setdefault(records.as_record(source[i]).labels[0], i)
  ecfg = data.with_classes(cfg.data, len(names))
  out = pred(np.stack([pipeline.eval_views(source[first[c]], ecfg)["frames"] for c in labels]))
  guess, views = out.probs.argmax(-1), out.logits.shape[1]
  return [viz.plot_affinities(out.affinities[:, :, 0], pred.prompts,
                              os.path.join(workdir, f"affinities_{k}.png"), video_index=k,
                              title=f"{names[c]}; predicted: {names[guess[k]]} ({views} views);"
                              " first view's affinities")
          for k, c in enumerate(labels)]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m experiments.demo", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", default=os.path.join("workdirs", "demo"))
  p.add_argument("--steps", type=int, default=200, help="training steps per run")
  p.add_argument("--pretrain_steps", type=int, default=2000)
  p.add_argument("--rows", default="", help="comma-separated variants (default: all ROWS)")
  p.add_argument("--settings", default=",".join(SETTINGS))
  p.add_argument("--seeds", type=int, default=3, help="seeds of the headline rows (%s)"
                 % ", ".join(HEADLINE))
  p.add_argument("--ablation_seeds", type=int, default=1,
                 help="seeds of every other row (their 5-seed figures: experiments/"
                      "recipe_dynamics.py --recipes demo --seeds 5)")
  p.add_argument("--per_class", default="64,32",
                 help="synthetic train,test videos per class (one test video of 32 is 0.17 "
                      "points)")
  p.add_argument("--b2n_rows", default=",".join(HEADLINE),
                 help="rows also run base-to-novel ('all': every row; the default, the "
                      "headline rows, keeps the job short)")
  args = p.parse_args(argv)
  try:
    per_class = tuple(int(n) for n in args.per_class.split(","))
  except ValueError:
    per_class = ()
  if len(per_class) != 2 or min(per_class) < 1:
    p.error(f"--per_class={args.per_class!r}: expected TRAIN,TEST (two counts >= 1)")
  t0 = time.time()
  wd = args.workdir if gpath.is_remote(args.workdir) else os.path.abspath(args.workdir)
  gpath.makedirs(wd)
  known = [v for v, _ in ROWS]
  asked = args.rows.split(",") if args.rows else known
  b2n = known if args.b2n_rows == "all" else args.b2n_rows.split(",")
  if (set(asked) - set(known) or set(b2n) - set(known) or
      set(args.settings.split(",")) - set(SETTINGS)):
    p.error(f"--rows and --b2n_rows take names from {known}, --settings from {list(SETTINGS)}")
  rows = [r for r in ROWS if r[0] in asked]
  settings = [s for s in SETTINGS if s in args.settings.split(",")]
  # Compiled programs persist under the work directory: runs that share shapes (seeds,
  # variants that only change values) and a second run of the job load them from disk.
  jax.config.update("jax_compilation_cache_dir", os.path.join(wd, "xla_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  compilation_cache.reset_cache()  # a cache this process already opened elsewhere is closed
  _log(f"victr-jax main job -> {wd} ({jax.device_count()} x {jax.devices()[0].device_kind})")

  data_dir = os.path.join(wd, "data")
  cfg0 = demo_config("victr", "full", args.steps, data_dir, "", per_class)
  data.ensure_synthetic(cfg0.data, dict(cfg0.data.synthetic_per_class),
                        cfg0.data.synthetic_frames, cfg0.data.synthetic_size)
  _log(f"[1/4] synthetic_actions: {len(synthetic.classes())} classes, "
       f"{dict(cfg0.data.synthetic_per_class)} videos per class -> {data_dir} "
       f"({time.time() - t0:.0f}s)")

  ckpt = os.path.join(wd, "clip")
  _log(f"[2/4] pretraining a tiny CLIP on single frames and their descriptions "
       f"({args.pretrain_steps} steps)")
  model, params, _ = pretrain_clip(models.clip_config_of(cfg0.model), ckpt, args.pretrain_steps,
                                   log=_log)
  attr = attribute_accuracy(model, params)
  _log("      zero-shot accuracy per attribute on held-out frames (most frequent value's "
       "share): " + ", ".join(f"{k} {v['accuracy']:.2f} ({v['majority']:.2f})"
                              for k, v in attr.items()) + f" ({time.time() - t0:.0f}s)")

  runs = [(v, s, seed) for v, _ in rows for s in settings
          if s == "full" or (v in b2n and v not in CLOSED_SET)
          for seed in range(seeds_of(v, args.seeds, args.ablation_seeds))]
  per_seed, states, t_runs = {}, {}, time.time()
  for k, (variant, setting, seed) in enumerate(runs):
    eta = f", ETA {(time.time() - t_runs) / k * (len(runs) - k):.0f}s" if k else ""
    _log(f"[3/4] run {k + 1}/{len(runs)}: {variant}, {setting}, seed {seed} "
         f"(elapsed {time.time() - t0:.0f}s{eta})")
    cfg = demo_config(variant, setting, args.steps, data_dir, ckpt, per_class)
    cfg.seed = cfg.data.seed = seed
    cfg.log_every = max(args.steps // 4, 1)
    run_dir = os.path.join(wd, "runs", f"{variant}_{setting}" + (f"_seed{seed}" if seed else ""))
    gpath.rmtree(run_dir)  # a fresh run each time the job runs
    out = train.run(cfg, run_dir, mode="eval" if cfg.num_train_steps < 0 else "train_and_eval")
    if "eval" not in out:  # stopped by SIGTERM: the run's checkpoint is written
      _log(f"stopped during {variant}, {setting}, seed {seed} (step {out.get('stopped_at')})")
      return 1
    per_seed.setdefault(f"{variant}/{setting}", []).append(row_result(setting, out["eval"]))
    if variant == "victr" and setting == "full" and seed == 0:
      states["victr"] = (cfg, out["state"])
  results = {key: over_seeds(r) for key, r in per_seed.items()}

  _log(f"[4/4] results and pictures ({time.time() - t0:.0f}s)")
  table = markdown_table(results, rows)
  gpath.atomic_write(os.path.join(wd, "results.json"), json.dumps(
      {"rows": results, "clip_attribute_accuracy": attr, "steps": args.steps,
       "pretrain_steps": args.pretrain_steps, "test_videos_per_class": dict(
           cfg0.data.synthetic_per_class)["test"],
       "seconds": round(time.time() - t0)}, indent=2))
  gpath.atomic_write(os.path.join(wd, "results.md"),
                     f"# synthetic_actions, tiny CLIP, {args.steps} steps per run; mean ± std "
                     f"over seeds (count in the seeds column: seen / base-to-novel)\n\n{table}")
  curves = {v: os.path.join(wd, "runs", f"{v}_full", "metrics.jsonl") for v, _ in rows}
  viz.plot_loss_curves({v: c for v, c in curves.items() if gpath.exists(c)},
                       os.path.join(wd, "curves.png"))
  for v in ("victr", "mean_pool"):
    src = os.path.join(wd, "runs", f"{v}_full", "confusion_test.png")
    if gpath.exists(src):
      gpath.copy(src, os.path.join(wd, f"confusion_{v}.png"))
  if "victr" in states:
    affinity_pictures(*states["victr"], wd)
  _log("\n" + table)
  _log(f"done in {time.time() - t0:.0f}s: {wd}/results.md, results.json, curves.png, "
       "confusion_*.png, affinities_*.png")
  return 0


if __name__ == "__main__":
  sys.exit(main())
