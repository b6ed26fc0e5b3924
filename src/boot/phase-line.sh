# gpu-runner's phase lines, shared by the instance's boot script and the pod's entrypoint, which put
# it where their `# @PHASE_LINE@` line is: `gpu-runner: phase=NAME FIELDS seconds=S` (read back by
# src/boot/phases.rs), S the time since the line before (the script's start): what that phase took.
LOGGED_AT="${EPOCHREALTIME//[!0-9]/}"
# Sets PHASE_LINE for phase $1 with the fields $2. Called in the script's own shell: in a
# subshell, the clock of the line before would not move.
phase_line() {
  local now="${EPOCHREALTIME//[!0-9]/}" tenths
  tenths=$(((now - LOGGED_AT) / 100000))
  LOGGED_AT="$now"
  PHASE_LINE="gpu-runner: phase=$1${2:+ $2} seconds=$((tenths / 10)).$((tenths % 10))"
}
