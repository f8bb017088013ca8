#!/usr/bin/env bash
# Builds alertd's Debian packages for amd64, arm64 and armhf from static
# cross-builds: armhf is built for ARMv6 (GOARM=6), so one package runs on
# every Raspberry Pi from the Zero and Pi 1 up. Writes dist/alertd_<version>_<arch>.deb.
#   scripts/package.sh [VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."

# The version: the argument, else the last v-tag (v1.2.0-3-gabc1234 →
# 1.2.0-3-gabc1234), else 0.0.0+git<commit> (Debian versions must start
# with a digit, and sort below any release).
version=${1:-$(git describe --tags --match 'v[0-9]*' 2>/dev/null | sed 's/^v//' || true)}
[ -n "$version" ] || version="0.0.0+git$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"

nfpm="github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2"

mkdir -p dist
rm -f dist/alertd_*.deb
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The packaged configuration is the example, with the store in systemd's
# StateDirectory instead of beside the file (/etc is read-only to the service).
scripts/system-config.sh /var/lib/alertd/alertd.db > "$work/alertd.yaml"

for target in amd64:amd64: arm64:arm64: armhf:arm:6; do
  IFS=: read -r debarch goarch goarm <<<"$target"
  CGO_ENABLED=0 GOOS=linux GOARCH=$goarch GOARM=$goarm \
    go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$work/alertd-$debarch" ./cmd/alertd
  # nfpm expands variables in arch and version, not in file paths.
  sed -e "s|\${BINARY}|$work/alertd-$debarch|; s|\${CONFIG}|$work/alertd.yaml|" packaging/nfpm.yaml > "$work/nfpm.yaml"
  DEB_ARCH=$debarch VERSION=$version \
    go run "$nfpm" package --config "$work/nfpm.yaml" --packager deb --target "dist/alertd_${version}_${debarch}.deb" >/dev/null
  echo "dist/alertd_${version}_${debarch}.deb: $(( $(stat -c %s "dist/alertd_${version}_${debarch}.deb") / 1024 )) KiB"
done
