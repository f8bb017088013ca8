package adminclient

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/httpapi"
)

// Status asks the alertd running with cfg what the status page shows
// (GET /api/v1/status). raw is the JSON as it answered, for alertd status
// -json. An error wraps ErrNotRunning when nothing answers where the
// file's http.listen says.
func Status(cfg *config.Config) (st httpapi.Status, raw []byte, err error) {
	base, err := APIBase(cfg)
	if err != nil {
		return st, nil, err
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(base + "/api/v1/status")
	if err != nil {
		return st, nil, fmt.Errorf("%w at %s (http.listen), or it does not answer: %v", ErrNotRunning, base, err)
	}
	defer resp.Body.Close()
	raw, err = io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	switch {
	case err != nil:
		return st, nil, err
	case resp.StatusCode == http.StatusNotFound:
		return st, nil, fmt.Errorf("the alertd at %s has no status API (an older version?)", base)
	case resp.StatusCode != http.StatusOK:
		return st, nil, fmt.Errorf("alertd answered %s: %s", resp.Status, strings.TrimSpace(string(raw)))
	}
	return st, raw, json.Unmarshal(raw, &st)
}
