"""The table of a reproduction: our numbers over splits or seeds beside the published ones.

  rows = collect(runs)                 # from each run's eval_results.json
  write(rows, out_dir)                 # table.md and table.json

One row per (protocol, data set, setting, variant). Our cells: mean ± sample std and n
(metrics.mean_std) over the splits (zero-shot) or the seeds (few-shot, base-to-novel);
base-to-novel's HM is the harmonic mean of the mean base and mean novel accuracies, as the
peers (ViFi-CLIP) report it. A cell we did not run stays empty. Published numbers come
from `published.json` (each with its paper and table); where none was found in a source
we can cite, the cell stays empty too.
"""
import collections
import json
import os

from data_pipelines import gpath
from victr_jax import metrics
from victr_jax.reproduce.plan import TABLE_NAME

PUBLISHED = os.path.join(os.path.dirname(__file__), "published.json")
MODELS = (("victr", "VicTR"), ("vificlip", "ViFi-CLIP"), ("xclip", "X-CLIP"),
          ("clip", "CLIP"))
METRICS = {"zero_shot": ("top1",), "few_shot": ("top1",),
           "base_to_novel": ("base", "novel", "hm"), "k400": ("top1", "top5"),
           "charades": ("mAP",)}
ZERO_SHOT_GROUPS = {"hmdb51": "hmdb51", "ucf101": "ucf101", "k600": "kinetics600"}


def _results(run) -> dict | None:
  path = os.path.join(run.workdir, "eval_results.json")
  if not gpath.exists(os.path.join(run.workdir, "reproduce.json")) or not gpath.exists(path):
    return None
  return json.loads(gpath.read_text(path))


def _values(run, res: dict) -> dict[tuple, dict[str, list[float]]]:
  """{(data set, setting): {metric: [values, percent]}} of one finished run."""
  sets, pct = res["sets"], lambda x: 100.0 * float(x)
  if run.protocol == "zero_shot":
    out = {}
    for group, name in ZERO_SHOT_GROUPS.items():
      vals = [pct(r["top1"]) for r in sets.values() if r.get("group") == group]
      if vals:
        out[(name, "")] = {"top1": vals}
    return out
  key = TABLE_NAME[run.dataset]
  if run.protocol == "base_to_novel":
    return {(key, ""): {"base": [pct(sets["base"]["top1"])], "novel": [pct(sets["novel"]["top1"])]}}
  (only,) = sets.values()
  return {(key, run.setting): {m: [pct(only[m])] for m in METRICS[run.protocol]}}


def finished_runs(out: str) -> list:
  """The runs finished under `out` (their reproduce.json), in name order."""
  from victr_jax.reproduce.plan import Run  # pylint: disable=g-import-not-at-top
  found = []
  paths = [os.path.join(folder, "reproduce.json") for folder, _, files in gpath.walk(out)
           if "reproduce.json" in files] if gpath.isdir(out) else []
  for path in sorted(paths):
    meta = json.loads(gpath.read_text(path)).get("run")
    if meta:
      found.append(Run(**{**meta, "extra": tuple(meta.get("extra", ()))}))
  return found


def collect(runs, out: str = "") -> list[dict]:
  """The table's rows from the results of `runs` and of every run finished under `out`
  (a planned run without results leaves its cells empty: its row is still listed)."""
  names = {r.name for r in runs}
  runs = list(runs) + ([r for r in finished_runs(out) if r.name not in names] if out else [])
  cells = collections.OrderedDict()
  for run in runs:
    res = _results(run)
    got = _values(run, res) if res else {}
    if not got and run.protocol != "zero_shot":
      got = {(TABLE_NAME[run.dataset], run.setting): {}}
    for (dataset, setting), vals in got.items():
      row = cells.setdefault((run.protocol, dataset, setting, run.variant),
                             collections.defaultdict(list))
      for m, v in vals.items():
        row[m] += v
      row["_runs"].append(run.name)
  published = load_published()
  rows = []
  for (protocol, dataset, setting, variant), vals in cells.items():
    ours = {}
    for m, v in vals.items():
      if m != "_runs" and v:
        mean, std = metrics.mean_std(v)
        ours[m] = {"mean": mean, "std": std, "n": len(v)}
    if protocol == "base_to_novel" and "base" in ours and "novel" in ours:
      ours["hm"] = {"mean": metrics.harmonic_mean(ours["base"]["mean"], ours["novel"]["mean"]),
                    "std": None, "n": min(ours["base"]["n"], ours["novel"]["n"])}
    rows.append({"protocol": protocol, "dataset": dataset, "setting": setting,
                 "variant": variant, "ours": ours, "runs": vals["_runs"],
                 "published": published.get((protocol, dataset, setting), {})})
  order = list(METRICS)
  shots = lambda s: int(s[2:]) if s.startswith("K=") else 0
  return sorted(rows, key=lambda r: (order.index(r["protocol"]), r["dataset"],
                                     shots(r["setting"]), r["variant"]))


