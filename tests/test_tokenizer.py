"""The tokenizer equals open_clip's SimpleTokenizer id for id."""
import hashlib
import os

import numpy as np
import pytest

from data_pipelines import splits
from victr_jax import clip
from victr_jax.clip import tokenizer as tok

CLASSNAMES_DIR = splits.CLASSNAMES_DIR
TEMPLATES = ["a photo of a {}.", "a video of a person {}.", "a clip of {}", "{}",
             "Someone is {} in the video!", "an example of {}, a type of action."]
EXTRA = [
    "", " ", "   leading and trailing   ", "UPPER case Words", "tabs\tand\nnew\r\nlines",
    "don't, can't, we'll, they're, I'm, she'd, it's", "numbers 1234567890 and 3.14159",
    "&amp;", "&amp;amp; double", "&lt;b&gt;bold&lt;/b&gt;", "caf&eacute; &#233; &#x263A;",
    "😀 😃 😄 emoji 👍🏽 family 👨‍👩‍👧‍👦 flags 🇯🇵", "日本語のテキスト", "中文文本测试", "한국어",
    "Ελληνικά", "русский текст", "العربية", "עברית", "हिन्दी", "ไทย", "naïve façade Ångström",
    "mojibake â€œquotedâ€\x9d", "ﬁ ligature ﬀ", "ＦＵＬＬＷＩＤＴＨ", "zero\u200bwidth",
    "!!!???...", "a-b_c/d\\e|f", "<|startoftext|>", "<|endoftext|> inside", "<start_of_text>",
    "text <end_of_text> more <END_OF_TEXT>", "#hashtag @user",
    "http://example.com/path?q=1&r=2", "e-mail@example.org", "$100 £50 €20 ¥10", "½ ¼ ¾ ² ³",
    "x" * 300, "word " * 100, " ".join(str(i) for i in range(120)),
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
]


def _classnames():
  names = []
  if os.path.isdir(CLASSNAMES_DIR):
    for fn in sorted(os.listdir(CLASSNAMES_DIR)):
      if fn.endswith(".txt"):
        with open(os.path.join(CLASSNAMES_DIR, fn), encoding="utf-8") as f:
          names += [line.strip() for line in f if line.strip()]
  return names


def corpus():
  names = _classnames()
  return [t.format(n) for n in names for t in TEMPLATES] + names + EXTRA


def test_vocab_checksum_and_size():
  with open(tok.VOCAB_PATH, "rb") as f:
    data = f.read()
  assert len(data) == 1356917
  assert hashlib.sha256(data).hexdigest() == tok.VOCAB_SHA256
  assert tok.VOCAB_SHA256.startswith("924691ac")
  assert os.path.exists(os.path.join(os.path.dirname(tok.VOCAB_PATH),
                                     "LICENSE-bpe_simple_vocab_16e6.txt"))
  t = clip.get_tokenizer()
  assert t.vocab_size == 49408 and (t.sot_id, t.eot_id) == (49406, 49407)


def test_ids_equal_open_clip_on_corpus():
  from open_clip.tokenizer import SimpleTokenizer
  texts = corpus()
  assert len(texts) >= 2000, len(texts)
  ref = SimpleTokenizer()
  got = clip.tokenize(texts)
  want = ref(texts).numpy()
  bad = [texts[i] for i in np.nonzero((got != want).any(1))[0]]
  assert not bad, f"{len(bad)} strings differ, first: {bad[:3]}"
  assert got.dtype == np.int32 and got.shape == (len(texts), 77)


def test_truncation_and_padding():
  t = clip.tokenize(["word " * 100, "a dog"])
  assert t[0, 0] == 49406 and t[0, 76] == 49407 and (t[0, 1:76] != 0).all()
  assert list(t[1, :4]) == [49406, 320, 1929, 49407] and (t[1, 4:] == 0).all()
  assert clip.tokenize("a dog").shape == (1, 77)
  assert clip.tokenize(["a"], context_length=16).shape == (1, 16)


@pytest.mark.parametrize("text", ["a person playing the guitar", "café 😀 日本"])
def test_decode_roundtrip(text):
  t = clip.get_tokenizer()
  assert t.decode(clip.tokenize(text)[0]) == text
