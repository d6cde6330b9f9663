"""One inference path: a model, its parameters and free-form labels -> scores for videos.

  pred = predict.Predictor.from_checkpoint(DIR, ["surfing", "skiing"])  # CLIP dir or work dir
  frames, idx = clip_frames("video.mp4", pred.views)   # (V, T, S, S, 3), (clips, T)
  out = pred(frames[None])                              # a batch of B videos
  out.logits (B, V, n)      every test view's scores
  out.probs (B, n)          the views combined as the evaluation combines them
  out.affinities            (L+1, B, V, T, n+m) for VicTR, None for the baselines

`Predictor(model, params, names, config)` takes a model already in hand (the trainer's
state, a fresh head): config is a work directory's (its prompt template, auxiliary
vocabulary, test views and `view_aggregation`) or None for a converted CLIP checkpoint
(zero-shot with frame averaging: one centre view, mean of softmax probabilities).
Probabilities are `metrics.aggregate_views(logits, how)` with the evaluator's `how`:
the config's `view_aggregation`, or '' = the mean of softmax probabilities (sigmoid for
multi-label data). The step is jitted once (a compile per batch shape) and a batch is
split over this process's devices, padded to a multiple of them.

Test views of a video file (`clip_frames`): those its evaluation makes from its record
(pipeline.eval_views on config.data: sampling mode and stride, frames, test_resize, image
size, test clips x crops), frames indexed at the video's own rate as in records prepared
with the default `--fps 0`; only the sampled frames are decoded (video_io.decode_sampled),
so an hour-long video is fine.
"""
import copy
import dataclasses
import os
from typing import Optional

import jax
import ml_collections
import numpy as np

from data_pipelines import gpath, splits, synthetic, video_io, video_ops
from victr_jax import config_lib, config_version, data, metrics, models, programs, sharding
from victr_jax.train_state import Prompts

DEFAULT_TEMPLATE = "a photo of a {}."  # the configs' class prompt


def views_config(config=None, num_frames: Optional[int] = None,
                 image_size: int = 224) -> ml_collections.ConfigDict:
  """The test-view fields of a data config, as pipeline.eval_views reads them.

  config: a work directory's config (its evaluation's sampling mode, stride, frames,
  image size, test_resize, test clips and crops), or None for a converted CLIP checkpoint
  (one centre view: `num_frames` (default 8) segment frames, short side to image_size,
  centre crop). num_frames, when given, overrides the frame count.
  """
  if config is None:
    return ml_collections.ConfigDict(dict(
        num_frames=num_frames or 8, sampling="segments", stride=1, image_size=image_size,
        test_resize=0, num_test_clips=1, num_test_crops=1))
  d = config.data
  return ml_collections.ConfigDict(dict(
      num_frames=num_frames or d.num_frames, sampling=d.sampling, stride=d.stride,
      image_size=d.image_size, test_resize=d.get("test_resize", 0),
      num_test_clips=d.get("num_test_clips", 1), num_test_crops=d.get("num_test_crops", 1)))


def view_indices(n: int, data_cfg) -> np.ndarray:
  """(num_test_clips, T) frame indices into a video of n frames: test clip c is the view c
  of num_test_clips that pipeline.eval_views samples."""
  return np.stack([video_ops.sample_indices(n, data_cfg.num_frames, mode=data_cfg.sampling,
                                            stride=data_cfg.stride, view=c,
                                            num_views=data_cfg.num_test_clips)
                   for c in range(data_cfg.num_test_clips)])


def clip_frames(video: str, data_cfg) -> tuple[np.ndarray, np.ndarray]:
  """A video file's test views as data_cfg's evaluation makes them from its record.

  Returns (frames (V, T, S, S, 3) float32 CLIP-normalised, V = clips x crops clip-major
  like pipeline.eval_views; indices (clips, T) of the frames used). Raises ValueError
  naming the file when it is missing or cannot be decoded.
  """
  if not gpath.isfile(video):
    raise ValueError(f"{video}: no such video file")
  with gpath.local_copy(video) as local:  # PyAV decodes local files: a gs:// video is copied
    try:
      frames, idx = video_io.decode_sampled(local, lambda n: view_indices(n, data_cfg))
    except ValueError as e:  # named by the video's own path, not its temporary copy's
      raise ValueError(str(e).replace(local, video)) from e
  t = data_cfg.num_frames
  views = [video_ops.test_crops(frames[c * t:(c + 1) * t], data_cfg.image_size,
                                data_cfg.num_test_crops, data_cfg.test_resize)
           for c in range(data_cfg.num_test_clips)]
  return video_ops.normalize(np.concatenate(views)), idx


