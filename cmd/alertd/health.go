package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/alertd/alertd/internal/adminclient"
	"github.com/alertd/alertd/internal/app"
)

// cmdHealth is `alertd health -config FILE`: asks the running alertd's
// /healthz (on http.listen) and exits 0 when it answers 200, 1 otherwise,
// printing what it said. It is the container's HEALTHCHECK (a distroless
// image has no curl) and works in any script.
func cmdHealth(args []string, stdout, stderr io.Writer) int {
	path, code := configFlag("health", args, stderr)
	if code >= 0 {
		return code
	}
	cfg, err := app.Check(path)
	if err != nil {
		return reportConfigError(err, stderr)
	}
	base, err := adminclient.APIBase(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "alertd health:", err)
		return 1
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(base + "/healthz")
	if err != nil {
		fmt.Fprintf(stderr, "alertd health: alertd does not answer on %s: %v\n", base, err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	text := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "alertd health: not ready (%d): %s\n", resp.StatusCode, text)
		return 1
	}
	fmt.Fprintln(stdout, text)
	return 0
}
