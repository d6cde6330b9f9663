"""Reference PyTorch CLIPs with random weights, built offline from configs, and the
files each import format expects. Every parameter (biases and LayerNorms included) is
perturbed so that a wrong mapping of any tensor shows."""
import os

import numpy as np
import torch

from victr_jax.clip import tokenize

TEXTS = ["a photo of a dog", "a person playing the guitar", "someone riding a bike",
         "a cat", "Pushing something from left to right!", "&amp; emoji 😀 unicode é"]


def _perturb(model, seed):
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      p.add_(0.05 * torch.randn(p.shape, generator=g))
      if name.endswith("logit_scale"):
        p.fill_(np.log(1 / 0.07))
  return model.eval()


def open_clip_model(quick_gelu: bool, seed: int = 0):
  """A small open_clip ViT CLIP. QuickGELU: 32px, patch 8; GELU: 48px, patch 16."""
  from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
  torch.manual_seed(seed)
  if quick_gelu:
    vision = CLIPVisionCfg(layers=2, width=128, head_width=64, patch_size=8, image_size=32)
    text = CLIPTextCfg(width=128, heads=2, layers=2)
    embed = 32
  else:
    vision = CLIPVisionCfg(layers=3, width=192, head_width=64, patch_size=16, image_size=48,
                           mlp_ratio=2.0)
    text = CLIPTextCfg(width=64, heads=1, layers=2, mlp_ratio=3.0)
    embed = 48
  model = CLIP(embed_dim=embed, vision_cfg=vision, text_cfg=text, quick_gelu=quick_gelu)
  return _perturb(model, seed)


def hf_model(seed: int = 0):
  """A non-default transformers.CLIPModel: exact GELU, 3 text heads of 16, 4 vision heads."""
  from transformers import CLIPConfig, CLIPModel
  torch.manual_seed(seed)
  cfg = CLIPConfig(
      text_config=dict(hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                       num_attention_heads=3, hidden_act="gelu", eos_token_id=49407,
                       bos_token_id=49406, vocab_size=49408),
      vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, image_size=48, patch_size=16, hidden_act="gelu"),
      projection_dim=24)
  return _perturb(CLIPModel(cfg), seed)


def image_size(model):
  if hasattr(model, "visual"):
    s = model.visual.image_size
    return s[0] if isinstance(s, (tuple, list)) else s
  return model.config.vision_config.image_size


def inputs(model, n_images=5, seed=0):
  """(images NHWC float32 normalised-like, tokens int32 (N, 77))."""
  s = image_size(model)
  images = np.random.default_rng(seed).standard_normal((n_images, s, s, 3)).astype(np.float32)
  return images, tokenize(TEXTS)


@torch.no_grad()
def embed(model, images, tokens):
  """L2-normalised (image, text) embeddings of a reference model, float64 numpy."""
  x = torch.from_numpy(images).permute(0, 3, 1, 2)
  t = torch.from_numpy(tokens.astype(np.int64))
  if hasattr(model, "visual"):
    img, txt = model.encode_image(x), model.encode_text(t)
  else:
    img = model.get_image_features(pixel_values=x)
    txt = model.get_text_features(input_ids=t)
    img = getattr(img, "pooler_output", img)
    txt = getattr(txt, "pooler_output", txt)
  img, txt = img.double(), txt.double()
  return ((img / img.norm(dim=-1, keepdim=True)).numpy(),
          (txt / txt.norm(dim=-1, keepdim=True)).numpy())


class _OpenAIArchive(torch.nn.Module):
  """OpenAI's layout: the CLIP towers plus int buffers input_resolution, context_length,
  vocab_size at the top level of the state dict."""

  def __init__(self, model):
    super().__init__()
    for name in ("visual", "transformer", "token_embedding", "ln_final"):
      setattr(self, name, getattr(model, name))
    for name in ("positional_embedding", "text_projection", "logit_scale"):
      setattr(self, name, getattr(model, name))
    self.register_buffer("input_resolution", torch.tensor(image_size(model)))
    self.register_buffer("context_length", torch.tensor(77))
    self.register_buffer("vocab_size", torch.tensor(49408))

  def forward(self, x):
    return self.visual(x)


def save_openai_torchscript(model, path):
  """An OpenAI-style archive: TorchScript, fp16. Returns the fp32 model it holds."""
  m = _clone(model).half()
  s = image_size(model)
  archive = torch.jit.trace(_OpenAIArchive(m).float(), torch.zeros(1, 3, s, s),
                            check_trace=False)
  archive = archive.half()
  torch.jit.save(archive, path)
  return m.float().eval()


def _clone(model):
  import copy
  return copy.deepcopy(model)


def save_state_dict(model, path):
  sd = {k: v.contiguous() for k, v in model.state_dict().items()}
  if path.endswith(".safetensors"):
    from safetensors.torch import save_file
    save_file(sd, path)
  else:
    torch.save(sd, path)
  return path


def save_hf(model, directory, bin_format=False):
  model.save_pretrained(directory)
  if bin_format:
    os.remove(os.path.join(directory, "model.safetensors"))
    torch.save(model.state_dict(), os.path.join(directory, "pytorch_model.bin"))
  return directory
