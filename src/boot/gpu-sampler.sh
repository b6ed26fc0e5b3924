# What the job uses of its GPUs, until the job-completed hook stops it: one nvidia-smi that keeps
# NVML open (-lms), writing to a file in STATE_DIR (the hooks' folder), so that it holds none of
# the hook step's pipes. Shared by the instance's, the pod's and attach's job-started hooks.
if command -v nvidia-smi > /dev/null 2>&1; then
  nvidia-smi --query-gpu=index,utilization.gpu,memory.used,memory.total \
    --format=csv,noheader,nounits -lms 1000 > "$STATE_DIR/gpu-samples.csv" 2> /dev/null < /dev/null &
  echo "$!" > "$STATE_DIR/gpu-sampler.pid"
fi
