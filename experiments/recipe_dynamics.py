"""Does the VicTR head reach the logits within each shipped recipe's budget, and how do
its ablations and switches compare there? Every figure over seeds (mean ± sample std, n).

  python -m experiments.recipe_dynamics [--recipes all] [--variants victr,mean_pool]
      [--seeds 1] [--max_steps 2000] [--batch 16] [--workdir workdirs/recipe_dynamics]
      [--clip workdirs/demo/clip] [--set k=v,...]

Recipes (RECIPES below, each with the source of its size): the main job's own setting
(`demo`: configs/demo.py, 200 steps); zero-shot, few-shot K=2 and K=16 on HMDB51 and UCF101,
base-to-novel and Kinetics-400, each with the recipe's optimiser settings (learning rates
of every group, warm-up, weight decay, label smoothing, mixup) and its real number of steps
at the real data-set sizes; and `charades`: multi-label, sigmoid BCE with the recipe's
logit bias, scored by mAP on synthetic_actions' 'sequences' (two motions in turn, both
labelled). Each trains on synthetic_actions (the main job's 64 train videos per class,
--test_per_class test videos) from the main job's pretrained demo CLIP (`python -m
experiments.demo` writes it; this script pretrains one when it is missing). CPU cuts, printed
with the results: a recipe longer than --max_steps runs a complete schedule of --max_steps
steps, and every recipe runs batch --batch (the recipes' 64 or 256 do not fit a CPU's
time); the data settings are the demo's (no flips or crops: positions are the signal).

Variants: any of config_lib.VARIANTS, each optionally with overrides of its own
('victr+model.head.link=embeddings+optim.gate_lr=0.01').

Printed per recipe and variant: top-1 (mAP for multi-label); the share of test videos
whose prediction has the right colour, the right motion axis, and (among those on the
right axis) the right direction; the final gates (gate_logits, or gate_video / gate_text)
and auxiliary weights gamma; the head's share of the logits (per test video, std over
classes of the logits minus the frame-average logits of the same towers, over the std of
those frame-average logits; mean over videos); the share of test predictions the auxiliary
term changes (gamma set to 0). A motion and its reverse show the same frames, so frame
averaging sits at 0.5 on direction by construction. WORKDIR/recipe_dynamics.json keeps
every run (with its axis confusion matrix); a killed benchmark resumes.

Also printed, before any training (unless --skip_affinity): the affinity weights'
effective number of tokens (exp of their entropy, as a fraction of J) at J = 501 (400
Kinetics prompts + 101 auxiliary) and J = 152 (51 HMDB prompts + 101), for each affinity
function, on cosines drawn with CLIP-like spreads (AFFINITY_COS below).
"""
import argparse
import importlib
import json
import math
import os
import re
import shutil
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

from data_pipelines import pipeline, synthetic  # noqa: E402  pylint: disable=g-import-not-at-top
from experiments import demo, pretrain  # noqa: E402  pylint: disable=g-import-not-at-top
from victr_jax import config_lib, data, metrics, models, optim, predict, train  # noqa: E402  pylint: disable=g-import-not-at-top
from victr_jax.models import head as H  # noqa: E402  pylint: disable=g-import-not-at-top

