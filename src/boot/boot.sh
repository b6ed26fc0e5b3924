#!/bin/bash
# gpu-runner boot script: turns this instance into a one-job GitHub Actions runner, then ends it.
# A pool instance runs it at every boot, each time with a new runner: it must hold for a rerun.
# Rendered by gpu-runner. Every value below is single-quoted data, never code.
set -euo pipefail

# @VALUES@

readonly LOG_FILE=/var/log/gpu-runner.log
readonly STATE_DIR=/var/lib/gpu-runner
# The one folder the runner user may write in STATE_DIR: the job-started hook's marks.
readonly JOB_MARKS="$STATE_DIR/job"
readonly RUNNER_DIR=/opt/actions-runner
readonly CACHE_DIR=/var/cache/gpu-runner
readonly PACKAGE_DIR=/var/cache/gpu-runner-package
CURRENT_PHASE=boot

# One line per event, to the console (EC2 keeps it as the console output) and to the log file,
# with the seconds that phase took.
# @PHASE_LINE@
log() {
  phase_line "$1" "${2:-}"
  printf '%s\n' "$PHASE_LINE"
  printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$PHASE_LINE" >> "$LOG_FILE" 2> /dev/null || true
}

# Shutdown means terminate (the instance is launched that way): nothing is left billing. A pool
# instance is launched to stop instead: its EBS disk waits for the next job, billed by the GB-month
# while stopped (Amazon EBS pricing), and its NVMe instance store, if any, is wiped.
end_instance() {
  log shutdown "reason=\"$1\""
  shutdown -h now "gpu-runner: $1" || true
}

# One read of the instance's metadata, through IMDSv2 (a session token first, as an instance
# launched with HttpTokens: required demands). Bounded: nothing the boot waits for may hang on it.
imds_get() {
  local imds="${AWS_EC2_METADATA_SERVICE_ENDPOINT:-http://169.254.169.254}" token
  token="$(curl -fsS --max-time 5 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' \
    "$imds/latest/api/token" 2> /dev/null)" || token=""
  curl -fsS --max-time 5 -H "X-aws-ec2-metadata-token: $token" \
    "$imds/latest/meta-data/$1" 2> /dev/null
}

fail() {
  trap - ERR
  log "$1" "status=failed reason=\"$2\""
  end_instance "$1 failed"
  exit 1
}

trap 'fail "$CURRENT_PHASE" "the boot script stopped at line $LINENO"' ERR

# root's alone, so that nothing root writes here (gpu.json) goes through a link a job planted on a
# kept disk; what the last boot's job left behind must not speak for this boot's.
mkdir -p "$STATE_DIR"
chown root: "$STATE_DIR"
chmod 755 "$STATE_DIR"
rm -rf "$JOB_MARKS" "$STATE_DIR/gpu.json" "$STATE_DIR/job-started" "$STATE_DIR/job-refused" \
  "$STATE_DIR/spot-notice.json"

# 1. The max lifetime, armed first: the instance ends by then even if this script dies.
CURRENT_PHASE=watchdog
shutdown -h "+$MAX_LIFETIME_MINUTES" "gpu-runner: max lifetime reached" > /dev/null 2>&1 \
  || fail watchdog "could not schedule the max-lifetime shutdown"
log watchdog "status=ok max_lifetime_minutes=$MAX_LIFETIME_MINUTES"

# A spot instance hears two minutes ahead that AWS takes it back: its instance metadata (IMDSv2)
# answers spot/instance-action with {"action": ..., "time": ...} from then on, and 404 before
# (EC2 User Guide, "Spot Instance interruption notices"). It says so on the console, for stop to
# read, and leaves the notice where the job can read it (GPU_RUNNER_SPOT_NOTICE).
if [ "$SPOT" = true ]; then
  (
    while :; do
      if notice="$(imds_get spot/instance-action)"; then
        action="$(printf '%s' "$notice" | sed -n 's/.*"action" *: *"\([a-z]*\)".*/\1/p')"
        at="$(printf '%s' "$notice" | sed -n 's/.*"time" *: *"\([0-9TZ:.-]*\)".*/\1/p')"
        printf '%s\n' "$notice" > "$STATE_DIR/spot-notice.json"
        chmod 644 "$STATE_DIR/spot-notice.json"
        log spot-interrupted "action=${action:-unknown} at=${at:-unknown}"
        exit 0
      fi
      sleep 5
    done
  ) &
