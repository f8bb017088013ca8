package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/alertd/alertd/internal/app"
	"github.com/alertd/alertd/internal/oauth"
)

// cmdOAuth is `alertd oauth login -config FILE`: the first refresh token
// for smtp.oauth2, by the device-code flow (a URL and a code to enter on
// any machine) or the loopback flow (a browser on this machine, or one
// reached through ssh -L), written to smtp.oauth2.refresh_token_file.
func cmdOAuth(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "login" {
		fmt.Fprintln(stderr, "usage: alertd oauth login -config FILE")
		return 2
	}
	path, code := configFlag("oauth login", args[1:], stderr)
	if code >= 0 {
		return code
	}
	cfg, err := app.Check(path)
	if err != nil {
		return reportConfigError(err, stderr)
	}
	if cfg.SMTP == nil || cfg.SMTP.OAuth2 == nil {
		fmt.Fprintf(stderr, "alertd oauth login: %s has no smtp.oauth2 section\n", path)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := oauth.Login(ctx, cfg.SMTP.OAuth2, nil, stdout); err != nil {
		fmt.Fprintln(stderr, "alertd oauth login:", err)
		var e *oauth.Error
		if errors.As(err, &e) && e.Hint() != "" {
			fmt.Fprintln(stderr, "  "+e.Hint())
		}
		return 1
	}
	return 0
}
