# The ciofs image: the release binary on a slim Debian with fuse3 (for
# fusermount3) and CA certificates (ciofs reads the system's roots to trust
# Google's endpoints). ENTRYPOINT is ciofs: a container's args are its
# command line (deploy/kubernetes/ has examples; docs/KUBERNETES.md).
#
#   docker build -t ciofs:0.1.0 .        # or: podman build
#
# scripts/image makes the same runtime filesystem from a local release
# build without pulling anything, for machines with no registry access.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ciofs \
    && install -m 0755 target/release/ciofs /ciofs

FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends fuse3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    # user_allow_other: --allow-other for a ciofs that mounts as non-root
    # through fusermount3 (as root it needs nothing).
    && echo user_allow_other >> /etc/fuse.conf
COPY --from=build /ciofs /usr/local/bin/ciofs
# A state directory that works without --state-dir (mount an emptyDir or
# a volume here to keep staged uploads across container restarts).
ENV CIOFS_STATE_DIR=/var/lib/ciofs/state
RUN mkdir -p /var/lib/ciofs && chown 65532:65532 /var/lib/ciofs
# Non-root by default: `serve-nfs` and a mount served through a descriptor
# a privileged helper passed need no privileges. A FUSE mount made by
# ciofs itself (deploy/kubernetes/sidecar-deployment.yaml) runs the
# container privileged and as root (runAsUser: 0 there, or the
# privileged container's own user).
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ciofs"]
CMD ["--help"]