fi

# 2. The runner package downloads while the GPU probe waits for the driver: on a GPU image each
# can take seconds and neither needs the other. Step 4 waits for it.
mkdir -p "$PACKAGE_DIR"
chmod 700 "$PACKAGE_DIR"
tarball="$PACKAGE_DIR/actions-runner-$RUNNER_SHA256.tar.gz"
fetch_runner() {
  curl --fail --silent --show-error --location --retry 5 --retry-delay 2 \
    --output "$tarball.part" "$RUNNER_URL" 2> "$PACKAGE_DIR/download.err"
}
download=""
if [ ! -x "$RUNNER_DIR/run.sh" ] && [ ! -f "$tarball" ]; then
  fetch_runner &
  download=$!
fi

# The GPU, as the job will see it. The driver may still be loading: retry for a while.
GPUS_PROMISED_BY="$INSTANCE_TYPE"
# @GPU_PROBE@

# @POOL_CLEAN@

# 3. The user the runner (and so every job step) runs as.
CURRENT_PHASE=runner-user
if ! id -u "$RUNNER_USER" > /dev/null 2>&1; then
  useradd --create-home --shell /bin/bash "$RUNNER_USER"
fi
# Passwordless sudo, as on GitHub-hosted runners, unless runner-sudo: false.
sudo=no
if [ "$RUNNER_SUDO" = true ] && [ "$RUNNER_USER" != root ]; then
  mkdir -p /etc/sudoers.d
  printf '%s ALL=(ALL) NOPASSWD:ALL\n' "$RUNNER_USER" > /etc/sudoers.d/90-gpu-runner
  chmod 0440 /etc/sudoers.d/90-gpu-runner
  sudo=passwordless
else
  rm -f /etc/sudoers.d/90-gpu-runner
fi
# The Deep Learning AMI has Docker with its socket root:docker 0660: without the group, a
# container: job or a Docker action fails on the runner. The group is root in all but name, so a
# runner user without sudo is not in it.
docker=no
if [ "$RUNNER_USER" = root ]; then
  docker=root
elif getent group docker > /dev/null 2>&1; then
  if [ "$sudo" = passwordless ]; then
    usermod -aG docker "$RUNNER_USER"
    docker=group
  else
    gpasswd -d "$RUNNER_USER" docker > /dev/null 2>&1 || true
  fi
fi
log runner-user "status=ok user=$RUNNER_USER sudo=$sudo docker=$docker"

# 4. The runner: kept when the image has it, else the pinned version, checked against its SHA-256.
CURRENT_PHASE=runner-fetch
if [ -x "$RUNNER_DIR/run.sh" ]; then
  log runner-fetch "status=skipped reason=\"already installed\""
else
  # Root's alone; a pool instance keeps it for its next boots, which unpack it afresh.
  from=cache
  if [ -n "$download" ] || [ ! -f "$tarball" ]; then
    from=download
    fetched=0
    if [ -n "$download" ]; then
      wait "$download" || fetched=$?
    else
      fetch_runner || fetched=$?
    fi
    [ "$fetched" -eq 0 ] \
      || fail runner-fetch "could not download $RUNNER_URL: $(head -n 1 "$PACKAGE_DIR/download.err" | tr -d '"')"
    mv -f "$tarball.part" "$tarball"
  fi
  actual="$(sha256sum "$tarball" | cut -d ' ' -f 1)"
  if [ "$actual" != "$RUNNER_SHA256" ]; then
    rm -f "$tarball"
    fail runner-fetch "SHA-256 of $RUNNER_URL is $actual, expected $RUNNER_SHA256"
  fi
  mkdir -p "$RUNNER_DIR"
  tar -xzf "$tarball" -C "$RUNNER_DIR"
  [ "$POOLED" = true ] || rm -f "$tarball"
  log runner-fetch "status=ok version=$RUNNER_VERSION from=$from"
