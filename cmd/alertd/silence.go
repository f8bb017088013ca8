package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/alertd/alertd/internal/app"
	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/silence"
)

const silenceUsage = `usage:
  alertd silence add    -config FILE -rule NAME [-series TOPIC] -for 2h [-comment TEXT]
  alertd silence list   -config FILE
  alertd silence remove -config FILE ID

A silence holds back the mails of a rule (on one topic, or a topic filter,
with -series) until it expires; the alerts keep their state, so a first
mail still due when it ends goes out then. Works whether alertd is stopped
or running (through its HTTP API on http.listen). With store.backend: nats
it talks to NATS: every instance applies the change at once.
`

func cmdSilence(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, silenceUsage)
		return 2
	}
	action := args[0]
	if action != "add" && action != "list" && action != "remove" {
		fmt.Fprintf(stderr, "alertd silence: unknown action %q\n\n%s", action, silenceUsage)
		return 2
	}
	fs := newFlags("silence "+action, stderr)
	path := fs.String("config", "", "configuration file (YAML)")
	rule := fs.String("rule", "", "rule to silence")
	series := fs.String("series", "", "topic or topic filter (default: every series of the rule)")
	forText := fs.String("for", "", "how long: 30m, 2h, 1d")
	comment := fs.String("comment", "", "why, for whoever reads silence list")
	pos, code := parseInterleaved(fs, args[1:])
	if code >= 0 {
		return code
	}
	if *path == "" {
		fmt.Fprintf(stderr, "alertd silence %s: -config FILE is required\n", action)
		return 2
	}
	var id uint64
	var dur config.Duration
	switch action {
	case "add":
		var err error
		if dur, err = config.ParseDuration(*forText); err != nil || dur.D() <= 0 || *rule == "" || len(pos) > 0 {
			fmt.Fprintf(stderr, "alertd silence add: -rule NAME and a positive -for DURATION are required\n\n%s", silenceUsage)
			return 2
		}
	case "remove":
		var err error
		if len(pos) != 1 {
			fmt.Fprint(stderr, silenceUsage)
			return 2
		}
		if id, err = strconv.ParseUint(pos[0], 10, 64); err != nil {
			fmt.Fprintf(stderr, "alertd silence remove: %q is not a silence ID (see alertd silence list)\n", pos[0])
			return 2
		}
	case "list":
		if len(pos) > 0 {
			fmt.Fprint(stderr, silenceUsage)
			return 2
		}
	}
	cfg, err := app.Check(*path)
	if err != nil {
		return reportConfigError(err, stderr)
	}
	ss, via, err := app.OpenSilences(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "alertd silence:", err)
		return 1
	}
	defer ss.Close()
	now := time.Now()
	switch action {
	case "add":
		si, err := ss.Add(silence.Silence{Rule: *rule, Series: *series, Comment: *comment, Expires: now.Add(dur.D())})
		if err != nil {
			fmt.Fprintln(stderr, "alertd silence add:", err)
			return 1
		}
		fmt.Fprintf(stdout, "silence %d: rule %s%s until %s (%s)\n", si.ID, si.Rule, seriesText(si.Series),
			si.Expires.Local().Format("2006-01-02 15:04 MST"), via)
	case "list":
		list := ss.List(now)
		if e, ok := ss.(interface{ Err() error }); ok && e.Err() != nil {
			fmt.Fprintln(stderr, "alertd silence list:", e.Err())
			return 1
		}
		if len(list) == 0 {
			fmt.Fprintln(stdout, "no active silences")
			return 0
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tRULE\tSERIES\tEXPIRES\tCOMMENT")
		for _, si := range list {
			s := si.Series
			if s == "" {
				s = "(all)"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\tin %s\t%s\n", si.ID, si.Rule, s, si.Expires.Sub(now).Round(time.Minute), oneLine(si.Comment, 80))
		}
		_ = tw.Flush()
	case "remove":
		if err := ss.Remove(id); err != nil {
			if errors.Is(err, silence.ErrNotFound) {
				fmt.Fprintf(stderr, "alertd silence remove: no silence %d (see alertd silence list)\n", id)
			} else {
				fmt.Fprintln(stderr, "alertd silence remove:", err)
			}
			return 1
		}
		fmt.Fprintf(stdout, "silence %d removed (%s)\n", id, via)
	}
	return 0
}

func seriesText(s string) string {
	if s == "" {
		return ""
	}
	return " on " + s
}

// parseInterleaved parses flags that may come before or after positional
// arguments, returning the positional ones; code >= 0 means exit with it.
func parseInterleaved(fs *flag.FlagSet, args []string) (pos []string, code int) {
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, 0
			}
			return nil, 2
		}
		if fs.NArg() == 0 {
			return pos, -1
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
