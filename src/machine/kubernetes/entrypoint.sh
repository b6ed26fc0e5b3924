#!/bin/bash
# gpu-runner's pod entrypoint: probes the GPUs the pod was given, then runs the image's Actions
# runner for one job of the workflow run that created the pod, and ends (the pod never restarts).
# Its values come in the container's environment, the runner's configuration from the pod's
# Secret (JIT_CONFIG). The pod's activeDeadlineSeconds is its max lifetime.
set -euo pipefail

readonly RUNNER_DIR="${RUNNER_DIR:-/home/runner}"
# The API server drops empty values from a pod's env: an empty value arrives unset.
: "${PRE_RUNNER_SCRIPT:=}" "${JOB_WORKFLOW_REF:=}" "${RUNNER_LABELS:=}"
STATE_DIR="$(mktemp -d)"
readonly STATE_DIR
CURRENT_PHASE=boot

# One line per event, to the container's log (what `kubectl logs` and gpu-runner read back), with
# the seconds that phase took.
# @PHASE_LINE@
log() {
  phase_line "$1" "${2:-}"
  printf '%s\n' "$PHASE_LINE"
}

fail() {
  trap - ERR
  log "$1" "status=failed reason=\"$2\""
  exit 1
}

trap 'fail "$CURRENT_PHASE" "the entrypoint stopped at line $LINENO"' ERR

# Taken out of the environment before anything else runs: only the runner gets it.
jit_config="${JIT_CONFIG:-}"
unset JIT_CONFIG
[ -n "$jit_config" ] || fail boot "the pod's Secret gave no runner configuration (JIT_CONFIG)"
log watchdog "status=ok max_lifetime_minutes=$MAX_LIFETIME_MINUTES"

# 1. The GPUs the pod was given, as the job will see them. The device plugin and the container
# runtime put nvidia-smi and the devices in the container; GKE, which has no NVIDIA runtime,
# mounts the driver's tools at /usr/local/nvidia/bin and its libraries at
# /usr/local/nvidia/lib64, which the runner image has on neither path. Exported, so that the
# runner and the job find them too.
if [ -d /usr/local/nvidia/bin ]; then
  export PATH="$PATH:/usr/local/nvidia/bin"
fi
if [ -d /usr/local/nvidia/lib64 ]; then
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/nvidia/lib64"
fi
GPUS_PROMISED_BY=gpu-count
# @GPU_PROBE@

# 2. The user's own preparation.
if [ -n "$PRE_RUNNER_SCRIPT" ]; then
  CURRENT_PHASE=pre-runner-script
  trap - ERR
  code=0
  bash -c "$PRE_RUNNER_SCRIPT" || code=$?
  [ "$code" -eq 0 ] || fail pre-runner-script "it exited with $code"
  trap 'fail "$CURRENT_PHASE" "the entrypoint stopped at line $LINENO"' ERR
  log pre-runner-script "status=ok"
fi

# 3. The runner, for one job. The job-started hook refuses any job but this run's (GitHub hands a
# runner whatever queued job its labels cover) and tells the idle watchdog that a job began.
CURRENT_PHASE=runner
if [ ! -x "$RUNNER_DIR/run.sh" ]; then
  fail runner "the image has no Actions runner at $RUNNER_DIR/run.sh"
