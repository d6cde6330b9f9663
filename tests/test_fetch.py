"""victr-convert-clip --fetch against a server on 127.0.0.1 standing in for OpenAI's: a
tiny OpenAI-layout (TorchScript) checkpoint served at a URL that carries its SHA-256.
The right checksum converts (the parameters the file converts to from disk), a wrong one
is an error that keeps nothing, a dropped connection resumes (or restarts where the server
does not resume), a killed download's part file is never trusted, a second call reads the
cache, and a network error names the URL and the manual path."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import clip_refs
import http_files
from victr_jax.clip import checkpoint, convert, fetch


@pytest.fixture(scope="module")
def openai_pt(tmp_path_factory):
  """(bytes of a tiny OpenAI TorchScript checkpoint, its path)."""
  path = str(tmp_path_factory.mktemp("ckpt") / "tiny_openai.pt")
  clip_refs.save_openai_torchscript(clip_refs.open_clip_model(True), path)
  return open(path, "rb").read(), path


@pytest.fixture
def server():
  with http_files.serving() as s:
    yield s


def _params(directory):
  return checkpoint.load_params(directory)[1]


def _same_params(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_the_published_urls_carry_their_checksums():
  assert set(fetch.OPENAI) == {"ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px"}
  for url in fetch.OPENAI.values():
    assert url.startswith("https://openaipublic.azureedge.net/clip/models/")
    assert len(fetch.sha256_of(url)) == 64


def test_right_checksum_converts_and_a_second_call_reads_the_cache(openai_pt, server,
                                                                  monkeypatch, tmp_path):
  data, src = openai_pt
  path = http_files.serve_clip(server, monkeypatch, data)
  cache, out = str(tmp_path / "cache"), str(tmp_path / "vitb16")
  script = os.path.join(os.path.dirname(sys.executable), "victr-convert-clip")
  run = subprocess.run([script, "--fetch", "ViT-B/16", out, "--cache", cache],
                       capture_output=True, text=True, env=dict(os.environ))
  assert run.returncode == 0, run.stderr[-2000:]
  assert "ViT-B/16: " in run.stdout and "SHA-256 checked" in run.stdout
  assert os.listdir(cache) == ["ViT-B-16.pt"]
  assert open(os.path.join(cache, "ViT-B-16.pt"), "rb").read() == data
  assert convert.main([src, str(tmp_path / "from_disk")]) == 0
  _same_params(_params(out), _params(str(tmp_path / "from_disk")))
  assert server.requests == [(path, None)]
  # Again, into another directory: no request, the cached file.
  assert convert.main(["--fetch", "ViT-B/16", str(tmp_path / "again"), "--cache", cache]) == 0
  assert len(server.requests) == 1
  _same_params(_params(str(tmp_path / "again")), _params(out))


def test_a_wrong_checksum_is_an_error_and_nothing_is_kept(openai_pt, server, monkeypatch,
                                                          tmp_path, capsys):
  data, _ = openai_pt
  http_files.serve_clip(server, monkeypatch, data, sha="0" * 64)
  cache = str(tmp_path / "cache")
  assert convert.main(["--fetch", "ViT-B/16", str(tmp_path / "out"), "--cache", cache]) == 2
  err = capsys.readouterr().err
  assert "does not match the " + "0" * 64 in err and "nothing was kept" in err
  errors = [line for line in err.splitlines() if "error:" in line]  # the rest: the bar
  assert len(errors) == 1 and server.url("/clip/models/") in errors[0]
  assert os.listdir(cache) == [] and not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("ranges", [True, False], ids=["resumed", "restarted"])
def test_a_dropped_connection_resumes_or_restarts(openai_pt, server, monkeypatch, tmp_path,
                                                  ranges):
  data, _ = openai_pt
  path = http_files.serve_clip(server, monkeypatch, data)
  server.ranges, server.drop_after = ranges, len(data) // 3
  got = fetch.fetch("ViT-B/16", str(tmp_path), progress=False)
  assert open(got, "rb").read() == data
  # The second request asked for the rest; without Range support it got (and kept) all.
  assert server.requests == [(path, None), (path, f"bytes={len(data) // 3}-")]
  assert os.listdir(tmp_path) == ["ViT-B-16.pt"]


def test_a_killed_download_is_never_trusted(openai_pt, server, monkeypatch, tmp_path):
  """A part file (a download killed half way) is continued, never taken as the file; one
  with bytes that are not the file's fails the checksum, is removed, and the next call
  downloads afresh."""
  data, _ = openai_pt
  path = http_files.serve_clip(server, monkeypatch, data)
  part = tmp_path / "ViT-B-16.pt.part"
  part.write_bytes(data[:1000])
  assert open(fetch.fetch("ViT-B/16", str(tmp_path), progress=False), "rb").read() == data
  assert server.requests[-1] == (path, "bytes=1000-")
  os.remove(tmp_path / "ViT-B-16.pt")
  part.write_bytes(b"x" * 1000)
  with pytest.raises(fetch.FetchError, match="does not match"):
    fetch.fetch("ViT-B/16", str(tmp_path), progress=False)
  assert os.listdir(tmp_path) == []
  assert open(fetch.fetch("ViT-B/16", str(tmp_path), progress=False), "rb").read() == data
  # A cached file damaged since: fetched again, not used.
  (tmp_path / "ViT-B-16.pt").write_bytes(b"damaged")
  assert open(fetch.fetch("ViT-B/16", str(tmp_path), progress=False), "rb").read() == data


def test_a_network_error_names_the_url_and_the_manual_path(monkeypatch, tmp_path, capsys):
  with http_files.serving() as s:  # a port that nothing listens on once it is closed
    url = s.url("/clip/models/" + "a" * 64 + "/ViT-B-16.pt")
  monkeypatch.setenv(fetch.URLS_ENV, json.dumps({"ViT-B/16": url}))
  assert convert.main(["--fetch", "ViT-B/16", str(tmp_path / "out"),
                       "--cache", str(tmp_path / "c")]) == 2
  err = capsys.readouterr().err
  assert f"could not download {url}" in err and "curl -L -o ViT-B-16.pt" in err
  assert "victr-convert-clip ViT-B-16.pt OUT" in err and err.count("error:") == 1
  assert os.listdir(tmp_path / "c") == []


def test_without_torch_it_says_so_before_downloading(server, monkeypatch, tmp_path, capsys):
  """OpenAI's archives are TorchScript: without torch, one error line and no request."""
  http_files.serve_clip(server, monkeypatch, b"not fetched")
  monkeypatch.setattr(convert, "torch_available", lambda: False)
  assert convert.main(["--fetch", "ViT-B/16", str(tmp_path / "out"),
                       "--cache", str(tmp_path / "c")]) == 2
  err = capsys.readouterr().err
  assert "needs torch: pip install 'victr-jax[torch]'" in err and err.count("\n") == 1
  assert server.requests == [] and not os.path.exists(tmp_path / "c")
