"""Parameter and FLOP counts of the VicTR head as functions of T, n, m, L, D (and W, r).

Notation: J = n + m text tokens, N = 1 + J tokens per frame, W head width (default D),
r MLP ratio, L layers, k auxiliary categories. FLOPs count a multiply-add as 2 and are
per video, forward only (a training step is about 3x: forward + backward). They count
the matmuls: XLA's own count adds the elementwise work (LayerNorm, softmax, GELU), a few
percent at CLIP widths (tests/test_cost.py compares the two).

Per layer, divided attention (cross-modal within each frame, then temporal):
  cross-modal attention   8 T N W^2 + 4 T N^2 W      (q/k/v/out projections; scores, mix)
  temporal attention      8 T N W^2 + 4 N T^2 W
  affinity re-weighting   2 T J W
  MLP                     4 r T N W^2
Joint attention replaces the two attentions by 8 T N W^2 + 4 (T N)^2 W.
Outside the layers: initial affinity 2 T J D, in/out projections when W != D
(2 T N D W + 2 N D W), the classifier 2 (n + m + k n) D.

Rematerialised backward passes recompute forward work (the `recomputed_*` functions):
with `remat`, each layer's forward is run again, except its last matmul (the MLP output
projection c_proj: the layer's output is not needed by its own backward, so XLA drops
it); each step of a chunked attention (`attention_chunk`) recomputes its scores
(2 L S W for L queries over S keys), and a frame-blocked MLP without remat its c_fc
(2 r T N W^2).

So the head grows linearly in T and J through the projections and MLP, with quadratic
terms T N^2 (cross-modal) and N T^2 (temporal); joint attention is quadratic in T N. The
text tower runs once per step on J prompts (not per video), the image tower once per frame.
"""


def head_params(d: int, *, width: int = 0, layers: int = 1, num_frames: int = 8,
                mlp_ratio: float = 4.0, attention: str = "divided",
                aux_categories: int = 0, link: str = "logits") -> int:
  """Trainable parameters of the VicTR head (+ gamma when aux_categories > 0), with its
  gates to CLIP: gate_logits (link 'logits') or gate_video and gate_text ('embeddings')."""
  w = width or d
  h = int(w * mlp_ratio)
  attn = 4 * w * w + 4 * w + 2 * w  # in_proj, out_proj (+ biases), its LayerNorm
  per_layer = (2 if attention == "divided" else 1) * attn + 2 * w + (2 * w * h + h + w)
  total = layers * per_layer + 2 * w + num_frames * w + 2 * w  # modality, time, ln_post
  total += 1 if link == "logits" else 2  # the gates
  if w != d:
    total += (d * w + w) + (w * d + d)
  return total + aux_categories


def _head_layer(t: int, tokens: int, w: int, mlp_ratio: float, attention: str) -> float:
  """Forward FLOPs of one head layer for one video (tokens = 1 + J per frame)."""
  if attention == "divided":
    attn = 16 * t * tokens * w * w + 4 * t * tokens ** 2 * w + 4 * tokens * t ** 2 * w
  else:
    attn = 8 * t * tokens * w * w + 4 * (t * tokens) ** 2 * w
  return attn + 2 * t * (tokens - 1) * w + 4 * mlp_ratio * t * tokens * w * w


def head_flops(t: int, n: int, m: int, d: int, *, width: int = 0, layers: int = 1,
               mlp_ratio: float = 4.0, attention: str = "divided", k: int = 3) -> float:
  """Forward FLOPs of the head for one video."""
  w = width or d
  j = n + m
  tokens = 1 + j
  total = (layers * _head_layer(t, tokens, w, mlp_ratio, attention) + 2 * t * j * d
           + 2 * (n + m + k * n) * d)
  if w != d:
    total += 2 * t * tokens * d * w + 2 * tokens * d * w
  return float(total)


def recomputed_head_flops(t: int, n: int, m: int, d: int, *, width: int = 0, layers: int = 1,
                          mlp_ratio: float = 4.0, attention: str = "divided",
                          remat: bool = True, chunk: int = 0) -> float:
  """Forward FLOPs the head's backward recomputes for one video: with `remat` each
  layer's forward but its c_proj; with attention `chunk` > 0 each chunked attention's
  scores (an attention over more than `chunk` queries), and without remat the
  frame-blocked MLP's c_fc. Running the head a few videos at a time (`video_blocked`)
  adds nothing to XLA's count (tests/test_cost.py)."""
  w = width or d
  tokens = 1 + n + m
  h = mlp_ratio * w
  per_layer = 0.0
  if remat:
    per_layer += _head_layer(t, tokens, w, mlp_ratio, attention) - 2 * t * tokens * w * h
  if chunk > 0:
    if attention == "divided":
      per_layer += (2 * t * tokens ** 2 * w if tokens > chunk else 0)
      per_layer += (2 * tokens * t ** 2 * w if t > chunk else 0)
    elif t * tokens > chunk:
      per_layer += 2 * (t * tokens) ** 2 * w
    if not remat and t > 1:
      per_layer += 2 * t * tokens * w * h
  total = layers * per_layer
  return float(total)


def _block(tokens: int, width: int, mlp: int) -> float:
  """Forward FLOPs of one pre-LN transformer block on `tokens` tokens."""
  return 8 * tokens * width * width + 4 * tokens ** 2 * width + 4 * tokens * width * mlp


def _c_proj(tokens: int, width: int, mlp: int) -> float:
  """The block's last matmul (MLP c_proj), which a rematerialised backward skips."""
  return 2 * tokens * width * mlp


def vit_flops(image_size: int, patch: int, width: int, layers: int, mlp: int,
              embed: int) -> float:
  """Forward FLOPs of a CLIP image tower for one image."""
  tokens = (image_size // patch) ** 2 + 1
  return float(2 * (tokens - 1) * 3 * patch * patch * width + layers * _block(tokens, width, mlp)
               + 2 * width * embed)


def recomputed_vit_flops(image_size: int, patch: int, width: int, layers: int,
                         mlp: int) -> float:
  """Forward FLOPs a rematerialised backward recomputes per image (remat on the blocks)."""
  tokens = (image_size // patch) ** 2 + 1
  return float(layers * (_block(tokens, width, mlp) - _c_proj(tokens, width, mlp)))


def text_flops(length: int, width: int, layers: int, mlp: int, embed: int) -> float:
  """Forward FLOPs of a CLIP text tower for one prompt of `length` tokens."""
  return float(layers * _block(length, width, mlp) + 2 * width * embed)


def recomputed_text_flops(length: int, width: int, layers: int, mlp: int) -> float:
  """Forward FLOPs a rematerialised backward recomputes per prompt."""
  return float(layers * (_block(length, width, mlp) - _c_proj(length, width, mlp)))