fi
{
  printf '#!/bin/bash\n'
  declare -p JOB_REPOSITORY JOB_RUN_ID JOB_WORKFLOW_REF STATE_DIR
  cat << 'HOOK'
# @JOB_STARTED_HOOK@
HOOK
} > "$STATE_DIR/job-started.sh"
chmod 555 "$STATE_DIR/job-started.sh"
# What the job used of its GPUs, in its summary and in this log (as on an instance).
{
  printf '#!/bin/bash\n'
  declare -p STATE_DIR
  cat << 'HOOK'
# @JOB_COMPLETED_HOOK@
HOOK
} > "$STATE_DIR/job-completed.sh"
chmod 555 "$STATE_DIR/job-completed.sh"
# A `container:` job, its `services:` and Docker actions go to this hook, which refuses them in
# plain words (the pod has no Docker daemon); a hook the pod-template names is kept.
cat > "$STATE_DIR/container-hook.sh" << 'HOOK'
# @CONTAINER_HOOK@
HOOK
chmod 555 "$STATE_DIR/container-hook.sh"
# The runner adds its .env to every job's environment: what the probe found, as on an instance.
{
  printf 'GPU_RUNNER_GPU_NAME=%s\n' "$gpu_name"
  printf 'GPU_RUNNER_GPU_COUNT=%s\n' "$gpu_count"
  printf 'GPU_RUNNER_GPU_MEMORY=%s\n' "$gpu_memory"
  printf 'GPU_RUNNER_DRIVER_VERSION=%s\n' "$driver_version"
  printf 'GPU_RUNNER_CUDA_VERSION=%s\n' "$cuda_version"
  printf 'GPU_RUNNER_GPU_JSON=%s\n' "$STATE_DIR/gpu.json"
} >> "$RUNNER_DIR/.env"
log runner "status=bound jobs_of=\"$JOB_REPOSITORY run $JOB_RUN_ID\""
log runner "status=starting name=$RUNNER_NAME labels=$RUNNER_LABELS"
trap - ERR
export ACTIONS_RUNNER_HOOK_JOB_STARTED="$STATE_DIR/job-started.sh"
export ACTIONS_RUNNER_HOOK_JOB_COMPLETED="$STATE_DIR/job-completed.sh"
export ACTIONS_RUNNER_CONTAINER_HOOKS="${ACTIONS_RUNNER_CONTAINER_HOOKS:-$STATE_DIR/container-hook.sh}"
# The runner refuses to run as root unless told that it may (a pod-template can make it root).
if [ "$(id -u)" = 0 ]; then
  export RUNNER_ALLOW_RUNASROOT=1
fi
# GitHub's runner image sets ACTIONS_RUNNER_PRINT_LOG_TO_STDOUT: the runner's diagnostic trace,
# hundreds of lines, would bury the phase lines that gpu-runner reads from the end of the pod's
# log. It stays in the runner's _diag folder, as on an instance.
unset ACTIONS_RUNNER_PRINT_LOG_TO_STDOUT
# With RUNNER_MANUALLY_TRAP_SIG, run.sh turns SIGTERM into SIGINT to the runner (actions/runner
# run.sh, runWithManualTrap), which then cancels its job and reports it; set for any image.
export RUNNER_MANUALLY_TRAP_SIG=1
# Started as a job of its own (set -m): a background command of a shell without job control
# ignores SIGINT for good, and the runner (.NET keeps an inherited SIG_IGN for SIGINT) would then
# never hear run.sh's SIGINT.
set -m
ACTIONS_RUNNER_INPUT_JITCONFIG="$jit_config" "$RUNNER_DIR/run.sh" &
runner=$!
set +m
unset jit_config
# This script is the container's PID 1, to which Linux delivers only the signals it handles: a
# deleted pod's SIGTERM reaches the runner only through this handler (else the kubelet kills
# everything after the grace period and GitHub never hears that the job ended).
# shellcheck disable=SC2317 # run by the trap below
stop_runner() {
  log runner "status=stopping reason=\"the pod is being deleted\""
  kill -TERM "$runner" 2> /dev/null || true
}
trap stop_runner TERM INT
(
  sleep "$((IDLE_TIMEOUT_MINUTES * 60))"
  if [ ! -e "$STATE_DIR/job-started" ]; then
    log idle "status=timeout reason=\"no job started within $IDLE_TIMEOUT_MINUTES min\""
    touch "$STATE_DIR/idle"
    # run.sh passes no signal on: end the runner and everything it started.
    pkill -TERM -P "$runner" 2> /dev/null || true
    kill -TERM "$runner" 2> /dev/null || true
  fi
) &
code=0
wait "$runner" || code=$?
# A handled signal ends `wait` early: wait on while the runner cancels its job.
while kill -0 "$runner" 2> /dev/null; do
  code=0
  wait "$runner" || code=$?
done
log runner "status=exited code=$code"
if [ -s "$STATE_DIR/gpu-usage" ]; then
  log gpu-usage "$(head -n 1 "$STATE_DIR/gpu-usage" | tr -cd 'a-z0-9_= ' | cut -c 1-200)"
fi

# 4. One job, then the pod ends; a refused job ends it too, saying why.
if [ -s "$STATE_DIR/job-refused" ]; then
  log job-refused "reason=\"$(head -n 1 "$STATE_DIR/job-refused" | tr -d '"' | cut -c 1-300)\""
  exit 0
fi
if [ -e "$STATE_DIR/idle" ]; then
  exit 0
fi
exit "$code"
