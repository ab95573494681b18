#!/usr/bin/env bash
# One process of a multi-host run: every worker runs this same line.
#
#   bash experiments/launch/worker.sh --config=experiments/configs/NAME.py[:ARG] --workdir=DIR [...]
#
# Under SLURM (srun) the process count, this process's rank and the coordinator (the first
# host of the job, port $COORDINATOR_PORT, default 12355) come from SLURM_* variables.
# Elsewhere set COORDINATOR_ADDRESS=host:port, NUM_PROCESSES and PROCESS_ID yourself (a
# torchrun-style launcher's MASTER_ADDR / WORLD_SIZE / RANK are read too). On TPU VMs none of
# this is needed: JAX finds the slice by itself (see tpu_pod.sh).
# DRY_RUN=1 prints the command instead of running it; PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/../.."

port="${COORDINATOR_PORT:-12355}"
if [[ -n "${SLURM_PROCID:-}" ]]; then
  nodes="${SLURM_JOB_NODELIST:-${SLURM_NODELIST:-localhost}}"
  if command -v scontrol >/dev/null 2>&1; then
    first=$(scontrol show hostnames "$nodes" | head -n 1)
  else  # 'host1,host2' or a single host; bracket ranges need scontrol.
    first="${nodes%%,*}"
    if [[ "$first" == *"["* ]]; then
      echo "worker.sh: cannot expand SLURM node list '$nodes' without scontrol" >&2; exit 2
    fi
  fi
  COORDINATOR_ADDRESS="${COORDINATOR_ADDRESS:-$first:$port}"
  NUM_PROCESSES="${NUM_PROCESSES:-${SLURM_NTASKS:?SLURM_NTASKS unset}}"
  PROCESS_ID="${PROCESS_ID:-$SLURM_PROCID}"
elif [[ -n "${MASTER_ADDR:-}" && -z "${COORDINATOR_ADDRESS:-}" ]]; then
  COORDINATOR_ADDRESS="$MASTER_ADDR:${MASTER_PORT:-$port}"
  NUM_PROCESSES="${NUM_PROCESSES:-${WORLD_SIZE:?WORLD_SIZE unset}}"
  PROCESS_ID="${PROCESS_ID:-${RANK:?RANK unset}}"
fi

args=("${PYTHON:-python}" -m experiments.train "$@")
if [[ -n "${COORDINATOR_ADDRESS:-}" ]]; then
  : "${NUM_PROCESSES:?set NUM_PROCESSES with COORDINATOR_ADDRESS}"
  : "${PROCESS_ID:?set PROCESS_ID with COORDINATOR_ADDRESS}"
  args+=("--coordinator_address=$COORDINATOR_ADDRESS" "--num_processes=$NUM_PROCESSES"
         "--process_id=$PROCESS_ID")
fi
if [[ "${DRY_RUN:-0}" == "1" ]]; then
  printf '%q ' "${args[@]}"; echo; exit 0
fi
exec "${args[@]}"
