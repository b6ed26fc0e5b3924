#!/bin/bash
# Stand-in for the Actions runner package's run.sh, shaped like actions/runner's
# (src/Misc/layoutroot/run.sh): it runs run-helper.sh until that asks for no restart, and exits 0
# whatever the listener's code was.
DIR="$(cd -P "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# With RUNNER_MANUALLY_TRAP_SIG (GitHub's runner image sets it), run.sh runs the helper in a
# process group of its own and turns SIGINT and SIGTERM into SIGINT to that group
# (runWithManualTrap); without it, a signal to run.sh reaches no one else.
if [ -n "${RUNNER_MANUALLY_TRAP_SIG:-}" ]; then
  set -m
  trap 'kill -INT -$PID' INT TERM
  while :; do
    cp -f "$DIR/run-helper.sh.template" "$DIR/run-helper.sh"
    "$DIR/run-helper.sh" "$@" &
    PID=$!
    wait $PID
    code=$?
    if [ "$code" -eq 2 ]; then
      echo "Restarting runner..."
    else
      echo "Exiting runner..."
      trap - INT TERM
      wait $PID
      exit "$code"
    fi
  done
fi
while :; do
  cp -f "$DIR/run-helper.sh.template" "$DIR/run-helper.sh"
  "$DIR/run-helper.sh" "$@"
  code=$?
  if [ "$code" -eq 2 ]; then
    echo "Restarting runner..."
  else
    echo "Exiting runner..."
    exit 0
  fi
done