fi
# The runner adds its .env to every job's environment; a rerun replaces gpu-runner's lines. A
# link there (a job's, on a kept disk) is neither read nor written through: a new file replaces it.
env_kept=""
if [ -f "$RUNNER_DIR/.env" ] && [ ! -L "$RUNNER_DIR/.env" ]; then
  env_kept="$(grep -v '^GPU_RUNNER_' "$RUNNER_DIR/.env" || true)"
fi
env_file="$(mktemp "$RUNNER_DIR/.env.XXXXXX")"
printf '%s\n' "$env_kept" | sed '/^$/d' > "$env_file"
{
  printf 'GPU_RUNNER_GPU_NAME=%s\n' "$gpu_name"
  printf 'GPU_RUNNER_GPU_COUNT=%s\n' "$gpu_count"
  printf 'GPU_RUNNER_GPU_MEMORY=%s\n' "$gpu_memory"
  printf 'GPU_RUNNER_DRIVER_VERSION=%s\n' "$driver_version"
  printf 'GPU_RUNNER_CUDA_VERSION=%s\n' "$cuda_version"
  printf 'GPU_RUNNER_GPU_JSON=%s\n' "$STATE_DIR/gpu.json"
  if [ "$POOLED" = true ]; then
    printf 'GPU_RUNNER_CACHE=%s\n' "$CACHE_DIR"
  fi
  if [ "$SPOT" = true ]; then
    printf 'GPU_RUNNER_SPOT_NOTICE=%s\n' "$STATE_DIR/spot-notice.json"
  fi
} >> "$env_file"
chmod 644 "$env_file"
mv -f "$env_file" "$RUNNER_DIR/.env"
if [ "$POOLED" = true ]; then
  # What persists from job to job on a pool instance is this cache, which the jobs fill; the
  # work folder (every checkout) and the last runner's configuration do not.
  mkdir -p "$CACHE_DIR"
  chown -R "$RUNNER_USER:" "$CACHE_DIR"
  # The runner reads .runner_migrated and .credentials_migrated before .runner and .credentials
  # (actions/runner: Runner.cs, ConfigurationStore.cs): a stale one would start as the dead runner.
  rm -rf "$RUNNER_DIR/_work" "$RUNNER_DIR/.runner" "$RUNNER_DIR/.credentials" \
    "$RUNNER_DIR/.credentials_rsaparams" "$RUNNER_DIR/.runner_migrated" \
    "$RUNNER_DIR/.credentials_migrated"
fi
mkdir -m 700 "$JOB_MARKS"
chown -R "$RUNNER_USER:" "$RUNNER_DIR" "$JOB_MARKS"

# 5. The user's own preparation, as root.
if [ -n "$PRE_RUNNER_SCRIPT" ]; then
  CURRENT_PHASE=pre-runner-script
  script="$(mktemp)"
  printf '%s\n' "$PRE_RUNNER_SCRIPT" > "$script"
  code=0
  bash "$script" || code=$?
  rm -f "$script"
  if [ "$code" -ne 0 ]; then
    fail pre-runner-script "the pre-runner-script exited with code $code"
  fi
  log pre-runner-script "status=ok"
fi

# With jit-handoff: ssm the JIT config comes from SSM here (`jit-handoff.sh`), not from the values.
runner_jit="$JIT_CONFIG"
# @JIT_HANDOFF@

