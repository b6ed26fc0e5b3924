#!/bin/bash
# gpu-runner's job-started hook (ACTIONS_RUNNER_HOOK_JOB_STARTED): the runner runs it once it was
# handed a job, before any step, with the job's GITHUB_* variables. GitHub hands a runner any queued
# job whose runs-on its labels cover (`self-hosted` alone does), so a stranger's job can reach this
# machine: only the jobs of the workflow run that started it may go on. A non-zero exit fails the
# job before any of its steps runs. The boot script puts the expected JOB_* values and STATE_DIR
# in front of this text.
set -u

# Workflow-command data: the job's values must not end the command or start another.
escape() {
  local v="${1//'%'/%25}"
  v="${v//$'\r'/%0D}"
  printf '%s' "${v//$'\n'/%0A}"
}

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
printf 'gpu-runner: phase=job-accepted run=%s\n' "$JOB_RUN_ID"
