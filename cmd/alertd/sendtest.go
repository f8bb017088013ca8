package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/alertd/alertd/internal/app"
)

// cmdSendTest sends one test mail through the configured path, printing
// the SMTP session as it happens and, last, one line that says what worked
// or what to change. Exit 0 when the server accepted the mail (250), 1
// when not, 2 for a usage or configuration error.
func cmdSendTest(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("send-test", stderr)
	path := fs.String("config", "", "configuration file (YAML)")
	var to []string
	fs.Func("to", "recipient (repeatable; default: defaults.to)", func(s string) error { to = append(to, s); return nil })
	if code := parseFlags(fs, "send-test", args, path, stderr); code >= 0 {
		return code
	}
	cfg, err := app.Check(*path)
	if err != nil {
		return reportConfigError(err, stderr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	verdict, ok := app.SendTest(ctx, cfg, to, stdout)
	fmt.Fprintln(stdout, verdict)
	if !ok {
		return 1
	}
	return 0
}

// parseFlags parses a command's flags, which must include -config: -1 to
// go on, else the exit status.
func parseFlags(fs *flag.FlagSet, name string, args []string, path *string, stderr io.Writer) int {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "alertd %s: unexpected argument %q\n", name, fs.Arg(0))
		return 2
	}
	if *path == "" {
		fmt.Fprintf(stderr, "alertd %s: -config FILE is required (try rules.example.yaml)\n", name)
		return 2
	}
	return -1
}
