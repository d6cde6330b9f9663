"""A file server on 127.0.0.1 for the download tests: serves bytes at paths, answers Range
requests (206) unless told not to, can drop a connection part way, and records every
request (path, Range header)."""
import contextlib
import hashlib
import http.server
import json
import os
import threading


class Server:
  """server.files[path] = bytes; server.url(path); server.requests; drop_after: the next
  response closes after that many body bytes (once); ranges=False: Range is ignored."""

  def __init__(self):
    self.files, self.requests = {}, []
    self.drop_after, self.ranges = None, True
    outer = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def log_message(self, *a):  # quiet
        pass

      def do_GET(self):  # noqa: N802
        rng = self.headers.get("Range")
        outer.requests.append((self.path, rng))
        data = outer.files.get(self.path)
        if data is None:
          self.send_error(404)
          return
        start = 0
        if rng and outer.ranges:
          start = int(rng.split("=")[1].split("-")[0])
          if start >= len(data):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.end_headers()
            return
          self.send_response(206)
          self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
          self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if outer.drop_after is not None:
          body, outer.drop_after = body[:outer.drop_after], None
          self.wfile.write(body)
          self.wfile.flush()
          self.close_connection = True
          return
        self.wfile.write(body)

    self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

  def url(self, path: str) -> str:
    return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@contextlib.contextmanager
def serving():
  server = Server()
  server.thread.start()
  try:
    yield server
  finally:
    server.httpd.shutdown()
    server.httpd.server_close()


def serve_clip(server, monkeypatch, data: bytes, name: str = "ViT-B/16", sha: str = "") -> str:
  """Serves `data` as OpenAI's checkpoint `name`: at /clip/models/SHA/FILE (SHA: its
  SHA-256, or `sha`), with VICTR_CLIP_URLS pointing `name` there. Returns the path."""
  from victr_jax.clip import fetch  # pylint: disable=g-import-not-at-top
  sha = sha or hashlib.sha256(data).hexdigest()
  path = f"/clip/models/{sha}/{os.path.basename(fetch.OPENAI[name])}"
  server.files[path] = data
  monkeypatch.setenv(fetch.URLS_ENV, json.dumps({name: server.url(path)}))
  return path
