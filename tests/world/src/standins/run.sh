#!/bin/bash
# Stand-in for the GitHub Actions runner package's run.sh: the same entry point, speaking to the
# world's fake GitHub. It goes online, takes one job for its labels, runs the job's script with
# the job-started hook, reports the result and exits, as an ephemeral JIT runner does.
set -euo pipefail
# Like the real runner, the JIT config comes as --jitconfig or as ACTIONS_RUNNER_INPUT_JITCONFIG.
jit="${ACTIONS_RUNNER_INPUT_JITCONFIG:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --jitconfig) jit="$2"; shift 2 ;;
    *) shift ;;
  esac
done
if [ -z "$jit" ]; then
  echo "run.sh: --jitconfig (or ACTIONS_RUNNER_INPUT_JITCONFIG) is required" >&2
  exit 2
fi
read -r server secret < <(printf '%s' "$jit" | base64 -d; echo)
api() {
  local path="$1"
  shift
  curl -fsS -H "Authorization: RunnerJit $secret" -X POST "$server/_runner/$path" "$@"
}
if [ "${GPU_SIM_RUNNER:-}" = never-online ]; then
  echo "run.sh: cannot reach GitHub (the world says this runner never comes online)"
  exec /usr/bin/sleep infinity
fi
api online > /dev/null
echo "√ Connected to GitHub"
echo "Listening for Jobs"
job=""
while [ -z "$job" ]; do
  job="$(api acquire)" || job=""
  [ -n "$job" ] || /usr/bin/sleep 0.2
done
id="${job%%$'\n'*}"
script="${job#*$'\n'}"
echo "Running job: $id"
if [ -n "${ACTIONS_RUNNER_HOOK_JOB_STARTED:-}" ]; then
  bash "$ACTIONS_RUNNER_HOOK_JOB_STARTED"
fi
if [ "${GPU_SIM_RUNNER:-}" = crash-mid-job ]; then
  echo "Runner.Worker crashed: Unhandled exception (the world says this runner crashes mid-job)"
  exit 134
fi
# Like the real runner: KEY=VALUE lines of .env beside run.sh join the job's environment.
env_file="$(dirname "$0")/.env"
if [ -f "$env_file" ]; then
  while IFS='=' read -r key value; do
    [ -n "$key" ] && export "$key=$value"
  done < "$env_file"
fi
output="$(mktemp)"
code=0
bash -c "$script" > "$output" 2>&1 || code=$?
conclusion=success
[ "$code" -eq 0 ] || conclusion=failure
api "jobs/$id/complete" -H "X-Conclusion: $conclusion" --data-binary "@$output" > /dev/null
echo "Job $id completed with result: $conclusion"
api offline > /dev/null || true
