#!/bin/bash
# gpu-runner's job-completed hook (ACTIONS_RUNNER_HOOK_JOB_COMPLETED): the runner runs it after the
# job's steps as a post-job step whose condition is always(), with the runner's file commands
# (actions/runner JobHookProvider.cs), so what it writes to GITHUB_STEP_SUMMARY joins the job's
# summary. It stops the GPU sampler the job-started hook began and sums up what the job used of
# its GPUs: a table in the job's summary, and one line in STATE_DIR/gpu-usage for the boot
# script to put on the console. The boot script puts STATE_DIR (and the machine's
# PRICE_PER_HOUR and its PRICE_SOURCE, when it has one) in front of this text.
set -u
pid="$(cat "$STATE_DIR/gpu-sampler.pid" 2> /dev/null || true)"
# Only while that process is still the sampler: one that ended early may have left its number to
# another of the job's processes.
if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2> /dev/null)" = nvidia-smi ] \
  && kill "$pid" 2> /dev/null; then
  # Its last sample may still be on its way to the file: read once it has ended (a zombie has;
  # 2 s at most).
  sampler_running() {
    [ -e "/proc/$pid" ] && ! grep -q '^State:\s*Z' "/proc/$pid/status" 2> /dev/null
  }
  for _ in $(seq 20); do
    sampler_running || break
    sleep 0.1
  done
fi
samples="$STATE_DIR/gpu-samples.csv"
[ -s "$samples" ] || exit 0
# A line that ends without a newline was cut off when the sampler ended (one that wrote a block
# at a time): only the complete lines count.
complete="$(wc -l < "$samples")"
# The sampler takes one line per GPU a second: the job's seconds are its samples.
# A field nvidia-smi cannot give reads "[N/A]" or "[Not Supported]" (nvidia-smi(1)): a GPU in MIG
# mode has no utilization. Such a GPU is "not reported", never idle; its memory still counts.
awk -F', *' -v usage="$STATE_DIR/gpu-usage" -v price="${PRICE_PER_HOUR:-}" \
  -v source="${PRICE_SOURCE:-on-demand list price in us-east-1}" -v complete="$complete" '
  NR <= complete + 0 && NF >= 4 && $1 ~ /^[0-9]+$/ {
    g = $1
    if (!(g in n)) order[++gpus] = g
    n[g]++; total[g] = $4 + 0
    if ($3 ~ /^[0-9]+$/ && $3 + 0 > mem[g]) mem[g] = $3 + 0
    if ($2 ~ /^[0-9]+$/) {
      u[g]++; sum[g] += $2
      if ($2 + 0 > peak[g]) peak[g] = $2 + 0
      if ($2 + 0 < 1) idle[g]++
    }
  }
  END {
    if (gpus == 0) exit
    seconds = n[order[1]]
    print "### GPU usage\n"
    print "| GPU | Utilization, peak | Utilization, mean | Memory, peak of total | Idle |"
    print "| --- | --- | --- | --- | --- |"
    busy = 0; measured = 0; unreported = 0
    for (i = 1; i <= gpus; i++) {
      g = order[i]
      memory = sprintf("%.1f of %.1f GiB", mem[g] / 1024, total[g] / 1024)
      if (u[g]) {
        mean = sum[g] / u[g]
        printf "| %s | %d %% | %d %% | %s | %d %% of the job |\n", g, peak[g], mean, memory, 100 * idle[g] / u[g]
        if (idle[g] < u[g]) busy = 1
        if (peak[g] > top) top = peak[g]
        means += mean; measured++
      } else {
        printf "| %s | not reported | not reported | %s | not reported |\n", g, memory
        unreported++
      }
      if (mem[g] > most) { most = mem[g]; of = total[g] }
    }
    if (unreported) printf "\nnvidia-smi reports no utilization for %s (N/A, as for a GPU in MIG mode): only the memory in use tells what the job used.\n", (unreported == gpus ? "the job'"'"'s GPUs" : unreported " of the GPUs")
    if (busy || unreported) printf "\nPeak GPU memory %.1f of %.1f GiB, over %d s of the job.\n", most / 1024, of / 1024, seconds
    else print "\nThe GPU was idle for the whole job: did the job use it?"
    if (price != "") printf "\nGPU time: %d s on %d GPU(s); at $%s/h (%s) the machine cost ≈ $%.2f for the job.\n", seconds, gpus, price, source, price * seconds / 3600
    # Utilization only where nvidia-smi gave one; stop reads its absence as "not reported".
    line = sprintf("gpus=%d", gpus)
    if (measured) line = line sprintf(" peak_utilization=%d mean_utilization=%d", top, means / measured)
    printf "%s peak_memory_mib=%d memory_mib=%d job_seconds=%d\n", line, most, of, seconds > usage
  }' "$samples" >> "${GITHUB_STEP_SUMMARY:-/dev/null}"
