#!/usr/bin/env bash
# Runs the test suite. Creates .venv and installs victr-jax[test] when needed.
VICTR_EXTRAS=test source "$(dirname "$0")/env.sh"
# Two worker processes (pytest-xdist; VICTR_TEST_WORKERS=0 runs in this process); an idle
# worker takes tests queued for the other (worksteal). About 8.5 minutes alone on 2 cores.
workers="${VICTR_TEST_WORKERS:-2}"
if [ "$workers" -gt 0 ]; then
  exec python -m pytest tests -n "$workers" --dist worksteal "$@"
fi
exec python -m pytest tests "$@"
