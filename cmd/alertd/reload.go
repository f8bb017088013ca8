package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/alertd/alertd/internal/adminclient"
	"github.com/alertd/alertd/internal/app"
)

// cmdReload asks the running alertd to re-read its configuration file. A
// file with mistakes is refused before anything is sent (the running
// configuration stays in force) and its errors are printed, exit 2, as
// the service itself would refuse it.
func cmdReload(args []string, stdout, stderr io.Writer) int {
	path, code := configFlag("reload", args, stderr)
	if code >= 0 {
		return code
	}
	cfg, err := app.Check(path)
	if err != nil {
		code := reportConfigError(err, stderr)
		fmt.Fprintln(stderr, "alertd reload: refused; the running configuration stays in force")
		return code
	}
	rep, err := adminclient.RequestReload(cfg)
	var refused *adminclient.ReloadRefused
	switch {
	case errors.As(err, &refused):
		for _, e := range refused.Errors {
			fmt.Fprintln(stderr, e)
		}
		fmt.Fprintln(stderr, "alertd reload: refused; the running configuration stays in force")
		return 2
	case err != nil:
		fmt.Fprintln(stderr, "alertd reload:", err)
		return 1
	}
	fmt.Fprintf(stdout, "reloaded: %d rules", rep.Rules)
	for _, part := range []struct {
		what  string
		names []string
	}{{"added", rep.Added}, {"removed", rep.Removed}, {"changed", rep.Changed}} {
		if len(part.names) > 0 {
			fmt.Fprintf(stdout, "; %s %s", part.what, strings.Join(part.names, ", "))
		}
	}
	fmt.Fprintln(stdout)
	return 0
}
