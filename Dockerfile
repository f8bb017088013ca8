# alertd: a static binary on a minimal base, running as an unprivileged user.
# Build: docker build -t alertd .        (multi-arch: docker buildx build --platform linux/amd64,linux/arm64,linux/arm/v6 .)
# Run:   docker run -d -p 127.0.0.1:9464:9464 -v alertd-data:/var/lib/alertd \
#          -v ./alertd.yaml:/etc/alertd/alertd.yaml:ro alertd
FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
ARG TARGETOS TARGETARCH TARGETVARIANT
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH GOARM=${TARGETVARIANT#v} \
    go build -trimpath -ldflags="-s -w" -o /out/alertd ./cmd/alertd
# The built-in configuration is the example with the store in the volume
# and /metrics, /healthz on every interface, for a published port (/api
# still answers only requests from inside the container).
RUN scripts/system-config.sh /var/lib/alertd/alertd.db 0.0.0.0:9464 > /out/alertd.yaml \
    && mkdir -p /out/state

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/alertd /usr/local/bin/alertd
COPY --from=build /out/alertd.yaml /etc/alertd/alertd.yaml
# A named volume starts as a copy of this directory, owned by the nonroot
# user (65532), with Docker and with rootless Podman alike. A host bind
# mount must be writable by 65532 (chown 65532:65532 DIR, or Podman's :U).
COPY --from=build --chown=65532:65532 /out/state /var/lib/alertd
VOLUME ["/var/lib/alertd"]
WORKDIR /var/lib/alertd
USER 65532:65532
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/usr/local/bin/alertd", "health", "-config", "/etc/alertd/alertd.yaml"]
ENTRYPOINT ["/usr/local/bin/alertd"]
CMD ["run", "-config", "/etc/alertd/alertd.yaml"]
