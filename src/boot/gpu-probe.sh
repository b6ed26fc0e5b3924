# gpu-runner's GPU probe, shared by the instance's boot script and the pod's entrypoint, which put
# it where their `# @GPU_PROBE@` line is. The GPU as the job will see it: nvidia-smi until it
# answers (the driver may still be loading), its GPUs counted against EXPECTED_GPUS (0: any), which
# GPUS_PROMISED_BY promised; what it found is logged and written to $STATE_DIR/gpu.json. Needs
# log, fail, STATE_DIR and the GPU_PROBE_* values; sets gpu_count, first, gpu_name, gpu_memory,
# driver_version and cuda_version.
CURRENT_PHASE=gpu-probe
gpus=""
probe_error=""
for _ in $(seq 1 "$GPU_PROBE_ATTEMPTS"); do
  if gpus="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1)"; then
    break
  fi
  probe_error="$(printf '%s\n' "$gpus" | head -n 1)"
  gpus=""
  sleep "$GPU_PROBE_INTERVAL_SECONDS"
done
if [ -z "$gpus" ]; then
  fail gpu-probe "nvidia-smi failed $GPU_PROBE_ATTEMPTS times: ${probe_error:-no output}"
fi
gpu_count="$(printf '%s\n' "$gpus" | grep -c .)"
if [ "$EXPECTED_GPUS" -gt 0 ] && [ "$gpu_count" -lt "$EXPECTED_GPUS" ]; then
  fail gpu-probe "nvidia-smi shows $gpu_count GPU(s) but $GPUS_PROMISED_BY has $EXPECTED_GPUS"
fi
# What the job can rely on, written down once: for the runner's .env (the job's environment) and
# as JSON. Fields come from nvidia-smi's CSV: name, memory.total, driver_version.
first="$(printf '%s\n' "$gpus" | head -n 1)"
gpu_name="$(printf '%s' "$first" | cut -d ',' -f 1 | sed 's/^ *//; s/ *$//')"
gpu_memory="$(printf '%s' "$first" | cut -d ',' -f 2 | sed 's/^ *//; s/ *$//')"
driver_version="$(printf '%s' "$first" | cut -d ',' -f 3 | sed 's/^ *//; s/ *$//')"
cuda_version="$(nvidia-smi 2> /dev/null | grep -o 'CUDA Version: [0-9.]*' | head -n 1 | cut -d ' ' -f 3 || true)"
json_string() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
printf '{"name": %s, "count": %s, "memory": %s, "driver_version": %s, "cuda_version": %s}\n' \
  "$(json_string "$gpu_name")" "$gpu_count" "$(json_string "$gpu_memory")" \
  "$(json_string "$driver_version")" "$(json_string "$cuda_version")" > "$STATE_DIR/gpu.json"
log gpu-probe "status=ok gpus=$gpu_count first=\"$first\" cuda=${cuda_version:-unknown}"
