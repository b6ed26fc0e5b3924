#!/bin/bash
# gpu-runner's job-started hook (ACTIONS_RUNNER_HOOK_JOB_STARTED): the runner runs it once it was
# handed a job, before any step, with the job's GITHUB_* variables. GitHub hands a runner any queued
# job whose runs-on its labels cover (`self-hosted` alone does), so a stranger's job can reach this
# machine: only the jobs of the workflow run that started it may go on. The boot script puts the
# expected JOB_* values and STATE_DIR in front of this text.
#
# A non-zero exit is not enough to stop a job: actions/runner runs this hook as a pre-job step
# whose condition is always() (src/Runner.Worker/JobExtension.cs), so the job's steps with
# `if: always()` or `if: failure()` would still run after it. So a refused job's Runner.Worker is
# killed before this hook exits. That is race-free: the worker starts no step while it waits for
# this process (the hook is its child, started by its ProcessInvoker), SIGKILL cannot be caught,
# and the hook exits only once the worker is dead. The listener then reports the job as failed
# (JobDispatcher: a worker that crashed) and, ephemeral, exits; the machine ends as after any job.
# The runner runs this as `bash -e -o pipefail`: any command that fails, an INT or a TERM (a
# cancel while the hook runs) ends in the same place, and a job is accepted only at the end.
set -u

# Workflow-command data: the job's values must not end the command or start another.
escape() {
  local v="${1//'%'/%25}"
  v="${v//$'\r'/%0D}"
  printf '%s' "${v//$'\n'/%0A}"
}

# The Runner.Worker that runs this hook: the nearest process above it of that name, read from
# /proc (no ps in the runner image), while the hook's parent surely lives. INT and TERM wait
# until the traps below are set.
trap '' INT TERM
WORKER=""
p=$$
for _ in 1 2 3 4 5 6 7 8; do
  p="$(sed -n 's/^PPid:\s*//p' "/proc/$p/status" 2> /dev/null || true)"
  case "$p" in '' | 0 | 1) break ;; esac
  if [ "$(cat "/proc/$p/comm" 2> /dev/null)" = Runner.Worker ]; then
    WORKER="$p"
    break
  fi
done

# Gone: no such process, or a zombie that the listener has not reaped yet.
worker_gone() {
  [ ! -e "/proc/$WORKER" ] || grep -q '^State:\s*Z' "/proc/$WORKER/status" 2> /dev/null
}

kill_worker() {
  kill -KILL "$WORKER" 2> /dev/null || true
}

ACCEPTED=no
# Every way out of this hook but an accepted job ends the job's worker first. Explicit return
# codes: a bare `return` in a trap handler returns the status from before the trap.
end_refused_job() {
  [ "$ACCEPTED" = no ] || return 0
  set +e
  trap kill_worker INT TERM
  if [ -n "$WORKER" ]; then
    # The worker sends the hook's output to GitHub every half second: a moment, so that the
    # job's log says why. It runs nothing while it waits for this process.
    sleep 2 &
    wait $!
    for _ in $(seq 100); do
      kill_worker
      worker_gone && exit 1
      sleep 0.1
    done
  fi
  # No Runner.Worker above the hook, or one it cannot end: never return, so that nothing runs
  # after the hook; the machine's max lifetime ends it.
  echo "gpu-runner: phase=job-refused reason=\"the hook could not end the job's Runner.Worker; it holds the job\""
  while :; do sleep 3600; done
}
trap end_refused_job EXIT
trap 'exit 1' INT TERM

refuse() {
  local why="$1"
  printf 'gpu-runner: phase=job-refused reason="%s"\n' "$(escape "$why")"
  printf '::error title=gpu-runner refused this job::%s\n' "$(escape "$why")"
  # For the boot script, which logs it on the console and ends the machine once the runner exits.
  printf '%s\n' "$why" > "$STATE_DIR/job-refused" 2> /dev/null || true
  exit 1
}

expected="$JOB_REPOSITORY run $JOB_RUN_ID"
got="${GITHUB_REPOSITORY:-an unknown repository} run ${GITHUB_RUN_ID:-unknown}"
# GitHub's repository names are not case-sensitive.
if [ "${GITHUB_REPOSITORY:-}" = "" ] || [ "${GITHUB_REPOSITORY,,}" != "${JOB_REPOSITORY,,}" ]; then
  refuse "this machine takes only jobs of $expected, and this job is of $got: another repository's job"
fi
if [ "${GITHUB_RUN_ID:-}" != "$JOB_RUN_ID" ]; then
  refuse "this machine takes only jobs of $expected, and this job is of $got: another workflow run's job"
fi
if [ -n "$JOB_WORKFLOW_REF" ] && [ "${GITHUB_WORKFLOW_REF:-}" != "$JOB_WORKFLOW_REF" ]; then
  refuse "this machine takes only jobs of the workflow $JOB_WORKFLOW_REF, and this job's is ${GITHUB_WORKFLOW_REF:-unknown}"
fi
# The idle watchdog stands down once a job of this run has started.
touch "$STATE_DIR/job-started"
# @GPU_SAMPLER@
printf 'gpu-runner: phase=job-accepted run=%s\n' "$JOB_RUN_ID"
ACCEPTED=yes
