"""Independent numpy re-computations of each VicTR operation (float64, explicit loops)."""
import numpy as np


def norm(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def zscore(cos, groups):
  """z-scores over the last axis within consecutive column groups (explicit loop)."""
  out = np.zeros_like(cos)
  start = 0
  for size in groups:
    for idx in np.ndindex(cos.shape[:-1]):
      g = cos[idx][start:start + size]
      if size:
        out[idx][start:start + size] = (g - g.mean()) / np.sqrt(g.var() + 1e-6)
    start += size
  return out


def g(cos, fn, scale, standardize=False, groups=None):
  cos = np.asarray(cos, np.float64)
  j = cos.shape[-1]
  if standardize:
    cos = zscore(cos, groups or (j,))
  if fn == "softmax":
    z = np.exp(scale * cos - (scale * cos).max(-1, keepdims=True))
    return j * z / z.sum(-1, keepdims=True)
  if fn == "sigmoid":
    return 2 / (1 + np.exp(-scale * (cos - cos.mean(-1, keepdims=True))))
  return np.ones_like(cos)


def layer_norm(x, p, eps=1e-5):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def mha(x, p, heads):
  """x (L, W); p: in_proj/out_proj kernels and biases. Plain per-head attention."""
  l, w = x.shape
  hd = w // heads
  qkv = x @ p["in_proj"]["kernel"] + p["in_proj"]["bias"]
  q, k, v = qkv[:, :w], qkv[:, w:2 * w], qkv[:, 2 * w:]
  out = np.zeros((l, w))
  for h in range(heads):
    sl = slice(h * hd, (h + 1) * hd)
    s = q[:, sl] @ k[:, sl].T / np.sqrt(hd)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    out[:, sl] = a @ v[:, sl]
  return out @ p["out_proj"]["kernel"] + p["out_proj"]["bias"]


def initial_affinity(f, e, fn, scale, standardize=False, groups=None):
  b, t, _ = f.shape
  out = np.zeros((b, t, e.shape[0]))
  for i in range(b):
    for s in range(t):
      for j in range(e.shape[0]):
        out[i, s, j] = norm(f[i, s]) @ norm(e[j])
  return g(out, fn, scale, standardize, groups)


def token_boost(f, e, a0):
  b, t, d = f.shape
  x = np.zeros((b, t, 1 + e.shape[0], d))
  for i in range(b):
    for s in range(t):
      x[i, s, 0] = f[i, s]
      for j in range(e.shape[0]):
        x[i, s, 1 + j] = (1.0 if a0 is None else a0[i, s, j]) * e[j]
  return x


def cross_modal(x, p, heads):
  out = x.copy()
  for i in range(x.shape[0]):
    for s in range(x.shape[1]):
      out[i, s] += mha(layer_norm(x[i, s], p["ln"]), p["attn"], heads)
  return out


def temporal(x, p, heads):
  out = x.copy()
  for i in range(x.shape[0]):
    for n in range(x.shape[2]):
      out[i, :, n] += mha(layer_norm(x[i, :, n], p["ln"]), p["attn"], heads)
  return out


def joint(x, p, heads):
  b, t, n, w = x.shape
  out = x.copy()
  for i in range(b):
    out[i] += mha(layer_norm(x[i].reshape(t * n, w), p["ln"]), p["attn"], heads).reshape(t, n, w)
  return out


def affinity_reweight(x, fn, scale, standardize=False, groups=None, pooled=False):
  v, s = x[:, :, 0], x[:, :, 1:]
  sbar = s.mean(axis=1)
  cos = np.einsum("btw,bjw->btj", norm(v), norm(sbar))
  a = g(cos, fn, scale, standardize, groups)
  out = x.copy()
  for t in range(x.shape[1]):  # each frame's own tokens, or the pooled ones
    out[:, t, 1:] = (sbar if pooled else s[:, t]) * a[:, t, :, None]
  return out, a


def mlp(x, p):
  from scipy.special import erf
  h = x @ p["c_fc"]["kernel"] + p["c_fc"]["bias"]
  h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
  return h @ p["c_proj"]["kernel"] + p["c_proj"]["bias"]


def aggregate_auxiliary(zv, zx, cats, k, scale, rule="softmax"):
  b, m, d = zx.shape
  zc = np.zeros((b, k, d))
  for i in range(b):
    for c in range(k):
      idx = [j for j in range(m) if cats[j] == c]
      if not idx:
        continue
      logit = np.array([scale * norm(zv[i]) @ norm(zx[i, j]) for j in idx])
      w = np.exp(logit - logit.max()) if rule == "softmax" else np.ones(len(idx))
      w /= w.sum()
      zc[i, c] = sum(wj * zx[i, j] for wj, j in zip(w, idx))
  return zc


def affinity_logits(zv, za, zc, gamma, scale, aux_scale=1.0):
  b, n, _ = za.shape
  out = np.zeros((b, n))
  for i in range(b):
    for c_i in range(n):
      out[i, c_i] = scale * norm(zv[i]) @ norm(za[i, c_i])
      if zc is not None:
        for c in range(zc.shape[1]):
          out[i, c_i] += aux_scale * gamma[c] * (norm(zv[i]) @ norm(zc[i, c])) * (norm(za[i, c_i]) @ norm(zc[i, c]))
  return out


def gated_link(clip, head_out, gate, norm_matched):
  if norm_matched:
    head_out = np.linalg.norm(clip, axis=-1, keepdims=True) * norm(head_out)
  return clip + gate * head_out


def head(p, f, e, n, scale, heads, fn="softmax", standardize=False, temperature=0.0,
         norm_matched=False, temporal_relative=False, pooled=False):
  """The whole head (1+ layers, divided attention, gated residual, width D)."""
  scale = scale if temperature <= 0 else 1.0 / temperature
  groups = (n, e.shape[0] - n)
  a0 = initial_affinity(f, e, fn, scale, standardize, groups)
  x = token_boost(f, e, a0)
  x = x + np.concatenate([p["modality_embedding"][:1],
                          np.repeat(p["modality_embedding"][1:], e.shape[0], 0)])[None, None]
  rms = np.sqrt((f ** 2).mean(axis=(1, 2))) if temporal_relative else np.ones(f.shape[0])
  x = x + p["temporal_embedding"][None, :, None] * rms[:, None, None, None]
  affs = [a0]
  i = 0
  while f"layers_{i}" in p:
    lp = p[f"layers_{i}"]
    x = cross_modal(x, lp["cross_modal"], heads)
    x = temporal(x, lp["temporal"], heads)
    x, a = affinity_reweight(x, fn, scale, standardize, groups, pooled)
    affs.append(a)
    x = x + mlp(layer_norm(x, lp["ln_mlp"]), lp["mlp"])
    i += 1
  x = layer_norm(x, p["ln_post"]).mean(axis=1)
  video = gated_link(f.mean(1), x[:, 0], p["gate_video"], norm_matched)
  text = gated_link(np.broadcast_to(e[None], x[:, 1:].shape), x[:, 1:], p["gate_text"],
                    norm_matched)
  return video, text[:, :n], text[:, n:], np.stack(affs)
