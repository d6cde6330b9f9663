"""victr-prepare, the command line: raw videos -> sharded DMVR records, classes.txt, manifest.

`main` parses the options (`build_parser`, whose help lists the layouts), `prepare` runs
one conversion: the --layout's parser (data_pipelines/layouts.py) lists the items of each
split, data_pipelines/shards.py writes the shards that are not done yet, and the manifest
(`split_summary`, `write_manifest`) is merged from the shards' sidecars.
"""
import argparse
import os
import sys

from data_pipelines import fileio, gpath, layouts, shards
from data_pipelines.layout_io import SPLITS, PrepareError
# Kept importable from here while victr_jax/data.py imports it from prepare.
from data_pipelines.layouts import Dataset, VideoItem

DESCRIPTION = "Raw videos -> sharded DMVR records (TFRecord or ArrayRecord)."

EPILOG = """\
layouts (each parsed into items per split plus the class list, before any decoding):
  generic   SRC/<split>/<class>/<video>; classes: sorted class folder names of all splits.
  ucf101    SRC/<Class>/v_<Class>_gXX_cYY.avi (or flat); --annotations DIR with classInd.txt,
            trainlist0N.txt (`Class/v_...avi 1`, 1-based) and testlist0N.txt; --split_id N.
  hmdb51    SRC/<class>/<video>.avi; --annotations DIR with <class>_test_splitN.txt
            (`video.avi 1|2|0`: train, test, unused); classes sorted by name; --split_id N.
  kinetics  --csv FILE (repeatable): label,youtube_id,time_start,time_end[,split[,is_cc]]
            (no split column: the split from the file name); videos anywhere below SRC as
            <youtube_id>_<start:06d>_<end:06d>.<ext> or <youtube_id>*.<ext>; missing videos
            are listed in the manifest; --trim cuts files named just <youtube_id>.<ext> to
            [time_start, time_end].
  charades  --csv Charades_v1_train.csv / Charades_v1_test.csv (id, actions =
            `c092 11.90 21.20;c147 0.00 12.60`); SRC/<id>.mp4; multi-label; the action
            spans go to the manifest; --classes Charades_v1_classes.txt (`c000 name`).
  ssv2      --labels something-something-v2-labels.json, --json (repeatable)
            something-something-v2-{train,validation}.json; SRC/<id>.webm.

--classes FILE (or a shipped list: kinetics400, kinetics600, ucf101, hmdb51, ssv2) fixes the
class order and names: line i names label i; the dataset's class names are matched to it
ignoring case, spaces and punctuation (`ApplyEyeMakeup` = `Apply Eye Makeup`).

Output in OUT (a local folder or gs://bucket/path; SRC is local, PyAV decodes local files):
`<split>.tfrecord-0000i-of-0000N` shards, classes.txt, manifest.json and
sidecars/<shard>.json (one per finished shard). Item i of a split's sorted item list goes to
shard i % N, so reruns make the same shards; a rerun skips shards that are in place with a
matching sidecar (resume after a kill). Undecodable videos are listed, never fatal;
annotation problems (unknown labels, malformed lines) stop the run before any work
(exit status 2).
"""


