# syntax=docker/dockerfile:1

# Build: a release binary on the same Debian as the runtime image, so glibc matches. Every base
# image is named by digest as well as tag, so that a release rebuilt from the same commit gets the
# same bytes; Dependabot (docker ecosystem) proposes the next digest of each tag.
FROM rust:1.95-slim-bookworm@sha256:d7482085ff5b415f84dba5647ae71606650bdef00db7aeb69f4b3d170c3e4082 AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The workspace's other member (the local test world) must be present for a --locked build.
COPY tests/world ./tests/world
RUN cargo build --release --locked --bin gpu-runner \
 && mkdir /out \
 && cp target/release/gpu-runner /out/gpu-runner \
 && ln -s gpu-runner /out/gpu-runner-post

# The attach image (`--target attach`): `gpu-runner attach` runs the Actions runner, which needs
# bash, tar, git for checkouts and its .NET libraries, and uses runuser, useradd and kill. Run it
# with --init, so that what jobs leave behind is reaped:
#   docker run --init --gpus all -e GITHUB_TOKEN ghcr.io/gpu-runner/gpu-runner-attach attach --repo OWNER/REPO
FROM debian:bookworm-slim@sha256:7802002798b0e351323ed2357ae6dc5a8c4d0a05a57e7f4d8f97136151d3d603 AS attach
# The runner's dependencies as its installdependencies.sh lists them for Debian 12; Debian's
# security updates, not version pins, keep them current.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl git procps \
      libicu72 libkrb5-3 liblttng-ust1 libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/gpu-runner /usr/local/bin/gpu-runner
ENTRYPOINT ["/usr/local/bin/gpu-runner"]
CMD ["attach", "--help"]

# Run: glibc, CA certificates and the binary, nothing else. No USER: the runner mounts its
# file-command files for root, and container actions must run as the image's default user.
# distroless publishes no versioned tags: the digest is the version.
# hadolint ignore=DL3007
FROM gcr.io/distroless/cc-debian12:latest@sha256:b7550f0b15838de14c564337eef2b804ba593ae55d81ca855421bd52f19bb480
COPY --from=build /out/ /usr/local/bin/
# The post step is the same binary under another name (action.yml's post-entrypoint).
ENTRYPOINT ["/usr/local/bin/gpu-runner"]
