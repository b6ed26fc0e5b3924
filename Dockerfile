# syntax=docker/dockerfile:1

# Build: a release binary on the same Debian as the runtime image, so glibc matches.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The workspace's other member (the local test world) must be present for a --locked build.
COPY tests/world ./tests/world
RUN cargo build --release --locked --bin gpu-runner \
 && mkdir /out \
 && cp target/release/gpu-runner /out/gpu-runner \
 && ln -s gpu-runner /out/gpu-runner-post

# Run: glibc, CA certificates and the binary, nothing else. No USER: the runner mounts its
# file-command files for root, and container actions must run as the image's default user.
# distroless publishes no versioned tags; Dependabot proposes base image updates.
# hadolint ignore=DL3007
FROM gcr.io/distroless/cc-debian12:latest
COPY --from=build /out/ /usr/local/bin/
# The post step is the same binary under another name (action.yml's post-entrypoint).
ENTRYPOINT ["/usr/local/bin/gpu-runner"]
