# Sourced by the quick-start commands: make sure .venv exists and holds the project
# (with the extras named in $VICTR_EXTRAS), installing only when setup.py changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[env] creating $ROOT/.venv"
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip setuptools wheel
fi
extras="${VICTR_EXTRAS:-}"
stamp=".venv/.victr-installed${extras:+-$extras}"
want="$(sha256sum setup.py | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[env] installing victr-jax${extras:+[$extras]} into .venv (first run takes a few minutes)"
  log=".venv/install.log"
  if ! .venv/bin/python -m pip install --progress-bar off -e ".${extras:+[$extras]}" >"$log" 2>&1; then
    tail -n 40 "$log"; echo "[env] pip install failed; full log in $ROOT/$log" >&2; exit 1
  fi
  .venv/bin/python -m pip check
  echo "$want" > "$stamp"
fi
export PATH="$ROOT/.venv/bin:$PATH"
# Huge pages for XLA's per-step buffers: glibc reads GLIBC_TUNABLES when a process starts, so
# set it here (victr_jax/hostmem.py; entry points started otherwise restart themselves once).
eval "$(.venv/bin/python -m victr_jax.hostmem)"
