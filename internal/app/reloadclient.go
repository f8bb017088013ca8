package app

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/httpapi"
)

// ErrNotRunning means no alertd holds the configured store: there is
// nothing to reload.
var ErrNotRunning = errors.New("alertd is not running")

// ReloadRefused is the running alertd's answer to a reload it refused:
// every problem, as FILE:LINE:COL: message lines.
type ReloadRefused struct{ Errors []string }

func (e *ReloadRefused) Error() string { return strings.Join(e.Errors, "\n") }

// RequestReload asks the alertd running on cfg's store to re-read its
// configuration file, over its loopback HTTP API.
func RequestReload(cfg *config.Config) (httpapi.ReloadReport, error) {
	var rep httpapi.ReloadReport
	// The service is found where the file says its API listens, not by
	// its store: a file that moves the store is for the service to refuse.
	base, err := apiBase(cfg)
	if err != nil {
		return rep, err
	}
	req, err := http.NewRequest(http.MethodPost, base+"/api/v1/reload", nil)
	if err != nil {
		return rep, err
	}
	req.Header.Set(httpapi.AdminHeader, "1")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return rep, fmt.Errorf("%w at %s (http.listen), or it does not answer: %v", ErrNotRunning, base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return rep, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return rep, json.Unmarshal(data, &rep)
	case http.StatusUnprocessableEntity:
		if err := json.Unmarshal(data, &rep); err != nil {
			return rep, err
		}
		return rep, &ReloadRefused{Errors: rep.Errors}
	}
	return rep, fmt.Errorf("alertd answered %s: %s", resp.Status, strings.TrimSpace(string(data)))
}
