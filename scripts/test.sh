#!/usr/bin/env bash
# Runs alertd's whole test suite on a fresh Debian machine: installs the
# real peers the integration tests talk to (Mosquitto, Python's aiosmtpd
# as a strict SMTP server, swaks and curl as real clients of the ingress), then gofmt, go vet, the race-enabled
# tests, and a short bounded run of every fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
/usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1 || need+=(python3-aiosmtpd)
command -v swaks >/dev/null 2>&1 || need+=(swaks)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]} from Debian's packages"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt wants to change:"; echo "$unformatted"; exit 1
fi

echo "== go vet"
go vet ./...

echo "== go test -race"
go test -race -count=1 -timeout 8m ./...

echo "== fuzz (short, bounded)"
# A count, not a duration: when a duration runs out while a worker is busy
# with an input, go test reports a spurious "context deadline exceeded".
fuzztime=${FUZZTIME:-30000x}
while read -r pkg target; do
  go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" -fuzzminimizetime=100x "$pkg"
done < <(grep -rl --include='*_test.go' '^func Fuzz' . | while read -r f; do
  pkg=$(dirname "$f")
  grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed 's/^func //' | while read -r t; do echo "$pkg $t"; done
done | sort -u)

echo "== static cross-builds for the Raspberry Pi and servers"
for target in arm:6 arm:7 arm64: amd64:; do
  arch=${target%%:*} arm=${target##*:}
  out=$(mktemp)
  CGO_ENABLED=0 GOOS=linux GOARCH=$arch GOARM=$arm go build -trimpath -ldflags "-s -w" -o "$out" ./cmd/alertd
  echo "linux/$arch${arm:+ v$arm}: $(( $(stat -c %s "$out") / 1024 / 1024 )) MiB"
  rm -f "$out"
done

echo "== benchmark harness smoke (tiny counts; CI asserts no timing)"
# The ingress scenarios run for 200 ms per load level; Postfix, the SMTP
# ingress's reference, is not installed here and not needed for the smoke.
go run ./cmd/alertd-bench -messages 2000 -backlog 1000 -devices 100 -rules 50 -mails 500 -alerts 50 -series 200 -rounds 1 \
  -ingress-duration 200ms -postfix=false -write ""

echo "== all tests passed"
