#!/bin/bash
# gpu-runner's container hook in a pod (ACTIONS_RUNNER_CONTAINER_HOOKS): the runner calls it in
# place of Docker for a job's `container:` and `services:` ("Initialize containers", command
# prepare_job), for a Docker container action (run_container_step) and, after the job,
# cleanup_job, with {"command": ..., "args": ...} on stdin (actions/runner
# src/Runner.Worker/Container/ContainerHooks/ContainerHookManager.cs, HookInput.cs). A pod has no
# Docker daemon (GitHub's runner image has only the CLI) and gpu-runner's pod may not make pods
# of its own, so without this hook such a job fails on "Cannot connect to the Docker daemon".
# It refuses them instead, in words that name what works.
set -euo pipefail
readonly TROUBLESHOOTING="https://github.com/gpu-runner/gpu-runner/blob/v1/docs/troubleshooting.md#no-containers-in-a-kubernetes-pod"

input="$(tr -d '\n')"
# The first string value of a key of the runner's compact JSON (the hook may have no jq).
first() {
  grep -o "\"$1\"[[:space:]]*:[[:space:]]*\"[^\"]*\"" <<< "$input" | head -n 1 \
    | sed 's/.*:[[:space:]]*"\(.*\)"$/\1/' || true
}

refuse() {
  local what="$1"
  printf '::error title=gpu-runner cannot start containers in a pod::%s%s%s\n' \
    "$what, but a gpu-runner pod runs the job's steps in the pod itself: it has no Docker daemon to start containers. " \
    "Remove container:, services: and Docker container actions from this job and set the start step's pod-image to an image with your CUDA stack and the Actions runner (FROM ghcr.io/actions/actions-runner), or run the job on an EC2 instance (machine: ec2), where Docker works. " \
    "Troubleshooting: $TROUBLESHOOTING"
  exit 1
}

case "$(first command)" in
  prepare_job)
    if grep -q '"container"[[:space:]]*:[[:space:]]*null' <<< "$input"; then
      refuse "This job asks for service containers (services: $(first image), ...)"
    fi
    refuse "This job asks for the container $(first image)"
    ;;
  run_container_step)
    image="$(first image)"
    [ -n "$image" ] || image="$(first dockerfile)"
    refuse "This step is a Docker container action (${image:-an image})"
    ;;
  cleanup_job)
    # prepare_job started nothing.
    exit 0
    ;;
  *)
    refuse "The runner asked the container hook for '$(first command)'"
    ;;
esac
