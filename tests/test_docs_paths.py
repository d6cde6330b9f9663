"""README's `victr-prepare ... --out $VICTR_DATA/<dir>` commands and the configs agree.

Every record set a config reads under `root` must be written by a README.md command (same
folder, a split that command writes, the class list the config numbers labels by), and
every dataset command of README.md and configs/README.md must write a folder some config
reads, agreeing with it likewise. The commands are parsed by victr-prepare's own parser;
only the configs are built (no compilation).
"""
import glob
import importlib
import os
import re
import shlex

import pytest

from data_pipelines import layout_io, prepare, splits

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = "/some/root"
ROOT_VAR = "$VICTR_DATA"


def shell_commands(markdown: str) -> list[str]:
  """The commands of the ```bash blocks: continuations joined, `for V in ...; do` expanded."""
  commands = []
  for block in re.findall(r"```bash\n(.*?)```", markdown, re.S):
    lines = block.replace("\\\n", " ").splitlines()
    loop = None  # (variable, values, body lines)
    for line in lines:
      line = line.strip()
      head = re.fullmatch(r"for (\w+) in ([^;]+); do", line)
      if head:
        loop = (head.group(1), head.group(2).split(), [])
      elif line == "done" and loop:
        var, values, body = loop
        commands += [re.sub(rf"\$\{{?{var}\b\}}?", v, cmd) for v in values for cmd in body]
        loop = None
      elif line and not line.startswith("#"):
        (loop[2] if loop else commands).append(line)
  return commands


def prepare_commands(path: str) -> list:
  """The victr-prepare commands of a markdown file, parsed by victr-prepare's own parser."""
  with open(path, encoding="utf-8") as f:
    commands = shell_commands(f.read())
  parsed = []
  for cmd in commands:
    argv = shlex.split(cmd, comments=True)
    if argv and argv[0] == "victr-prepare":
      parsed.append(prepare.build_parser().parse_args(argv[1:]))
  return parsed


def readme_dirs(path: str) -> dict:
  """{folder under $VICTR_DATA: parsed command} of the dataset commands (not `generic`)."""
  out = {}
  for args in prepare_commands(path):
    if args.layout == "generic":  # an example for your own videos; no config reads it
      continue
    assert args.out.startswith(ROOT_VAR + "/"), f"{path}: --out {args.out} not under {ROOT_VAR}"
    folder = args.out[len(ROOT_VAR) + 1:]
    assert folder not in out, f"{path}: two commands write {folder}"
    out[folder] = args
  return out


def config_record_sets() -> list[tuple[str, str, str, str]]:
  """(config, folder under root, split, classnames) of every record set the configs read."""
  found = []
  for file in sorted(glob.glob(os.path.join(REPO, "configs", "*.py"))):
    name = os.path.splitext(os.path.basename(file))[0]
    if name.startswith("_"):
      continue
    module = importlib.import_module(f"configs.{name}")
    try:
      module.get_config(f"root={ROOT}")
    except ValueError as e:
      if "'root' unknown" not in str(e):
        raise
      configs = {name: module.get_config("")}  # a config without real data (demo)
    else:
      datasets = getattr(module, "DATASETS", None) or [""]
      configs = {f"{name}:{d}" if d else name:
                 module.get_config(f"root={ROOT}" + (f",dataset={d}" if d else ""))
                 for d in datasets}
    for label, c in configs.items():
      for dset in [c.data.train, *c.evals.values()]:
        if dset.source != "records":
          continue
        assert dset.pattern.startswith(ROOT + "/"), f"{label}: {dset.pattern} not under root"
        folder, pattern = os.path.split(dset.pattern[len(ROOT) + 1:])
        m = re.fullmatch(r"(\w+)\.tfrecord-\*", pattern)
        assert m, f"{label}: {dset.pattern} is not <split>.tfrecord-*"
        found.append((label, folder, m.group(1), dset.classnames))
  return found


def written_splits(args) -> set[str]:
  """The splits a victr-prepare command writes, from its layout and annotation file names."""
  if args.split != "all":
    return {args.split}
  if args.layout in ("ucf101", "hmdb51"):
    return {"train", "test"}
  files = args.csv_files if args.layout in ("kinetics", "charades") else args.json_files
  return {layout_io.split_from_filename(f) for f in files}


@pytest.fixture(scope="module")
def record_sets():
  return config_record_sets()


def test_shell_commands_expand_loops():
  text = "```bash\nfor s in 1 2; do\n  cmd --a $s \\\n    --b x$s  # note\ndone\nother\n```\n"
  assert [" ".join(c.split()) for c in shell_commands(text)] == [
      "cmd --a 1 --b x1 # note", "cmd --a 2 --b x2 # note", "other"]


def check_command(label: str, folder: str, split: str, classnames: str, args) -> None:
  """A record set a config reads agrees with the command that writes its folder."""
  assert split in written_splits(args), (
      f"{label} reads the {split} split of {folder}; the command writes "
      f"{sorted(written_splits(args))}")
  assert args.format == "tfrecord", f"{label}: {folder} is read as TFRecord"
  if classnames in splits.DATASETS:  # labels numbered by a shipped list
    assert args.classes == classnames, (
        f"{label} numbers {folder}'s labels by the shipped list {classnames!r}; the command "
        f"has --classes {args.classes}")
  else:  # the records' own class list
    assert classnames == f"{ROOT}/{folder}/classes.txt", (label, classnames)


def test_every_config_folder_has_a_readme_command(record_sets):
  readme = readme_dirs(os.path.join(REPO, "README.md"))
  assert record_sets and readme
  for label, folder, split, classnames in record_sets:
    assert folder in readme, f"{label} reads {ROOT}/{folder}: no README victr-prepare command"
    check_command(label, folder, split, classnames, readme[folder])


@pytest.mark.parametrize("doc", ["README.md", "configs/README.md"])
def test_every_prepare_command_writes_a_folder_a_config_reads(record_sets, doc):
  commands = readme_dirs(os.path.join(REPO, doc))
  assert commands
  for folder, args in commands.items():
    readers = [r for r in record_sets if r[1] == folder]
    assert readers, f"{doc} writes {ROOT_VAR}/{folder}, which no config reads"
    for label, _, split, classnames in readers:
      check_command(f"{label} ({doc})", folder, split, classnames, args)
