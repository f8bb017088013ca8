package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// examples are shown by each verb's -h, after its flags.
var examples = map[string]string{
	"run":            "alertd run -config /etc/alertd/alertd.yaml",
	"check":          "alertd check -config alertd.yaml          # FILE:LINE:COL: message per mistake, exit 2",
	"reload":         "alertd reload -config /etc/alertd/alertd.yaml   # or: sudo systemctl reload alertd",
	"health":         "alertd health -config /etc/alertd/alertd.yaml && echo healthy",
	"status":         "alertd status -config /etc/alertd/alertd.yaml\nalertd status -config /etc/alertd/alertd.yaml -json | jq .firing",
	"send-test":      "alertd send-test -config alertd.yaml -to me@example.org",
	"test":           "alertd test -config alertd.yaml -topic sensors/shed/telemetry -payload '{\"temp\": 31.5}'\nalertd test -config alertd.yaml -events readings.txt   # lines: TIME TOPIC PAYLOAD",
	"oauth login":    "alertd oauth login -config /etc/alertd/alertd.yaml",
	"outbox":         "alertd outbox list -config alertd.yaml\nalertd outbox retry -config alertd.yaml 42\nalertd outbox retry -config alertd.yaml -all-dead\nalertd outbox drop -config alertd.yaml 42",
	"silence":        "alertd silence add -config alertd.yaml -rule greenhouse-hot -series sensors/shed/telemetry -for 2h -comment 'door open'\nalertd silence list -config alertd.yaml\nalertd silence remove -config alertd.yaml 3",
	"cluster status": "alertd cluster status -config /etc/alertd/alertd.yaml\nalertd cluster status -config /etc/alertd/alertd.yaml -json | jq '.partitions[] | select(.pending > 0)'",
	"store":          "alertd store check -config alertd.yaml\nalertd store salvage -config alertd.yaml -from alertd.db.corrupt-20261202T031200Z",
}

// newFlags is a verb's flag set; its -h lists the flags, then examples.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("alertd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: alertd %s [flags]\n\nflags:\n", name)
		fs.PrintDefaults()
		verb := name
		if _, ok := examples[verb]; !ok {
			verb, _, _ = strings.Cut(name, " ")
		}
		if ex := examples[verb]; ex != "" {
			fmt.Fprintf(stderr, "\nexamples:\n  %s\n", strings.ReplaceAll(ex, "\n", "\n  "))
		}
	}
	return fs
}