def load_model(checkpoint: str):
  """A converted CLIP checkpoint (victr-convert-clip) or a trained work directory
  (config.json + checkpoints/) -> (model, params, config or None, description)."""
  from victr_jax import checkpointing, clip  # pylint: disable=g-import-not-at-top
  if not gpath.exists(checkpoint):
    raise ValueError(f"--checkpoint {checkpoint}: no such file or directory")
  if gpath.exists(os.path.join(checkpoint, "config.json")) and gpath.isdir(
      os.path.join(checkpoint, "checkpoints")):
    config = config_version.read_workdir_config(checkpoint)  # older layouts migrated
    model = models.build_model(config.model)
    step, state, _ = checkpointing.restore_latest(checkpoint)
    return model, state["params"], config, f"{config.model.name} work directory, step {step}"
  clip_cfg, clip_params = clip.load_params(checkpoint)
  return (models.zero_shot_model(clip_cfg=clip_cfg), {"clip": clip_params}, None,
          "CLIP zero-shot, frame averaging")


def nonfinite_weights(params) -> int:
  """How many parameter values are NaN or inf (a damaged or diverged checkpoint)."""
  return sum(int(np.size(x) - np.count_nonzero(np.isfinite(np.asarray(x))))
             for x in jax.tree.leaves(params))


def aux_vocabulary(config, aux_vocab: Optional[str] = None):
  """(phrases, tokens (m, L), categories (m,)) of the auxiliary prompts a VicTR config
  reads (aux_vocab, when given, replaces config.aux_vocab), or ([], None, None) when off."""
  if aux_vocab:
    config = copy.deepcopy(config)
    config.aux_vocab = aux_vocab
  tokens, cats, _ = data.aux_prompts(config)
  if tokens is None:
    return [], None, None
  phrases = (synthetic.aux_vocab()[0] if config.aux_vocab == "synthetic"
             else splits.read_aux_vocab(config.aux_vocab or None)[0])
  return list(phrases), tokens, cats


@dataclasses.dataclass(frozen=True)
class Prediction:
  """Scores of a batch of B videos with V views of T frames and n labels (numpy)."""
  logits: np.ndarray                    # (B, V, n) float32
  probs: np.ndarray                     # (B, n) float32, the views combined
  affinities: Optional[np.ndarray]      # (L+1, B, V, T, n+m) float32, or None

  def ranked(self, names, b: int, top_k: int) -> list[dict]:
    """Video b's top_k labels, best first: [{'label', 'probability'}]."""
    order = np.argsort(-self.probs[b], kind="stable")[:top_k]
    return [{"label": names[i], "probability": float(self.probs[b, i])} for i in order]


def _forward(model, how: str):
  """(params, frames (B, V, T, S, S, 3), text) -> {'logits' (B, V, n), 'probs' (B, n),
  'affinities' (L+1, B, V, T, J) when the model gives them}."""

  def fn(params, frames, text: Prompts):
    res = programs.apply_views(model, params, frames, text)
    res["probs"] = metrics.aggregate_views(res["logits"], how)
    if res["affinities"] is None:
      del res["affinities"]
    return res

  return fn


