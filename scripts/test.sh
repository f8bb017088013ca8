#!/usr/bin/env bash
# Runs alertd's whole test suite on a fresh Debian machine: installs the
# real peers the integration tests talk to (Mosquitto, Python's aiosmtpd
# as a strict SMTP server, swaks and curl as real clients of the ingress,
# headless Chromium as the status page's reader; systemd-analyze, setpriv
# and ip for the package and container checks), then gofmt, go vet, the
# race-enabled tests, a short bounded run of every fuzz target, the Debian
# packages (built, installed, run, purged) and a smoke run of the
# benchmark harness.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_passwd >/dev/null 2>&1 || need+=(mosquitto) # password files for the broker-refuses-credentials tests
/usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1 || need+=(python3-aiosmtpd)
command -v swaks >/dev/null 2>&1 || need+=(swaks)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v spamassassin >/dev/null 2>&1 || need+=(spamassassin)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v adduser >/dev/null 2>&1 || need+=(adduser)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
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

echo "== Debian packages (static cross-builds: amd64, arm64, armhf for ARMv6 Pis)"
scripts/package.sh
CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 go build -trimpath -ldflags "-s -w" -o /dev/null ./cmd/alertd
echo "linux/arm v7: builds"

echo "== install the amd64 package, run it as its user, purge it"
scripts/package-check.sh

echo "== benchmark harness smoke (tiny counts; CI asserts no timing)"
# The ingress scenarios run for 200 ms per load level; Postfix, the SMTP
# ingress's reference, is not installed here and not needed for the smoke.
go run ./cmd/alertd-bench -messages 2000 -backlog 1000 -devices 100 -rules 50 -mails 500 -alerts 50 -series 200 -rounds 1 \
  -ingress-duration 200ms -postfix=false -write ""

echo "== all tests passed"