def load_published(path: str = PUBLISHED) -> dict:
  """{(protocol, data set, setting): {model: {metric: [entries]}}} of published.json."""
  with open(path) as f:
    doc = json.load(f)
  out = collections.defaultdict(lambda: collections.defaultdict(dict))
  for n in doc["numbers"]:
    src = doc["sources"][n["source"]]
    where = src.get("repository") if n["table"].startswith("README") else src.get("url")
    entry = dict(value=n["value"], std=n.get("std"), backbone=n.get("backbone"),
                 frames=n.get("frames"), source=n["source"], cite=src["cite"],
                 table=f"{n['table']} ({where})" if where else n["table"])
    out[(n["protocol"], n["dataset"], n["setting"])][n["model"]].setdefault(
        n["metric"], []).append(entry)
  return out


def _ours(cell) -> str:
  if not cell:
    return ""
  if cell["std"] is None or cell["n"] < 2:
    return f"{cell['mean']:.1f} (n={cell['n']})"
  return f"{cell['mean']:.1f} ± {cell['std']:.1f} (n={cell['n']})"


def _published(entries: list, notes: dict) -> str:
  """'51.3 [1]'; several backbones: each with its backbone and frames."""
  parts = []
  for e in entries:
    ref = notes.setdefault((e["cite"], e["table"]), len(notes) + 1)
    value = f"{e['value']:.1f}" + (f" ± {e['std']:.1f}" if e.get("std") is not None else "")
    tag = "" if len(entries) == 1 else f" ({e['backbone']}, {e['frames']}f)"
    parts.append(f"{value}{tag} [{ref}]")
  return "; ".join(parts)


def markdown(rows: list[dict]) -> str:
  """One table per protocol, then the sources."""
  notes, lines = {}, []
  for protocol in METRICS:
    mine = [r for r in rows if r["protocol"] == protocol]
    if not mine:
      continue
    ms = METRICS[protocol]
    lines += [f"## {protocol}", "",
              "| data set | setting | variant | metric | ours | " +
              " | ".join(name for _, name in MODELS) + " |",
              "|---|---|---|---|---|" + "---|" * len(MODELS)]
    for r in mine:
      for m in ms:
        pub = [_published(r["published"].get(k, {}).get(m, []), notes) for k, _ in MODELS]
        lines.append(f"| {r['dataset']} | {r['setting'] or '—'} | {r['variant']} | {m} | "
                     f"{_ours(r['ours'].get(m))} | " + " | ".join(pub) + " |")
    lines.append("")
  if notes:
    lines += ["Sources:", ""]
    lines += [f"{i}. {cite}, {table}" for (cite, table), i in
              sorted(notes.items(), key=lambda kv: kv[1])]
  return "\n".join(lines) + "\n"


def write(rows: list[dict], out: str) -> tuple[str, str]:
  """Writes out/table.md and out/table.json; returns their paths."""
  md, js = os.path.join(out, "table.md"), os.path.join(out, "table.json")
  intro = ("Ours: mean ± sample std (ddof 1) over splits (zero-shot) or seeds, n beside it; "
           "base-to-novel HM from the mean base and novel accuracies. Empty: not run, or no "
           "published number found in a source we can cite.\n\n")
  gpath.atomic_write(md, "# victr-reproduce\n\n" + intro + markdown(rows))
  gpath.atomic_write(js, json.dumps({"rows": rows}, indent=2) + "\n")
  return md, js
