# What the job uses of its GPUs, until the job-completed hook stops it: one nvidia-smi that keeps
# NVML open (-lms), writing to a file in STATE_DIR (the hooks' folder), so that it holds none of
# the hook step's pipes. Shared by the instance's, the pod's and attach's job-started hooks.
# nvidia-smi prints through C stdio, which holds a file's output in blocks of 4 KiB (glibc), and
# the hook ends it with a signal: without stdbuf (coreutils) it would lose its last 200 or so
# samples, a short job's all. Under stdbuf -oL each sample is in the file as soon as it is taken.
if command -v nvidia-smi > /dev/null 2>&1; then
  run=(command)
  if command -v stdbuf > /dev/null 2>&1; then run=(stdbuf -oL); fi
  "${run[@]}" nvidia-smi --query-gpu=index,utilization.gpu,memory.used,memory.total \
    --format=csv,noheader,nounits -lms 1000 > "$STATE_DIR/gpu-samples.csv" 2> /dev/null < /dev/null &
  echo "$!" > "$STATE_DIR/gpu-sampler.pid"
fi
