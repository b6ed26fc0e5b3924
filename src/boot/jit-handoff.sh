# With jit-handoff: ssm only, in place of the boot script's `# @JIT_HANDOFF@`: the JIT config waits
# in an SSM parameter that only this instance's role may read (its tag names this instance).
# Start writes it just after the launch, so it may not be there yet. It is deleted once read:
# nobody reads it twice.
CURRENT_PHASE=jit-handoff
command -v aws > /dev/null 2>&1 \
  || fail jit-handoff "jit-handoff: ssm needs the AWS CLI on the image, and it has none"
why="$(mktemp)"
for attempt in $(seq 1 24); do
  if runner_jit="$(aws ssm get-parameter --region "$JIT_REGION" --name "$JIT_PARAMETER" \
    --with-decryption --query Parameter.Value --output text 2> "$why")"; then
    break
  fi
  runner_jit=""
  if [ "$attempt" -eq 1 ]; then
    log jit-handoff "status=waiting reason=\"$(tail -n 1 "$why" | tr -d '"')\""
  fi
  sleep 5
done
if [ -z "$runner_jit" ]; then
  fail jit-handoff "could not read $JIT_PARAMETER after $attempt tries: $(tail -n 1 "$why" | tr -d '"')"
fi
deleted=yes
aws ssm delete-parameter --region "$JIT_REGION" --name "$JIT_PARAMETER" 2> "$why" || deleted=no
rm -f "$why"
log jit-handoff "status=ok parameter=$JIT_PARAMETER deleted=$deleted"
