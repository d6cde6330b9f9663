"""CLIP architecture presets.

A `CLIPConfig` holds everything the weights of a checkpoint cannot show by themselves
(activation, head counts, LayerNorm epsilon) plus the sizes they can. Presets follow the
published OpenAI models; `tiny` and `tiny_gelu` are for tests, `demo` for the main job.
"""
import dataclasses
from typing import Any

ACTIVATIONS = ("quick_gelu", "gelu")


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
  """Sizes and choices of a ViT CLIP. Widths are per tower, `embed_dim` is the joint space."""
  embed_dim: int = 512
  # Vision tower.
  image_size: int = 224
  patch_size: int = 32
  vision_width: int = 768
  vision_layers: int = 12
  vision_heads: int = 12
  vision_mlp_dim: int = 3072
  # Text tower.
  context_length: int = 77
  vocab_size: int = 49408
  text_width: int = 512
  text_layers: int = 12
  text_heads: int = 8
  text_mlp_dim: int = 2048
  # Choices the weights do not show.
  act: str = "quick_gelu"  # OpenAI weights: quick_gelu; open_clip without -quickgelu: gelu.
  ln_eps: float = 1e-5

  def __post_init__(self):
    if self.act not in ACTIVATIONS:
      raise ValueError(f"CLIPConfig.act={self.act!r}: expected one of {ACTIVATIONS}")
    for tower, width, heads in (("vision", self.vision_width, self.vision_heads),
                                ("text", self.text_width, self.text_heads)):
      if width % heads:
        raise ValueError(f"CLIPConfig.{tower}_width={width} is not divisible by "
                         f"{tower}_heads={heads}")
    if self.image_size % self.patch_size:
      raise ValueError(f"CLIPConfig.image_size={self.image_size} is not a multiple of "
                       f"patch_size={self.patch_size}")

  @property
  def grid_size(self) -> int:
    return self.image_size // self.patch_size

  def replace(self, **kw) -> "CLIPConfig":
    return dataclasses.replace(self, **kw)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "CLIPConfig":
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - fields)
    if unknown:
      raise ValueError(f"unknown CLIPConfig field(s) {unknown}; known: {sorted(fields)}")
    return cls(**d)


_B = dict(vision_width=768, vision_layers=12, vision_heads=12, vision_mlp_dim=3072,
          text_width=512, text_layers=12, text_heads=8, text_mlp_dim=2048, embed_dim=512)
_L = dict(vision_width=1024, vision_layers=24, vision_heads=16, vision_mlp_dim=4096,
          text_width=768, text_layers=12, text_heads=12, text_mlp_dim=3072, embed_dim=768)
_TINY = dict(embed_dim=32, image_size=32, patch_size=8, vision_width=64, vision_layers=2,
             vision_heads=2, vision_mlp_dim=128, text_width=64, text_layers=2, text_heads=2,
             text_mlp_dim=128)

PRESETS: dict[str, CLIPConfig] = {
    "ViT-B/32": CLIPConfig(patch_size=32, **_B),
    "ViT-B/16": CLIPConfig(patch_size=16, **_B),
    "ViT-L/14": CLIPConfig(patch_size=14, **_L),
    "ViT-L/14-336": CLIPConfig(image_size=336, patch_size=14, **_L),
    "tiny": CLIPConfig(**_TINY),
    "tiny_gelu": CLIPConfig(act="gelu", **_TINY),
    # The main job's CLIP: tiny with one 32-px patch on 32-px frames, so where a shape is is
    # linear in the patch embedding. With 16-px patches (2 x 2) contrastive pretraining on the
    # synthetic frames grounded size words but left both towers blind to place (a frame and
    # its mirror image embedded with cosine 0.997; supervised, the same tower learns it).
    "demo": CLIPConfig(**dict(_TINY, patch_size=32)),
}
_ALIASES = {"B/32": "ViT-B/32", "B/16": "ViT-B/16", "L/14": "ViT-L/14",
            "L/14-336": "ViT-L/14-336", "ViT-B-32": "ViT-B/32", "ViT-B-16": "ViT-B/16",
            "ViT-L-14": "ViT-L/14", "ViT-L-14-336": "ViT-L/14-336"}


def get_config(name: str, **overrides) -> CLIPConfig:
  """Returns a preset by name ('ViT-B/16', 'B/16', 'ViT-B-16', 'tiny', ...) with overrides."""
  key = _ALIASES.get(name, name)
  if key not in PRESETS:
    raise KeyError(f"unknown CLIP preset {name!r}; known: {sorted(PRESETS)}")
  return PRESETS[key].replace(**overrides)
