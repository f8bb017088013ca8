package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/alertd/alertd/internal/app"
	"github.com/alertd/alertd/internal/outbox"
)

const outboxUsage = `usage:
  alertd outbox list  -config FILE              pending, dead and unreadable mail
  alertd outbox retry -config FILE ID           retry one entry now (dead or pending)
  alertd outbox retry -config FILE -all-dead    retry every dead entry
  alertd outbox drop  -config FILE ID           delete one entry (unreadable ones too)

Works whether alertd is stopped (opens the store) or running (asks it
over its HTTP API on http.listen).
`

// cmdOutbox manages the mail queue.
func cmdOutbox(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, outboxUsage)
		return 2
	}
	action := args[0]
	if action != "list" && action != "retry" && action != "drop" {
		fmt.Fprintf(stderr, "alertd outbox: unknown action %q\n\n%s", action, outboxUsage)
		return 2
	}
	fs := newFlags("outbox "+action, stderr)
	path := fs.String("config", "", "configuration file (YAML)")
	allDead := fs.Bool("all-dead", false, "retry every dead entry")
	// Flags and the ID may come in any order.
	pos, code := parseInterleaved(fs, args[1:])
	if code >= 0 {
		return code
	}
	if *path == "" {
		fmt.Fprintf(stderr, "alertd outbox %s: -config FILE is required\n", action)
		return 2
	}
	var id uint64
	switch {
	case action == "list" && len(pos) == 0:
	case action == "retry" && *allDead && len(pos) == 0:
	case len(pos) == 1 && !*allDead && action != "list":
		var err error
		if id, err = strconv.ParseUint(pos[0], 10, 64); err != nil {
			fmt.Fprintf(stderr, "alertd outbox %s: %q is not an entry ID (see alertd outbox list)\n", action, pos[0])
			return 2
		}
	default:
		fmt.Fprint(stderr, outboxUsage)
		return 2
	}

	cfg, err := app.Check(*path)
	if err != nil {
		return reportConfigError(err, stderr)
	}
	q, via, err := app.OpenQueue(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "alertd outbox:", err)
		return 1
	}
	defer q.Close()
	now := time.Now()
	switch {
	case action == "list":
		pending, dead, err := q.List() // first: it quarantines what it cannot read
		if err != nil {
			fmt.Fprintln(stderr, "alertd outbox:", err)
			return 1
		}
		unreadable, err := q.Unreadable()
		if err != nil {
			fmt.Fprintln(stderr, "alertd outbox:", err)
			return 1
		}
		printEntries(stdout, pending, dead, unreadable, now)
		return 0
	case action == "retry" && *allDead:
		n, err := q.RetryAllDead(now)
		if err != nil {
			fmt.Fprintln(stderr, "alertd outbox:", err)
			return 1
		}
		fmt.Fprintf(stdout, "%d dead entries queued again (%s)\n", n, via)
		return 0
	case action == "retry":
		err = q.Retry(id, now)
	default:
		err = q.Drop(id)
	}
	if errors.Is(err, outbox.ErrNotFound) {
		fmt.Fprintf(stderr, "alertd outbox %s: no entry %d (see alertd outbox list)\n", action, id)
		return 1
	}
	if errors.Is(err, outbox.ErrUnreadable) {
		fmt.Fprintf(stderr, "alertd outbox retry: entry %d could not be read, so it cannot be retried "+
			"(alertd outbox list shows it as unreadable, with the error; alertd outbox drop %d deletes it)\n", id, id)
		return 1
	}
	if err != nil {
		fmt.Fprintln(stderr, "alertd outbox:", err)
		return 1
	}
	verb := map[string]string{"retry": "queued for delivery now", "drop": "dropped"}[action]
	fmt.Fprintf(stdout, "entry %d %s (%s)\n", id, verb, via)
	return 0
}

func printEntries(w io.Writer, pending, dead []*outbox.Entry, unreadable []outbox.Unreadable, now time.Time) {
	switch {
	case len(pending)+len(dead)+len(unreadable) == 0:
		fmt.Fprintln(w, "outbox is empty")
		return
	case len(pending)+len(dead) == 0:
		printUnreadable(w, unreadable)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tRULE\tTO\tATTEMPTS\tNEXT\tSUBJECT\tLAST ERROR")
	row := func(e *outbox.Entry, state, next string) {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", e.ID, state, e.Rule, strings.Join(e.To, ","),
			e.Attempts, next, oneLine(e.Subject, 60), oneLine(e.LastError, 120))
	}
	for _, e := range pending {
		next := "now"
		if d := e.Next.Sub(now); d > 0 {
			next = "in " + d.Round(time.Second).String()
		}
		row(e, "pending", next)
	}
	for _, e := range dead {
		row(e, "dead", "-")
	}
	_ = tw.Flush()
	if len(unreadable) > 0 {
		fmt.Fprintln(w)
		printUnreadable(w, unreadable)
	}
}

// printUnreadable lists the entries that could not be read, in a section
// of their own: they have no rule, recipients or subject to show.
func printUnreadable(w io.Writer, us []outbox.Unreadable) {
	fmt.Fprintf(w, "%d unreadable (kept aside, never sent; alertd outbox drop ID deletes one):\n", len(us))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tFROM\tSIZE\tQUARANTINED\tERROR")
	for _, u := range us {
		fmt.Fprintf(tw, "%d\tunreadable\t%s\t%d B\t%s\t%s\n", u.ID, u.Bucket, u.Size,
			u.At.Local().Format(time.DateTime), oneLine(u.Error, 160))
	}
	_ = tw.Flush()
}

// oneLine keeps a table row on one line whatever a server replied.
func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > max {
		s = string(r[:max-1]) + "…"
	}
	if s == "" {
		s = "-"
	}
	return s
}
