#!/usr/bin/env bash
# The main job on the embedded default. Creates .venv and installs victr-jax when needed.
source "$(dirname "$0")/env.sh"
exec python -m experiments.demo "$@"
