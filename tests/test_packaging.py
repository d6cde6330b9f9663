"""The wheel stands alone: its files (configs inside victr_jax, no top-level `configs`), its
console scripts, and the shipped configs found and loaded by path from any directory
(config_lib.shipped_config / load_config, victr_jax.main's --config)."""
import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from victr_jax import config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(os.path.basename(f) for f in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if not os.path.basename(f).startswith("_"))


def _env():
  """The test's environment without PYTHONPATH: a child started elsewhere sees only the
  installed project."""
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env["JAX_PLATFORMS"] = "cpu"
  return env


def test_wheel_holds_the_packages_data_and_console_scripts(tmp_path):
  # Built from a copy of the sources: the repository gets no build/ or egg-info, and no
  # stale build/lib of an earlier layout can slip into the wheel.
  src = tmp_path / "src"
  junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
  for d in ("victr_jax", "data_pipelines", "configs"):
    shutil.copytree(os.path.join(ROOT, d), src / d, ignore=junk)
  for f in ("setup.py", "README.md"):
    shutil.copy(os.path.join(ROOT, f), src / f)
  env = dict(_env(), PIP_NO_INDEX="1")  # offline: nothing to download
  proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps",
                         "--no-build-isolation", "-q", "-w", str(tmp_path / "wheels")],
                        env=env, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  (wheel,) = glob.glob(str(tmp_path / "wheels" / "victr_jax-*.whl"))
  with zipfile.ZipFile(wheel) as z:
    names = set(z.namelist())
    entry_points = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt")))
  assert {n.split("/")[0] for n in names} == {"victr_jax", "data_pipelines",
                                              "victr_jax-0.1.0.dist-info"}
  assert not any(n.startswith("configs/") for n in names)
  for f in CONFIGS + ["README.md"]:
    assert f"victr_jax/configs/{f}" in names, f
  assert "victr_jax/configs/few_shot.py" in names
  assert any(n.startswith("victr_jax/clip/") and n.endswith(".txt.gz") for n in names)
  shipped_lists = glob.glob(os.path.join(ROOT, "data_pipelines", "classnames", "*.txt"))
  assert shipped_lists
  for f in shipped_lists:
    assert f"data_pipelines/classnames/{os.path.basename(f)}" in names, f
  assert "victr_jax/reproduce/published.json" in names
  scripts = entry_points.decode()
  for script in ("victr-classify", "victr-convert-clip", "victr-prepare", "victr-reproduce"):
    assert f"{script} = " in scripts, scripts


def test_shipped_config_finds_a_path_or_a_shipped_name(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  shipped = os.path.join(config_lib.config_dir(), "few_shot.py")
  assert os.path.isfile(shipped)
  for given in ("configs/few_shot.py", "few_shot.py", "few_shot", "./configs/few_shot.py"):
    assert config_lib.shipped_config(given) == shipped
    assert config_lib.shipped_config(given + ":dataset=ucf101") == shipped + ":dataset=ucf101"
  # A file that exists (relative to the current directory) is itself, even beside a
  # shipped config of the same name.
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "few_shot.py").write_text(
      "def get_config(arg=None):\n  return {'mine': arg}\n")
  assert config_lib.shipped_config("configs/few_shot.py:x=1") == "configs/few_shot.py:x=1"
  assert config_lib.load_config("configs/few_shot.py:x=1") == {"mine": "x=1"}
  assert config_lib.load_config("configs/few_shot.py") == {"mine": None}
  assert config_lib.shipped_config(shipped) == shipped
  for missing in ("configs/no_such.py:dataset=x", "no_such.py", "elsewhere/few_shot.py"):
    with pytest.raises(FileNotFoundError, match=missing.split(":")[0]):
      config_lib.shipped_config(missing)
  with pytest.raises(FileNotFoundError, match="no_such.py"):
    config_lib.load_config("no_such.py:x=1")


def test_load_config_builds_a_shipped_config_with_its_arguments():
  c = config_lib.load_config("configs/few_shot.py:dataset=ucf101,shots=4")
  assert c.data.train.shots == 4 and c.data.train.classnames == "ucf101"
  assert "ucf101_test" in c.evals


# Every shipped config loaded by its path in a child whose directory is not the
# repository's: `import configs` must fail there, both because the installed project
# exposes no top-level `configs` and because the child blocks the name outright.
_LOAD_ALL = """
import importlib.util, json, os, sys
found = importlib.util.find_spec("configs")
sys.modules["configs"] = None  # any `import configs...` now raises ImportError
from victr_jax import config_lib
folder = config_lib.config_dir()
loaded = {}
for f in sorted(os.listdir(folder)):
  if f.endswith(".py") and not f.startswith("_"):
    c = config_lib.load_config(os.path.join(folder, f))
    loaded[f] = sorted(c.evals)
print(json.dumps({"found": found and found.origin, "cwd": os.getcwd(), "loaded": loaded,
                  "path": sys.path}))
"""


def test_every_shipped_config_loads_by_path_without_a_configs_package(tmp_path):
  proc = subprocess.run([sys.executable, "-c", _LOAD_ALL], cwd=tmp_path, env=_env(),
                        capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert ROOT not in out["path"]
  assert out["found"] is None, (
      f"`import configs` finds {out['found']}: the installed project still exposes a top-level "
      "configs package (rerun scripts/env.sh after changing setup.py)")
  assert sorted(out["loaded"]) == CONFIGS
  assert out["loaded"]["few_shot.py"] == ["hmdb51_test"]


def _main(cwd, *argv):
  return subprocess.run([sys.executable, "-m", "victr_jax.main", *argv], cwd=cwd, env=_env(),
                        capture_output=True, text=True, timeout=120, check=False)


def test_main_takes_a_shipped_config_by_name_from_any_directory(tmp_path):
  # The config file is found and built while absl parses the flags: a bad argument of
  # the shipped file is its own error; a good one gets as far as the missing --workdir.
  bad = _main(tmp_path, "--config=configs/few_shot.py:dataset=nope")
  assert bad.returncode != 0 and "dataset='nope'" in bad.stderr, bad.stderr[-3000:]
  good = _main(tmp_path, "--config", "configs/few_shot.py:dataset=ucf101")
  assert good.returncode != 0 and "--workdir" in good.stderr, good.stderr[-3000:]
  missing = _main(tmp_path, "--config=configs/no_such.py:x=1", "--workdir=wd")
  assert missing.returncode == 2
  assert "victr_jax.main: error: --config: config file 'configs/no_such.py' not found" in (
      missing.stderr), missing.stderr[-3000:]
  assert not (tmp_path / "wd").exists()


def test_reproduce_plans_shipped_configs_from_any_directory(tmp_path):
  script = os.path.join(os.path.dirname(sys.executable), "victr-reproduce")
  proc = subprocess.run([script, "few_shot", "--root", str(tmp_path / "data"), "--workdir",
                         "out", "--dry_run", "--datasets", "hmdb51", "--shots", "2",
                         "--seeds", "1", "--variants", "victr"], cwd=tmp_path, env=_env(),
                        capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  (command,) = [line for line in proc.stdout.splitlines() if "victr_jax.main" in line]
  config = next(a for a in command.split() if a.startswith("--config="))
  file = config[len("--config="):].split(":")[0]
  assert os.path.isabs(file) and os.path.samefile(file, config_lib.shipped_config("few_shot.py"))
