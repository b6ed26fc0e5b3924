#!/bin/bash
# Stand-in for the Actions runner package's run.sh, shaped like actions/runner's
# (src/Misc/layoutroot/run.sh): it runs run-helper.sh until that asks for no restart, and exits 0
# whatever the listener's code was.
DIR="$(cd -P "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
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