def build_parser() -> argparse.ArgumentParser:
  """The victr-prepare command line."""
  p = argparse.ArgumentParser(prog="victr-prepare", description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--layout", required=True, choices=layouts.LAYOUTS)
  p.add_argument("--src", required=True, metavar="DIR", help="folder with the videos")
  p.add_argument("--out", required=True, metavar="DIR", help="output folder (or gs://...)")
  p.add_argument("--split", default="all", choices=SPLITS + ("all",))
  p.add_argument("--annotations", metavar="DIR",
                 help="ucf101, hmdb51: folder with the split files")
  p.add_argument("--split_id", type=int, default=1, choices=(1, 2, 3), help="ucf101, hmdb51")
  p.add_argument("--csv", dest="csv_files", action="append", metavar="FILE",
                 help="kinetics, charades: annotation CSV (repeatable)")
  p.add_argument("--labels", metavar="FILE", help="ssv2: something-something-v2-labels.json")
  p.add_argument("--json", dest="json_files", action="append", metavar="FILE",
                 help="ssv2: train/validation JSON (repeatable)")
  p.add_argument("--classes", metavar="FILE_OR_NAME",
                 help="class list file (line i = label i) or a shipped list's name")
  p.add_argument("--trim", action="store_true",
                 help="kinetics: cut files named <youtube_id>.<ext> to the CSV times")
  p.add_argument("--short_side", type=int, default=256, help="0: keep the size")
  p.add_argument("--fps", type=float, default=0.0, help="0: keep every frame")
  p.add_argument("--jpeg_quality", type=int, default=90)
  p.add_argument("--num_shards", type=int, default=0, help="per split; 0: about sqrt(n)")
  p.add_argument("--format", default="tfrecord", choices=("tfrecord", "array_record"))
  p.add_argument("--workers", type=int, default=2)
  p.add_argument("--max_frames", type=int, default=0, help="0: no limit")
  p.add_argument("--no_progress", action="store_true", help="no progress bar")
  return p


def parse_layout(args: argparse.Namespace) -> Dataset:
  """Calls the --layout's parser with the options it takes."""

  def need(option: str, value):
    if not value:
      raise PrepareError(f"--layout {args.layout} needs {option}")
    return value

  if args.layout == "generic":
    return layouts.parse_generic(args.src, classes=args.classes)
  if args.layout in ("ucf101", "hmdb51"):
    parse = layouts.parse_ucf101 if args.layout == "ucf101" else layouts.parse_hmdb51
    return parse(args.src, need("--annotations", args.annotations), split_id=args.split_id,
                 classes=args.classes)
  if args.layout == "kinetics":
    return layouts.parse_kinetics(args.src, need("--csv", args.csv_files), trim=args.trim,
                                  classes=args.classes)
  if args.layout == "charades":
    return layouts.parse_charades(args.src, need("--csv", args.csv_files),
                                  classes=args.classes)
  if args.layout == "ssv2":
    return layouts.parse_ssv2(args.src, need("--labels", args.labels),
                              need("--json", args.json_files), classes=args.classes)
  raise PrepareError(f"unknown --layout {args.layout!r}")


def settings_of(args: argparse.Namespace) -> dict:
  """The options that change the records' contents (part of each shard's fingerprint)."""
  if not 1 <= args.jpeg_quality <= 100:
    raise PrepareError(f"--jpeg_quality {args.jpeg_quality}: expected 1..100")
  if min(args.short_side, args.fps, args.max_frames, args.num_shards) < 0:
    raise PrepareError("--short_side, --fps, --max_frames and --num_shards must be >= 0")
  return {"short_side": args.short_side, "fps": args.fps, "jpeg_quality": args.jpeg_quality,
          "max_frames": args.max_frames, "format": args.format}


def select_splits(ds: Dataset, split: str) -> list[str]:
  """The splits to prepare: all the layout has, or the one asked for (which must exist)."""
  if split == "all":
    return [s for s in SPLITS if s in ds.splits]
  if split not in ds.splits:
    raise PrepareError(f"split {split!r} not in these annotations (have: "
                       f"{', '.join(sorted(ds.splits)) or 'none'})")
  return [split]


def dedupe(items: list[VideoItem]) -> tuple[list[VideoItem], list[str]]:
  """Items sorted by (video id, path), repeated video ids dropped (listed)."""
  out, seen, dupes = [], set(), []
  for item in sorted(items, key=lambda it: (it.video_id, it.path)):
    if item.video_id in seen:
      dupes.append(item.video_id)
      continue
    seen.add(item.video_id)
    out.append(item)
  return out, dupes


# ----------------------------------------------------------------------------- manifest


def split_summary(ds: Dataset, split: str, items: list[VideoItem], dupes: list[str],
                  paths: list[str], settings: dict) -> dict:
  """A split's manifest entry, merged from its shards' sidecars."""
  counts, failures, written, frames = [0] * len(ds.classes), [], 0, 0
  for path in paths:
    side = shards.read_sidecar(path)
    written += side.get("written", 0)
    frames += side.get("frames", 0)
    failures += side.get("failures", [])
    for label, c in side.get("class_counts", {}).items():
      counts[int(label)] += c
  missing = ds.missing.get(split, [])
  entry = {"items": len(items) + len(dupes) + len(missing), "videos": len(items),
           "written": written, "frames": frames, "failed": len(failures),
           "failures": sorted(failures, key=lambda f: f["video_id"]),
           "missing": len(missing), "missing_files": missing, "duplicates": dupes,
           "class_counts": {name: c for name, c in zip(ds.classes, counts)},
           "shards": [os.path.basename(p) for p in paths], "settings": settings}
  entry.update(ds.extra.get(split, {}))
  return entry


def write_classes(out: str, classes: list[str]) -> None:
  """classes.txt (line i = label i); refuses to change the list of an earlier run."""
  path = os.path.join(out, "classes.txt")
  if gpath.isfile(path):
    old = gpath.read_text(path).splitlines()
    if old != classes:
      raise PrepareError(f"{path}: an earlier run wrote another class list; use a fresh --out "
                         "(or the same --classes)")
  fileio.atomic_write(path, "".join(c + "\n" for c in classes))


def write_manifest(out: str, layout: str, ds: Dataset, entries: dict) -> dict:
  """manifest.json, keeping the entries of splits prepared by earlier runs."""
  path = os.path.join(out, "manifest.json")
  old = fileio.read_json_or_none(path) or {}
  manifest = {"layout": layout, "num_classes": len(ds.classes),
              "splits": {**old.get("splits", {}), **entries}}
  fileio.write_json(path, manifest)
  return manifest


# ----------------------------------------------------------------------------- CLI


def prepare(args: argparse.Namespace) -> dict:
  """Parses the layout, writes the missing shards, classes.txt and manifest.json."""
  if not os.path.isdir(args.src):
    raise PrepareError(f"--src {args.src}: no such folder")
  settings = settings_of(args)
  ds = parse_layout(args)
  wanted = select_splits(ds, args.split)
  gpath.makedirs(args.out)
  write_classes(args.out, ds.classes)
  plans, tasks = {}, []
  for split in wanted:
    items, dupes = dedupe(ds.splits[split])
    paths, todo = shards.plan_split(args.out, split, items, settings, args.num_shards)
    plans[split] = (items, dupes, paths)
    tasks += todo
  done = sum(len(p[2]) for p in plans.values()) - len(tasks)
  print(f"victr-prepare: {len(tasks)} shards to write, {done} already done", file=sys.stderr)
  shards.execute(tasks, args.workers, not args.no_progress)
  entries = {s: split_summary(ds, s, *plans[s], settings) for s in wanted}
  return write_manifest(args.out, args.layout, ds, entries)


def main(argv=None) -> int:
  """victr-prepare entry point; 0 on success, 2 on a problem with the inputs."""
  args = build_parser().parse_args(argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # for the worker processes
  try:
    manifest = prepare(args)
  except PrepareError as e:
    print(f"victr-prepare: error: {e}", file=sys.stderr)
    return 2
  for split, entry in manifest["splits"].items():
    print(f"{split}: {entry['written']}/{entry['items']} written, {entry['failed']} failed, "
          f"{entry['missing']} missing, {len(entry['shards'])} shards in {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
