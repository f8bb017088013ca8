package main

import (
	"fmt"
	"io"
	"time"

	"github.com/alertd/alertd/internal/app"
	"github.com/alertd/alertd/internal/dryrun"
)

// cmdTest shows what the rules would do with readings — which rules
// match, each condition's verdict, the alert's state and the mail that
// would be queued — without a broker, a store or the network. Exit 0, or 2
// for a usage, input or configuration error.
func cmdTest(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("test", stderr)
	path := fs.String("config", "", "configuration file (YAML)")
	topic := fs.String("topic", "", "the topic of the -payload readings")
	var payloads []string
	fs.Func("payload", "a reading's payload, or @FILE (repeat for a sequence)", func(s string) error { payloads = append(payloads, s); return nil })
	at := fs.String("at", "", "when the first reading arrives (2026-05-01T12:00:00Z, \"2026-05-01 12:00\" or 12:00; default now)")
	every := fs.Duration("every", time.Minute, "time between repeated -payload readings")
	events := fs.String("events", "", "a file of readings, one a line: TIME TOPIC PAYLOAD (TIME may be +DURATION after the line before)")
	raw := fs.Bool("raw", false, "print mails as queued (MIME, quoted-printable) rather than decoded")
	if code := parseFlags(fs, "test", args, path, stderr); code >= 0 {
		return code
	}
	start := time.Now()
	if *at != "" {
		t, err := dryrun.ParseTime(*at, start)
		if err != nil {
			return usageError(stderr, "-at: %v", err)
		}
		start = t
	}
	var evs []dryrun.Event
	switch {
	case *events != "" && len(payloads) > 0:
		return usageError(stderr, "give -events FILE or -topic and -payload, not both")
	case *events != "":
		var err error
		if evs, err = dryrun.ReadEvents(*events, start); err != nil {
			return usageError(stderr, "%v", err)
		}
	case *topic == "" || len(payloads) == 0:
		return usageError(stderr, "give -topic T and -payload P (or -events FILE)")
	default:
		for i, p := range payloads {
			data, err := dryrun.Payload(p, ".")
			if err != nil {
				return usageError(stderr, "-payload: %v", err)
			}
			evs = append(evs, dryrun.Event{At: start.Add(time.Duration(i) * *every), Topic: *topic, Payload: data})
		}
	}
	cfg, err := app.Check(*path)
	if err != nil {
		return reportConfigError(err, stderr)
	}
	from := app.SpoolFrom
	if cfg.SMTP != nil {
		from = cfg.SMTP.From
	}
	if err := dryrun.Run(cfg, evs, dryrun.Options{From: from, Footer: app.Footer(cfg), Raw: *raw}, stdout); err != nil {
		return reportConfigError(err, stderr)
	}
	return 0
}

func usageError(stderr io.Writer, format string, args ...any) int {
	fmt.Fprintf(stderr, "alertd test: "+format+"\n", args...)
	return 2
}
