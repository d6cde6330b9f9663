"""CLIP's byte-level BPE tokenizer, torch-free.

Same ids as OpenAI's `SimpleTokenizer`: text is cleaned (ftfy, HTML unescaped twice,
whitespace collapsed, lower case), split by CLIP's regex, each piece mapped byte-wise to
printable unicode and merged by the ranked BPE merges of `bpe_simple_vocab_16e6.txt.gz`.
`tokenize` wraps each text in SOT (49406) ... EOT (49407), pads with 0 to the context
length (77), and truncates to 76 tokens + EOT.
"""
import functools
import gzip
import html
import os

import ftfy
import numpy as np
import regex

from data_pipelines import gpath

VOCAB_PATH = os.path.join(os.path.dirname(__file__), "bpe_simple_vocab_16e6.txt.gz")
VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
SOT, EOT = "<|startoftext|>", "<|endoftext|>"
CONTEXT_LENGTH = 77
NUM_MERGES = 49152 - 256 - 2  # The merges CLIP uses; the vocabulary is 49408 ids.

# open_clip's special-token spellings: these literal strings in a text become SOT / EOT, as
# in open_clip's SimpleTokenizer (OpenAI's spelled them <|startoftext|>, <|endoftext|>;
# the ids are the same).
SPECIAL_TEXT = {"<start_of_text>": SOT, "<end_of_text>": EOT}
_PIECES = regex.compile(
    r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE)


@functools.lru_cache()
def byte_to_unicode() -> dict[int, str]:
  """Maps the 256 byte values to printable unicode characters (GPT-2's table).

  The order matters: it is the order of the first 256 vocabulary ids. Bytes that are
  printable map to themselves and come first; the others follow as chr(256 + n).
  """
  printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
               + list(range(ord("®"), ord("ÿ") + 1)))
  table = {b: chr(b) for b in printable}
  others = [b for b in range(256) if b not in table]
  table.update({b: chr(256 + n) for n, b in enumerate(others)})
  return table


def clean(text: str) -> str:
  """ftfy, HTML unescape twice, collapse whitespace, strip, lower case."""
  text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
  return regex.sub(r"\s+", " ", text).strip().lower()


class Tokenizer:
  """Byte-level BPE with CLIP's vocabulary. `encode` gives ids without SOT/EOT."""

  def __init__(self, vocab_path: str = VOCAB_PATH):
    try:
      with gpath.open(vocab_path, "rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    except OSError as e:
      raise OSError(f"cannot read the BPE vocabulary {vocab_path}: {e}") from e
    merges = [tuple(line.split()) for line in lines[1:NUM_MERGES + 1]]
    units = list(byte_to_unicode().values())
    vocab = units + [u + "</w>" for u in units] + ["".join(m) for m in merges] + [SOT, EOT]
    self.encoder = {tok: i for i, tok in enumerate(vocab)}
    self.decoder = {i: tok for tok, i in self.encoder.items()}
    self.ranks = {m: i for i, m in enumerate(merges)}
    self.byte_encoder = byte_to_unicode()
    self.byte_decoder = {u: b for b, u in self.byte_encoder.items()}
    self.sot_id, self.eot_id = self.encoder[SOT], self.encoder[EOT]
    self._cache = {}

  @property
  def vocab_size(self) -> int:
    return len(self.encoder)

  def bpe(self, piece: str) -> list[str]:
    """Merges one regex piece (in byte-unicode) into BPE units; the last ends in '</w>'."""
    if piece in self._cache:
      return self._cache[piece].split(" ")
    word = list(piece[:-1]) + [piece[-1] + "</w>"]
    while len(word) > 1:
      pairs = set(zip(word, word[1:]))
      best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
      if best not in self.ranks:
        break
      merged, i = [], 0
      while i < len(word):
        if i < len(word) - 1 and (word[i], word[i + 1]) == best:
          merged.append(word[i] + word[i + 1])
          i += 2
        else:
          merged.append(word[i])
          i += 1
      word = merged
    self._cache[piece] = " ".join(word)
    return word

  def encode(self, text: str) -> list[int]:
    ids = []
    for piece in _PIECES.findall(clean(text)):
      if piece in SPECIAL_TEXT:
        ids.append(self.encoder[SPECIAL_TEXT[piece]])
        continue
      piece = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
      ids.extend(self.encoder[u] for u in self.bpe(piece))
    return ids

  def decode(self, ids) -> str:
    """ids -> text; stops at the first EOT and drops SOT (so padded rows decode cleanly)."""
    units = []
    for i in (int(i) for i in ids):
      if i == self.eot_id:
        break
      if i != self.sot_id:
        units.append(self.decoder[i])
    raw = bytearray(self.byte_decoder[c] for c in "".join(units))
    return raw.decode("utf-8", errors="replace").replace("</w>", " ").strip()

  def __call__(self, texts, context_length: int = CONTEXT_LENGTH) -> np.ndarray:
    if isinstance(texts, str):
      texts = [texts]
    out = np.zeros((len(texts), context_length), np.int32)
    for row, text in enumerate(texts):
      ids = [self.sot_id] + self.encode(text) + [self.eot_id]
      if len(ids) > context_length:
        ids = ids[:context_length]
        ids[-1] = self.eot_id
      out[row, :len(ids)] = ids
    return out


@functools.lru_cache(maxsize=None)
def get_tokenizer(vocab_path: str = VOCAB_PATH) -> Tokenizer:
  return Tokenizer(vocab_path)


def tokenize(texts, context_length: int = CONTEXT_LENGTH) -> np.ndarray:
  """texts: str or list of str -> np.int32 (N, context_length)."""
  return get_tokenizer()(texts, context_length)


def trim_tokens(tokens: np.ndarray, multiple: int = 8) -> np.ndarray:
  """Drops the padding columns after the longest prompt's EOT, keeping a multiple of
  `multiple` columns (few distinct shapes, so few compiles). The causal text tower gives
  the same EOT embedding for the trimmed ids, at a fraction of the cost (class prompts are
  ~10 tokens of 77). tokens (N, L) -> (N, L') with L' <= L."""
  tokens = np.asarray(tokens)
  if tokens.size == 0:
    return tokens
  longest = int(tokens.argmax(axis=1).max()) + 1  # EOT is the largest id
  keep = min(tokens.shape[1], -(-longest // multiple) * multiple)
  return tokens[:, :keep]
