#!/usr/bin/env bash
# Runs the test suite. Creates .venv and installs victr-jax[test] when needed.
VICTR_EXTRAS=test source "$(dirname "$0")/env.sh"
# Two worker processes (pytest-xdist; VICTR_TEST_WORKERS=0 runs in this process), each test
# file on one worker so that its module fixtures are built once.
workers="${VICTR_TEST_WORKERS:-2}"
if [ "$workers" -gt 0 ]; then
  exec python -m pytest tests -n "$workers" --dist loadfile "$@"
fi
exec python -m pytest tests "$@"