class Predictor:
  """Scores batches of videos (see the module docstring).

  model, params: a model of `models` and its parameters ({'clip': ...} for zero-shot).
  names: the n labels. config: the work directory's config or None (converted CLIP).
  template: the class prompt when config is None (a config uses its prompt_template).
  aux_vocab: replaces the config's auxiliary vocabulary (VicTR); with config None a VicTR
  model reads this vocabulary ('synthetic', a file, '' the default; None: none).
  num_frames: overrides the frames per view. devices: default this process's devices.
  """

  def __init__(self, model, params, names, config=None, *, template: str = DEFAULT_TEMPLATE,
               aux_vocab: Optional[str] = None, num_frames: Optional[int] = None,
               description: str = "", devices=None):
    names = list(names)
    if not names:
      raise ValueError("no labels to rank")
    if config is not None:
      config = config_lib.resolve(config)  # data.image_size 0: the CLIP's
    self.model, self.config, self.names, self.description = model, config, names, description
    self.views = views_config(config, num_frames, model.clip_cfg.image_size)
    if config is not None:
      template = config.prompt_template
    self.aux_phrases, aux_tokens, aux_cats = self._aux(config, aux_vocab)
    self.text = Prompts(data.class_tokens(names, template), aux_tokens, aux_cats)
    self.how = self._aggregation(config)
    self.layout = sharding.layout({"data": -1, "fsdp": 1, "model": 1, "fsdp_params": False},
                                  jax.local_devices() if devices is None else devices)
    repl = self.layout.replicated
    with self.layout.use():
      self._step = jax.jit(_forward(model, self.how),
                           in_shardings=(repl, self.layout.batch, repl))
    self._text = programs.replicate(self.text, self.layout)
    self.params = jax.device_put(params, repl)

  def _aux(self, config, aux_vocab):
    if not isinstance(self.model, models.VicTR):
      return [], None, None  # the baselines ignore auxiliary prompts
    if config is None:
      if aux_vocab is None:
        return [], None, None
      config = ml_collections.ConfigDict(dict(model=self.model.cfg.to_dict(), aux_vocab=""))
    return aux_vocabulary(config, aux_vocab)

  @staticmethod
  def _aggregation(config) -> str:
    """The evaluator's view aggregation for `config` (None: mean of softmax probs)."""
    if config is None:
      return "mean_probs"
    return config.get("view_aggregation", "") or (
        "mean_sigmoid" if config.data.get("multi_label", False) else "mean_probs")

  @classmethod
  def from_checkpoint(cls, checkpoint: str, names, *, aux_vocab: Optional[str] = None,
                      num_frames: Optional[int] = None,
                      template: str = DEFAULT_TEMPLATE) -> "Predictor":
    """The predictor of a converted CLIP checkpoint or a trained work directory. Raises
    ValueError when the checkpoint is missing or holds NaN or inf weights."""
    model, params, config, what = load_model(checkpoint)
    bad = nonfinite_weights(params)
    if bad:
      raise ValueError(f"--checkpoint {checkpoint}: {bad} weights are not finite (NaN or inf):"
                       " the checkpoint is damaged or diverged")
    return cls(model, params, names, config, template=template, aux_vocab=aux_vocab,
               num_frames=num_frames, description=what)

  @property
  def prompts(self) -> list[str]:
    """The J = n + m texts of the affinities: the labels, then the auxiliary phrases."""
    return self.names + self.aux_phrases

  @property
  def num_devices(self) -> int:
    return self.layout.batch_devices

  def with_params(self, params) -> "Predictor":
    """This predictor (same compiled step) with other parameters of the same shapes."""
    other = copy.copy(self)
    other.params = jax.device_put(params, self.layout.replicated)
    return other

  def __call__(self, frames, pad_to: int = 0) -> Prediction:
    """frames (B, V, T, S, S, 3) float32 normalised -> Prediction. The batch is padded
    (zeros, dropped from the result) to a multiple of the devices and to at least pad_to
    videos, so a last short batch reuses the full batch's compiled step."""
    frames = np.asarray(frames, np.float32)
    b = frames.shape[0]
    size = max(b, pad_to)
    size = -(-size // self.num_devices) * self.num_devices
    if size > b:
      frames = np.concatenate([frames, np.zeros((size - b, *frames.shape[1:]), np.float32)])
    with self.layout.use():
      out = self._step(self.params, frames, self._text)
    aff = out.get("affinities")
    return Prediction(np.asarray(out["logits"])[:b], np.asarray(out["probs"])[:b],
                      None if aff is None else np.asarray(aff)[:, :b])

  def frames(self, video: str) -> tuple[np.ndarray, np.ndarray]:
    """clip_frames(video, self.views): (V, T, S, S, 3) views, (clips, T) indices."""
    return clip_frames(video, self.views)