K400_TRAIN = 240_000  # Kinetics-400 train videos as the peers hold them: "~240k" (X-CLIP,
# ViFi-CLIP papers, section 4 datasets); the original release lists 246,534.
RECIPES = {  # name -> (config module, config argument, train videos, source of the size)
    "demo": ("demo", "", 0, "the main job's own setting (configs/demo.py: 200 steps)"),
    "zero_shot": ("zero_shot", "", K400_TRAIN, "Kinetics-400 train, ~240k (peers' papers)"),
    "few_shot_hmdb51_k2": ("few_shot", "dataset=hmdb51,shots=2", 51 * 2,
                           "HMDB51: 51 classes x 2 shots"),
    "few_shot_hmdb51_k16": ("few_shot", "dataset=hmdb51,shots=16", 51 * 16,
                            "HMDB51: 51 classes x 16 shots"),
    "few_shot_ucf101_k2": ("few_shot", "dataset=ucf101,shots=2", 101 * 2,
                           "UCF101: 101 classes x 2 shots"),
    "few_shot_ucf101_k16": ("few_shot", "dataset=ucf101,shots=16", 101 * 16,
                            "UCF101: 101 classes x 16 shots"),
    "base_to_novel_k400": ("base_to_novel", "dataset=k400", 200 * 16,
                           "Kinetics-400 base half: 200 classes x 16 shots"),
    "base_to_novel_hmdb51": ("base_to_novel", "dataset=hmdb51", 26 * 16,
                             "HMDB51 base half: 26 classes x 16 shots"),
    "k400": ("k400", "", K400_TRAIN, "Kinetics-400 train, ~240k (peers' papers)"),
    # Multi-label, sigmoid BCE, mAP: trained and tested on synthetic_actions' 'sequences'
    # (two motions in turn, both labelled; test videos in reverse pairs).
    "charades": ("charades", "", 7_985, "Charades train: 7,985 videos (official split)"),
}
# Cosines of a frame with class / auxiliary prompts in CLIP ViT-B/16: means about 0.2-0.3,
# spreads of a few hundredths across prompts (mean, std).
AFFINITY_COS = {"class": (0.25, 0.025), "aux": (0.20, 0.03)}
AFFINITY_FUNCTIONS = (  # (name, fn, standardize, temperature; 0 = CLIP scale 100)
    ("softmax, CLIP scale (old)", "softmax", False, 0.0),
    ("sigmoid, CLIP scale (old)", "sigmoid", False, 0.0),
    ("softmax, z-scored, T=0.25", "softmax", True, 0.25),
    ("softmax, z-scored, T=0.5 (default)", "softmax", True, 0.5),
    ("softmax, z-scored, T=1", "softmax", True, 1.0),
    ("softmax, z-scored, T=2", "softmax", True, 2.0),
    ("sigmoid, z-scored, T=1", "sigmoid", True, 1.0),
)
GROWING_SHRINKING = 2  # motion axis index: left/right 0, top/bottom 1, growing/shrinking 2


def affinity_table(seed=0, frames=64) -> list[dict]:
  """Effective fraction of tokens per affinity function at J = 501 and J = 152."""
  rng = np.random.default_rng(seed)
  rows = []
  for name, fn, std, temp in AFFINITY_FUNCTIONS:
    row = {"affinity": name}
    for n, m in ((400, 101), (51, 101)):
      cos = np.concatenate([rng.normal(*AFFINITY_COS["class"], (frames, n)),
                            rng.normal(*AFFINITY_COS["aux"], (frames, m))], -1)
      scale = 100.0 if temp == 0 else 1.0 / temp
      w = H.affinity_weights(jnp.asarray(cos, jnp.float32), fn, scale, std, (n, m))
      frac = np.asarray(H.effective_tokens(w))
      row[f"J={n + m}"] = float(frac.mean())
      row[f"J={n + m} class weight"] = float(np.asarray(w)[:, :n].mean())
    rows.append(row)
  return rows


def recipe_steps(name):
  """(recipe config, its real number of steps)."""
  module, arg, size, _ = RECIPES[name]
  rc = importlib.import_module(f"configs.{module}").get_config(arg)
  if rc.num_train_steps > 0:  # the config fixes its steps (demo)
    return rc, rc.num_train_steps
  return rc, math.ceil(rc.num_epochs * size / rc.data.batch_size)


def _set(cfg, overrides: str):
  for kv in filter(None, overrides.split(",")):
    config_lib.set_field(cfg, *kv.split("=", 1), from_text=True)


