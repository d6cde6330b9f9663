#!/usr/bin/env bash
# Runs the test suite. Creates .venv and installs victr-jax[test] when needed.
VICTR_EXTRAS=test source "$(dirname "$0")/env.sh"
exec python -m pytest tests "$@"
