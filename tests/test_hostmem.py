"""Huge pages for malloc (victr_jax/hostmem.py): when the restart happens, and that it works."""
import os
import subprocess
import sys

import pytest

from victr_jax import hostmem

NEW = (2, 36)


def test_tuned_environ_adds_the_tunable_once():
  env = hostmem.tuned_environ({"PATH": "/bin"}, NEW, "madvise")
  assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
  # Other tunables are kept; a hugetlb value the user chose is left alone (no restart loop).
  env = hostmem.tuned_environ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, NEW, "always")
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  assert hostmem.tuned_environ(env, NEW, "always") is None
  assert hostmem.tuned_environ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, NEW, "always") is None


@pytest.mark.parametrize("environ, glibc, thp", [
    ({"VICTR_HOST_HUGEPAGES": "0"}, NEW, "madvise"),  # opted out
    ({}, (2, 34), "madvise"),  # glibc without the tunable
    ({}, None, "madvise"),  # not glibc (musl, macOS)
    ({}, NEW, "never"),  # kernel has THP off
    ({}, NEW, None),  # no THP in this kernel
])
def test_tuned_environ_changes_nothing_where_it_cannot_help(environ, glibc, thp):
  assert hostmem.tuned_environ(environ, glibc, thp) is None


def test_thp_mode_reads_the_bracketed_choice(tmp_path):
  path = tmp_path / "enabled"
  path.write_text("always [madvise] never\n")
  assert hostmem.thp_mode(str(path)) == "madvise"
  assert hostmem.thp_mode(str(tmp_path / "missing")) is None


_CHILD = """
import ctypes, os, sys
from victr_jax import hostmem
hostmem.ensure()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
n = 256 << 20
p = libc.malloc(ctypes.c_size_t(n))  # above glibc's mmap threshold: its own mapping
ctypes.memset(p, 1, n)
huge = [l for l in open("/proc/self/smaps_rollup") if l.startswith("AnonHugePages:")]
print(os.environ.get("GLIBC_TUNABLES"), int(huge[0].split()[1]) if huge else -1)
"""


def _child(*args, **env):
  environ = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", hostmem.OPT_OUT)}
  out = subprocess.run([sys.executable, "-c", _CHILD, *args], env={**environ, **env},
                       check=True, capture_output=True, text=True)
  tunables, huge_kib = out.stdout.split()
  return tunables, int(huge_kib), out.stderr


@pytest.mark.skipif(hostmem.tuned_environ({}, hostmem.glibc_version(), hostmem.thp_mode()) is None,
                    reason="no glibc >= 2.35 with transparent huge pages here")
def test_ensure_restarts_once_and_malloc_gets_huge_pages():
  tunables, huge_kib, err = _child("-v")  # -v: the restart says so
  assert tunables == hostmem.TUNABLE and err.count("[hostmem] restarting") == 1
  assert huge_kib >= 2048, "a 256 MiB malloc under glibc.malloc.hugetlb=1 got no huge page"
  tunables, _, err = _child()
  assert tunables == hostmem.TUNABLE and not err  # silently otherwise
  tunables, huge_kib, err = _child("-v", VICTR_HOST_HUGEPAGES="0")
  assert tunables == "None" and "[hostmem]" not in err
  if hostmem.thp_mode() == "madvise":  # only madvised mappings get huge pages: none without it
    assert huge_kib == 0
