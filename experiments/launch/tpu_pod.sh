#!/usr/bin/env bash
# Every worker of a Cloud TPU VM slice runs the same command (JAX discovers the slice).
#
#   TPU_NAME=my-v5e-256 ZONE=us-west4-a bash experiments/launch/tpu_pod.sh setup
#   TPU_NAME=my-v5e-256 ZONE=us-west4-a bash experiments/launch/tpu_pod.sh \
#       --config=experiments/configs/default.py:pod --workdir=gs://bucket/runs/pod1
#
# 'setup' copies this checkout to every worker and installs it with the tpu extra, then runs
# env_check there. Before either, compile for the slice on any CPU host to see that it fits:
#   python -m experiments.tools.aot_compile --config=... --topology=v5e:16x16
# DRY_RUN=1 prints the gcloud commands instead of running them.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
REPO_DIR="${REPO_DIR:-catrans}"
project=()
[[ -n "${PROJECT:-}" ]] && project=(--project "$PROJECT")
run() {
  if [[ "${DRY_RUN:-0}" == "1" ]]; then printf '%q ' "$@"; echo; else "$@"; fi
}
ssh_all() {
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" "${project[@]}" --worker=all \
      --command "$1"
}
if [[ "${1:-}" == "setup" ]]; then
  here="$(cd "$(dirname "$0")/../.." && pwd)"
  run gcloud compute tpus tpu-vm scp --recurse "$here" "$TPU_NAME:~/$REPO_DIR" --zone "$ZONE" \
      "${project[@]}" --worker=all
  ssh_all "cd ~/$REPO_DIR && pip install -q -e '.[tpu]' && python -m experiments.tools.env_check"
  exit 0
fi
(( $# )) || { echo "usage: tpu_pod.sh setup | --config=... --workdir=gs://..." >&2; exit 2; }
quoted=$(printf '%q ' "$@")
ssh_all "cd ~/$REPO_DIR && python -m experiments.train $quoted 2>&1 | tee -a ~/train_\$(hostname).log"