# 6. The runner, for one job. The job-started hook refuses any job but this run's (GitHub hands a
# runner whatever queued job its labels cover) and tells the idle watchdog that a job began. It
# lives where the runner user cannot change it.
CURRENT_PHASE=runner
readonly HOOK_DIR=/usr/local/lib/gpu-runner
mkdir -p "$HOOK_DIR"
{
  printf '#!/bin/bash\n'
  declare -p JOB_REPOSITORY JOB_RUN_ID JOB_WORKFLOW_REF
  printf 'STATE_DIR=%q\n' "$JOB_MARKS"
  cat << 'HOOK'
# @JOB_STARTED_HOOK@
HOOK
} > "$HOOK_DIR/job-started.sh"
# What the machine costs, for the job's usage report. A spot instance's price is its zone's,
# and EC2 chose the zone: start gave each zone's spot price at launch.
price_per_hour="$PRICE_PER_HOUR" price_source="on-demand list price in us-east-1"
if [ "$SPOT" = true ] && [ -n "$SPOT_PRICES" ]; then
  zone="$(imds_get placement/availability-zone)" || zone=""
  read -ra zone_prices <<< "$SPOT_PRICES"
  for zone_price in "${zone_prices[@]}"; do
    if [ -n "$zone" ] && [ "${zone_price%%=*}" = "$zone" ]; then
      price_per_hour="${zone_price#*=}" price_source="spot price in $zone at launch"
    fi
  done
fi
{
  printf '#!/bin/bash\n'
  printf 'STATE_DIR=%q\n' "$JOB_MARKS"
  printf 'PRICE_PER_HOUR=%q\n' "$price_per_hour"
  printf 'PRICE_SOURCE=%q\n' "$price_source"
  cat << 'HOOK'
# @JOB_COMPLETED_HOOK@
HOOK
} > "$HOOK_DIR/job-completed.sh"
chown -R root: "$HOOK_DIR"
chmod 755 "$HOOK_DIR" "$HOOK_DIR/job-started.sh" "$HOOK_DIR/job-completed.sh"
log runner "status=bound jobs_of=\"$JOB_REPOSITORY run $JOB_RUN_ID\""
(
  sleep "$((IDLE_TIMEOUT_MINUTES * 60))"
  if [ ! -e "$JOB_MARKS/job-started" ]; then
    log idle "status=timeout reason=\"no job started within $IDLE_TIMEOUT_MINUTES min\""
    end_instance "no job started"
  fi
) &
# The JIT config is in this process's memory now: remove the copies of this script that hold it
# (cloud-init keeps the user data on disk), and hand it to the runner in its environment, never on
# a command line, which every user on the machine can read.
rm -f -- "$0" /var/lib/cloud/instance/user-data.txt /var/lib/cloud/instance/user-data.txt.i \
  /var/lib/cloud/instance/scripts/part-* 2> /dev/null || true
log runner "status=starting name=$RUNNER_NAME labels=$RUNNER_LABELS"
trap - ERR
code=0
export ACTIONS_RUNNER_HOOK_JOB_STARTED="$HOOK_DIR/job-started.sh"
export ACTIONS_RUNNER_HOOK_JOB_COMPLETED="$HOOK_DIR/job-completed.sh"
# The runner refuses to run as root unless told that it may (run-helper.sh).
if [ "$RUNNER_USER" = root ]; then
  export RUNNER_ALLOW_RUNASROOT=1
fi
ACTIONS_RUNNER_INPUT_JITCONFIG="$runner_jit" runuser -u "$RUNNER_USER" -- "$RUNNER_DIR/run.sh" \
  || code=$?
log runner "status=exited code=$code"
# What the job used of its GPUs (the job-completed hook's line), read with the runner user's
# rights: the file is that user's, and may be a link.
if [ -s "$JOB_MARKS/gpu-usage" ]; then
  usage="$(runuser -u "$RUNNER_USER" -- head -n 1 "$JOB_MARKS/gpu-usage" || true)"
  log gpu-usage "$(printf '%s' "$usage" | tr -cd 'a-z0-9_= ' | cut -c 1-200)"
fi

# 7. One job, then the instance ends; a refused job ends it too, saying why.
if [ -s "$JOB_MARKS/job-refused" ]; then
  # Read with the runner user's rights: the file is that user's, and may be a link.
  why="$(runuser -u "$RUNNER_USER" -- head -n 1 "$JOB_MARKS/job-refused" || true)"
  log job-refused "reason=\"$(printf '%s' "$why" | tr -d '"' | cut -c 1-300)\""
  end_instance "it refused a job of another workflow run"
  exit 0
fi
end_instance "the runner finished"
