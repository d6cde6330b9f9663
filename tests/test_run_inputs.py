"""What a run starts from: the eval sets it names (evals=, k600=none), the model's CLIP read
from its checkpoint, another run's trained parameters (init_from), and a variant that trains
nothing opening no train set."""
import importlib
import os

import pytest

from victr_jax import clip, config_lib, train

from test_train import _demo_cfg, _write


def test_evals_and_k600_select_the_evaluation_sets():
  zs = importlib.import_module("configs.zero_shot")
  c = zs.get_config("evals=ucf101,root=/nowhere")
  assert sorted(c.evals) == ["ucf101_split1", "ucf101_split2", "ucf101_split3"]
  c = zs.get_config("evals=hmdb51_split2+k600")
  assert sorted(c.evals) == ["hmdb51_split2", "k600_split1", "k600_split2", "k600_split3"]
  assert not [k for k in zs.get_config("k600=none").evals if k.startswith("k600")]
  c = zs.get_config("k600_list=/l/ZS_split{}_K600_eval.txt")
  assert c.evals.k600_split3.list_file == "/l/ZS_split3_K600_eval.txt"
  assert c.evals.k600_split3.pattern.endswith("kinetics600/*.tfrecord-*")  # every split
  with pytest.raises(ValueError, match=r"evals='ucf'.*groups \['hmdb51', 'k600', 'ucf101'\]"):
    zs.get_config("evals=ucf")
  with pytest.raises(ValueError, match="k600='x'"):
    zs.get_config("k600=x")
  b2n = importlib.import_module("configs.base_to_novel").get_config("dataset=hmdb51,evals=novel")
  assert list(b2n.evals) == ["novel"]
  assert not importlib.import_module("configs.k400").get_config("evals=none").evals


def test_a_variant_that_trains_nothing_needs_no_train_set(tmp_path):
  """zero_shot.py's clip_zero_shot with only UCF101 prepared evaluates, in either mode."""
  root = tmp_path / "data"
  for s in (1, 2, 3):
    _write(f"{root}/ucf101/split{s}/test", [0, 1, 100])
  c = importlib.import_module("configs.zero_shot").get_config(
      f"variant=clip_zero_shot,evals=ucf101,root={root}")
  assert not config_lib.trains(c) and config_lib.trains(
      importlib.import_module("configs.zero_shot").get_config(f"root={root}"))
  c.model.clip, c.model.head.num_heads, c.model.num_frames = "tiny", 2, 2
  c.data.image_size, c.data.test_resize, c.data.num_frames, c.data.eval_batch_size = 32, 0, 2, 8
  for mode in ("eval", "train_and_eval"):
    out = train.run(c, str(tmp_path / mode), mode)
    assert sorted(out["eval"]["sets"]) == ["ucf101_split1", "ucf101_split2", "ucf101_split3"]
    assert out["eval"]["protocol"]["ucf101"]["n"] == 3
  assert not os.path.exists(f"{root}/kinetics400")


def _converted(path, name, **over):
  cfg = clip.get_config(name, **over)
  return clip.save_converted(cfg, clip.init(cfg)[1], str(path))


def test_the_model_clip_comes_from_the_checkpoint(tmp_path, capsys):
  """A config without model= takes the checkpoint's CLIP (and the image size derived from
  it); one that names another model is an error naming both."""
  ckpt = _converted(tmp_path / "tiny", "tiny")
  fs = importlib.import_module("configs.few_shot")
  c = fs.get_config("root=/d")
  c.clip_checkpoint = ckpt
  c2, params = train._load_clip(c)
  assert c2.model.clip == "tiny" and c2.model.head.num_heads == 2  # tiny's default, not B/16's
  d = config_lib.resolve(c2).data  # the image size and test resize follow the CLIP
  assert d.image_size == 32 and d.test_resize == round(32 * 256 / 224)
  assert params is not None and "model.clip='tiny'" in capsys.readouterr().out
  c = fs.get_config("root=/d,model=B/16")
  c.clip_checkpoint = ckpt
  with pytest.raises(ValueError, match=r"model.clip: clip_checkpoint .* is a tiny CLIP, but the "
                     r"config names model.clip='ViT-B/16'"):
    train._load_clip(c)
  c = fs.get_config("root=/d")
  c.clip_checkpoint = _converted(tmp_path / "three_layers", "tiny", vision_layers=3)
  with pytest.raises(ValueError, match="none of the presets"):
    train._load_clip(c)


def test_init_from_starts_from_another_runs_trained_parameters(tmp_path, capsys):
  a = _demo_cfg(tmp_path, steps=1)
  first = train.run(a, str(tmp_path / "a"))
  # The same model, nothing trained, from a's parameters: a's evaluation exactly.
  b = _demo_cfg(tmp_path, steps=1, init_from=str(tmp_path / "a"), seed=7)
  out = train.run(b, str(tmp_path / "b"), mode="eval")
  assert "parameters from" in capsys.readouterr().out
  for key in ("top1", "top5", "confusion"):
    assert out["eval"]["sets"]["test"][key] == first["eval"]["sets"]["test"][key]
  # A parameter of another shape is an error naming it.
  c = _demo_cfg(tmp_path, steps=1, init_from=str(tmp_path / "a"), **{"model.head.mlp_ratio": 2.0})
  with pytest.raises(ValueError, match=r"init_from: parameter head/layers_0/mlp/c_fc/\w+ is "
                     r"\(128,?.*\) in .*a \(step 1\) but \(64,?.*\) in this model"):
    train.run(c, str(tmp_path / "c"), mode="eval")
  c = _demo_cfg(tmp_path, steps=1, init_from=str(tmp_path / "nowhere"))
  with pytest.raises(ValueError, match="init_from: .*nowhere is not a work directory"):
    train.run(c, str(tmp_path / "d"))