def direction_accuracy(labels, preds, axis) -> float:
  """Among test videos of motion axis `axis` predicted on that axis, the share whose
  direction is right (colour ignored)."""
  nm = len(synthetic.MOTIONS)
  tm, pm = np.asarray(labels) % nm, np.asarray(preds) % nm
  on_axis = (tm // 2 == axis) & (pm // 2 == axis)
  return float((tm == pm)[on_axis].mean()) if on_axis.any() else float("nan")


def parts_accuracy(labels, preds) -> dict:
  """Share of test videos whose prediction has the right colour, motion axis, motion, and,
  among those with the right axis, the right direction."""
  nm = len(synthetic.MOTIONS)
  t, p = np.asarray(labels), np.asarray(preds)
  axis = (t % nm) // 2 == (p % nm) // 2
  return {"colour": float((t // nm == p // nm).mean()), "axis": float(axis.mean()),
          "motion": float((t % nm == p % nm).mean()),
          "direction": float((t % nm == p % nm)[axis].mean()) if axis.any() else float("nan")}


def analyse(cfg, params) -> dict:
  """Test-set scores of the trained model, of its towers' frame average and of the model
  with gamma = 0, each on every test view of every test video with the views combined as
  the evaluator combines them (predict.Predictor); the figures of the module doc
  (multi-label: mAP instead of accuracies)."""
  cfg = config_lib.resolve(cfg)  # data.image_size 0: the CLIP's, as the trainer reads it
  names = data.subset_names(cfg.data.train)
  trained = predict.Predictor(models.build_model(cfg.model), params, names, cfg)
  frame_avg = predict.Predictor(models.build_model(dict_with(cfg.model, name="clip_zero_shot")),
                                {"clip": params["clip"]}, names, cfg)
  no_gamma = trained.with_params(
      dict(params, gamma=jnp.zeros_like(params["gamma"])) if "gamma" in params else params)
  source = data.open_source(cfg.evals.test, cfg.data)
  ecfg = data.with_classes(cfg.data, len(names))
  logits, avg, probs, off, labels = [], [], [], [], []
  for batch in pipeline.eval_dataset(source, ecfg):
    keep, frames = batch["mask"] > 0, batch["frames"]  # frames (B, V, T, S, S, 3)
    out = trained(frames)
    logits.append(out.logits[keep])  # (B, V, n)
    probs.append(out.probs[keep])    # (B, n), the views combined
    avg.append(frame_avg(frames).logits[keep])
    off.append(no_gamma(frames).probs[keep])
    labels.append(batch["label"][keep])
  logits, avg, probs, off, labels = map(np.concatenate, (logits, avg, probs, off, labels))
  pred = probs.argmax(-1)
  share = (logits - avg).std(-1) / np.maximum(avg.std(-1), 1e-12)  # per video and view
  head = params.get("head", {})
  if cfg.data.multi_label:  # labels (N, C) multi-hot
    acc = metrics.ClassificationAccumulator(len(names), multi_label=True)
    acc.update(probs, labels)
    scores = {"mAP": acc.result()["mAP"], "top1": float("nan")}
    scores.update({f"{k}_accuracy": float("nan") for k in ("colour", "axis", "motion",
                                                              "direction")})
    scores["direction_growing_shrinking"] = float("nan")
    # the positives' share of the sigmoids' mass: near 1 once the negatives are pushed down
    sig = (1 / (1 + np.exp(-logits))).mean(1)  # (N, C): each view's sigmoids, averaged
    scores["positive_mass"] = float((sig * labels).sum() / sig.sum())
  else:
    scores = {"top1": float((pred == labels).mean()), "mAP": float("nan"),
              **{f"{k}_accuracy": v for k, v in parts_accuracy(labels, pred).items()},
              "direction_growing_shrinking": direction_accuracy(labels, pred,
                                                                GROWING_SHRINKING),
              "positive_mass": float("nan"),
              "axis_confusion": np.histogram2d(  # rows true axis, columns predicted
                  (labels % 6) // 2, (pred % 6) // 2, bins=3, range=[[0, 3], [0, 3]])[0]
                  .astype(int).tolist()}
  return {**scores,
          "head_share": float(share.mean()),
          "aux_changed": float((off.argmax(-1) != pred).mean()),
          "gate_video": float(head.get("gate_video", np.nan)),
          "gate_text": float(head.get("gate_text", np.nan)),
          "gate_logits": float(params.get("gate_logits", np.nan)),
          "logit_bias": float(params.get("logit_bias", np.nan)),
          "gamma": [float(g) for g in np.asarray(params.get("gamma", []))],
          "test_videos": int(len(labels))}


def dict_with(cfg, **kw):
  c = cfg.copy_and_resolve_references()
  c.update(kw)
  return c


def bench_config(variant, steps, data_dir, ckpt, test_per_class):
  """The demo config on this benchmark's own synthetic_actions (more test videos)."""
  cfg = demo.demo_config(variant, "full", steps, data_dir, ckpt)
  cfg.data.synthetic_per_class = dict(cfg.data.synthetic_per_class, test=test_per_class)
  return cfg


def recipe_config(name, spec, seed, args, data_dir, ckpt):
  """(config, steps run, real steps) of one run. spec: a variant of config_lib.VARIANTS,
  optionally followed by '+FIELD=VALUE' overrides ('victr+model.head.aux_text=false')."""
  variant, *overrides = spec.split("+")
  rc, real = recipe_steps(name)
  steps = min(real, args.max_steps)
  if rc.data.multi_label:
    data_dir += "_sequences"
  cfg = bench_config(variant, steps, data_dir, ckpt, args.test_per_class)
  if rc.data.multi_label:  # the recipe's loss and its logit bias
    cfg.data.multi_label, cfg.data.synthetic_kind = True, "sequences"
    cfg.model.logit_bias = rc.model.logit_bias
    cfg.model.logit_bias_init = rc.model.logit_bias_init
  cfg.optim = rc.optim.copy_and_resolve_references()
  cfg.num_epochs = rc.num_epochs  # the warm-up is the recipe's share of its epochs
  cfg.data.batch_size = args.batch
  cfg.seed = cfg.data.seed = seed
  cfg.log_every = max(steps // 4, 1)
  cfg.checkpoint_every = steps
  _set(cfg, ",".join([args.set] + overrides))
  return cfg, steps, real


def config_key(cfg) -> str:
  """What makes two runs the same: the resolved model, optimiser and data settings."""
  return json.dumps({"model": cfg.model.to_dict(), "optim": cfg.optim.to_dict(),
                     "seed": cfg.seed, "steps": cfg.num_train_steps,
                     "epochs": cfg.num_epochs, "batch": cfg.data.batch_size,
                     "per_class": dict(cfg.data.synthetic_per_class)}, sort_keys=True,
                    default=str)


def run_recipe(name, variant, seed, cfg, steps, real, args) -> dict:
  """Trains one recipe_config(...) run and analyses it."""
  run_dir = os.path.join(args.workdir, "runs",
                         re.sub(r"[^\w.=-]", "_", f"{name}_{variant}_seed{seed}"))
  shutil.rmtree(run_dir, ignore_errors=True)
  t0 = time.time()
  out = train.run(cfg, run_dir, mode="eval" if cfg.num_train_steps < 0 else "train")
  res = analyse(cfg, out["state"].params)
  peaks = optim.peak_lrs(cfg.optim)
  res.update(steps=steps, real_steps=real, seconds=round(time.time() - t0, 1),
             lr=cfg.optim.lr, head_lr=peaks["head"], gate_lr=peaks["gates"],
             warmup=config_lib.optim_config(cfg, steps).warmup_steps, seed=seed,
             config_key=config_key(cfg))
  shutil.rmtree(run_dir, ignore_errors=True)  # checkpoints are not needed afterwards
  return res


SCALARS = ("top1", "mAP", "positive_mass", "gate_logits", "logit_bias", "colour_accuracy",
           "axis_accuracy", "direction_accuracy",
           "direction_growing_shrinking", "head_share", "aux_changed", "gate_video",
           "gate_text")


def summarize(runs: list[dict]) -> dict:
  """Mean and sample std (metrics.mean_std) over seeds of each figure (gamma elementwise)."""
  out = {"seeds": len(runs), "mean": {}, "std": {}}
  for k in SCALARS + ("gamma",):
    v = np.asarray([r[k] for r in runs], np.float64)
    mean, std = metrics.mean_std(v) if v.size else (float("nan"), float("nan"))
    out["mean"][k], out["std"][k] = np.asarray(mean).tolist(), np.asarray(std).tolist()
  return out


def _pm(s, k, fmt="{:.2f}"):
  if not s:
    return "—"
  m, d = s["mean"][k], s["std"][k]
  if m is None or (isinstance(m, float) and math.isnan(m)):
    return "—"
  return (fmt.format(m) + " ± " + fmt.format(d)) if s["seeds"] > 1 else fmt.format(m)


def _gates(s) -> str:
  """The link's gates: gate_logits, or gate_video / gate_text (link 'embeddings')."""
  if _pm(s, "gate_logits") != "—":
    return _pm(s, "gate_logits")
  return f"({_pm(s, 'gate_video')} / {_pm(s, 'gate_text')})"


def print_table(report):
  """One row per recipe and variant: mean ± sample std over seeds (n in the seeds column)."""
  print("\n| recipe | steps (real) | peak lr towers / head / gates | variant | seeds | top-1 | "
        "mAP | colour | motion axis | direction | gates | gamma | head share | aux changes |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
  for name, rows in report["recipes"].items():
    for variant, row in rows.items():
      if not row["runs"]:
        continue
      first, sv = row["runs"][0], summarize(row["runs"])
      g = sv["mean"]["gamma"]
      gamma = "[" + ", ".join(f"{x:.2f}" for x in g) + "]" if isinstance(g, list) and g else "—"
      print(f"| {name} | {first['steps']} ({first['real_steps']}) | {first['lr']:.0e} / "
            f"{first['head_lr']:.0e} / {first['gate_lr']:.0e} | {variant} | {sv['seeds']} | "
            + " | ".join(_pm(sv, k, "{:.1%}") for k in (
                "top1", "mAP", "colour_accuracy", "axis_accuracy", "direction_accuracy"))
            + f" | {_gates(sv)} | {gamma} | "
            f"{_pm(sv, 'head_share')} | {_pm(sv, 'aux_changed', '{:.1%}')} |")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--recipes", default="all", help=f"comma-separated, of {list(RECIPES)}")
  p.add_argument("--variants", default="victr,mean_pool",
                 help="comma-separated variants of config_lib.VARIANTS, each optionally with "
                      "'+FIELD=VALUE' overrides of its own (victr+model.head.aux_text=false)")
  p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per recipe and variant")
  p.add_argument("--max_steps", type=int, default=2000)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--test_per_class", type=int, default=32,
                 help="synthetic test videos per class (32: one video is 0.17 points)")
  p.add_argument("--workdir", default=os.path.join(ROOT, "workdirs", "recipe_dynamics"))
  p.add_argument("--clip", default=os.path.join(ROOT, "workdirs", "demo", "clip"))
  p.add_argument("--set", default="", help="config overrides, e.g. model.head.gate_norm_matched"
                 "=false,optim.gate_lr=0.01")
  p.add_argument("--fresh", action="store_true",
                 help="ignore runs already in WORKDIR/recipe_dynamics.json (default: keep "
                      "those made under the same resolved settings, so a killed benchmark "
                      "resumes)")
  p.add_argument("--skip_affinity", action="store_true")
  args = p.parse_args(argv)
  names = list(RECIPES) if args.recipes == "all" else args.recipes.split(",")
  unknown = set(names) - set(RECIPES)
  if unknown:
    p.error(f"--recipes: unknown {sorted(unknown)}; known {list(RECIPES)}")
  os.makedirs(args.workdir, exist_ok=True)
  out_json = os.path.join(args.workdir, "recipe_dynamics.json")
  print(f"recipe dynamics on {jax.device_count()} x {jax.devices()[0].device_kind}; "
        f"CPU cuts: batch {args.batch}, at most {args.max_steps} steps (a complete "
        "schedule of that length)", flush=True)

  same = ("max_steps", "batch", "set", "clip", "test_per_class")
  report = {"args": vars(args), "affinity": [], "recipes": {}}
  if not args.fresh and os.path.exists(out_json):
    with open(out_json) as f:
      old = json.load(f)
    if all(old["args"].get(k) == getattr(args, k) for k in same):
      report["recipes"] = old["recipes"]
  if not args.skip_affinity:
    report["affinity"] = affinity_table()
    print("\naffinity weights: effective number of tokens exp(H) / J (mean weight of a "
          f"class prompt); cosines class {AFFINITY_COS['class']}, aux {AFFINITY_COS['aux']}")
    for r in report["affinity"]:
      print(f"  {r['affinity']:<34} J=501 {r['J=501']:.3f} ({r['J=501 class weight']:.2f})"
            f"   J=152 {r['J=152']:.3f} ({r['J=152 class weight']:.2f})")

  data_dir = os.path.join(args.workdir, "data")
  cfg0 = bench_config("victr", 1, data_dir, "", args.test_per_class)
  data.ensure_synthetic(cfg0.data, dict(cfg0.data.synthetic_per_class),
                        cfg0.data.synthetic_frames, cfg0.data.synthetic_size)
  if not os.path.exists(os.path.join(args.clip, "clip_config.json")):
    print(f"no pretrained demo CLIP at {args.clip}: pretraining one (2000 steps, as the "
          "main job)", flush=True)
    pretrain.pretrain_clip(models.clip_config_of(cfg0.model), args.clip, 2000)

  todo = [(n, v, s) for n in names for v in args.variants.split(",")
          for s in range(args.seeds)]
  t_start, done = time.time(), 0
  for k, (name, variant, seed) in enumerate(todo):
    runs = report["recipes"].setdefault(name, {}).setdefault(variant, {"runs": []})["runs"]
    cfg, steps, real = recipe_config(name, variant, seed, args, data_dir, args.clip)
    key = config_key(cfg)
    if any(r["seed"] == seed and r.get("config_key") == key for r in runs):
      continue  # the same run under the same settings: kept
    runs[:] = [r for r in runs if r["seed"] != seed]  # made under other settings: redone
    eta = (f", ETA {(time.time() - t_start) / done * (len(todo) - k):.0f}s" if done else "")
    print(f"\n== [{k + 1}/{len(todo)}] {name} ({RECIPES[name][3]}; {real} steps"
          f"{f', cut to {args.max_steps}' if real > args.max_steps else ''}), {variant}, "
          f"seed {seed}{eta}", flush=True)
    runs.append(run_recipe(name, variant, seed, cfg, steps, real, args))
    done += 1
    with open(out_json, "w") as f:
      json.dump(report, f, indent=2)
  with open(out_json, "w") as f:
    json.dump(report, f, indent=2)
  print_table(report)
  print(f"\nwritten: {out_json}")


if __name__ == "__main__":  # XLA's step buffers on huge pages (victr_jax/hostmem.py)
  from victr_jax import hostmem  # pylint: disable=g-import-not-at-top
  hostmem.ensure()
  main()
