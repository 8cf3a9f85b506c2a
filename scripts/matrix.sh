#!/bin/bash
# Runs the default scenarios on one Slurm release of the version matrix:
#   scripts/matrix.sh trixie     # Slurm 24.11, the default
#   scripts/matrix.sh sid        # Slurm 26.05
# The cluster is a compose project of its own (gpusim-SUITE), built from the
# image slurm-sim:SUITE, and removed afterwards. Exits non-zero when a
# scenario fails.
set -euo pipefail
cd "$(dirname "$0")/.."

suite=${1:-trixie}
case $suite in trixie|sid) ;; *) echo "matrix: suite must be trixie or sid, not '$suite'" >&2; exit 2 ;; esac

export SLURM_SUITE=$suite SIM_IMAGE=slurm-sim:$suite SIM_PROJECT_NAME=gpusim-$suite
reports=reports/matrix-$suite

cleanup() { docker compose down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT

docker compose build
docker compose up -d --wait
docker compose run --rm sim run --report-dir "$reports" --json "$reports/run.json"
