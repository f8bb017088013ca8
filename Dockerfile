# alertd: a static binary on a minimal base, running as an unprivileged user.
# Build: docker build -t alertd .        (multi-arch: docker buildx build --platform linux/amd64,linux/arm64,linux/arm/v7 .)
FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
ARG TARGETOS TARGETARCH TARGETVARIANT
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH GOARM=${TARGETVARIANT#v} \
    go build -trimpath -ldflags="-s -w" -o /out/alertd ./cmd/alertd

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/alertd /usr/local/bin/alertd
COPY rules.example.yaml /etc/alertd/alertd.yaml
# State (bbolt store and spool) lives in a volume owned by the nonroot user.
VOLUME ["/var/lib/alertd"]
WORKDIR /var/lib/alertd
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/alertd"]
CMD ["run", "-config", "/etc/alertd/alertd.yaml"]
