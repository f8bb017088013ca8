package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/alertd/alertd/internal/adminclient"
	"github.com/alertd/alertd/internal/app"
	"github.com/alertd/alertd/internal/httpapi"
)

const statusUsage = `usage: alertd status -config FILE [-json]

What the status page shows, in the terminal: sources, alerts firing and
pending, mails held back, silences, the outbox and the last reload. It
asks the running alertd over its HTTP API on http.listen; when alertd is
not running it says so, exit 1 (alertd outbox list and alertd silence
list read a stopped store). -json prints the API's JSON as it came.

example:
  alertd status -config /etc/alertd/alertd.yaml
`

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("status", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, statusUsage) }
	path := fs.String("config", "", "configuration file (YAML)")
	asJSON := fs.Bool("json", false, "print the JSON of GET /api/v1/status")
	switch pos, code := parseInterleaved(fs, args); {
	case code >= 0:
		return code
	case len(pos) > 0 || *path == "":
		fmt.Fprint(stderr, statusUsage)
		return 2
	}
	cfg, err := app.Check(*path)
	if err != nil {
		return reportConfigError(err, stderr)
	}
	st, raw, err := adminclient.Status(cfg)
	switch {
	case errors.Is(err, adminclient.ErrNotRunning):
		fmt.Fprintf(stderr, "alertd status: %v\n(while it is stopped, alertd outbox list and alertd silence list read its store)\n", err)
		return 1
	case err != nil:
		fmt.Fprintln(stderr, "alertd status:", err)
		return 1
	case *asJSON:
		_, _ = stdout.Write(raw)
		return 0
	}
	printStatus(stdout, &st)
	return 0
}

func printStatus(w io.Writer, st *httpapi.Status) {
	fmt.Fprintf(w, "alertd on %s at %s: %s\n", cell(st.Host, 60), st.At.Local().Format("2006-01-02 15:04:05 MST"), headline(st))
	var srcs []string
	for _, s := range st.Sources {
		if s.Ready {
			srcs = append(srcs, s.Name+" up")
		} else {
			srcs = append(srcs, s.Name+" down ("+cell(s.Why, 80)+")")
		}
	}
	fmt.Fprintf(w, "sources: %s\n", strings.Join(srcs, ", "))
	if c := st.Cluster; c != nil {
		fmt.Fprintf(w, "cluster: instance %s of %s; owns %d of %d partitions", cell(c.Instance, 60), cell(strings.Join(c.Members, ", "), 200), c.Owned(), len(c.Partitions))
		if n := c.Unowned(); n > 0 {
			fmt.Fprintf(w, ", %d unowned", n)
		}
		if c.Error != "" {
			fmt.Fprintf(w, " (%s)", cell(c.Error, 120))
		}
		fmt.Fprintln(w, "; the alerts and outbox below are its partitions' (alertd cluster status shows them all)")
	}
	printAlerts(w, st, "firing", st.Firing)
	printAlerts(w, st, "pending", st.Pending)
	printHeld(w, st)
	printSilences(w, st)
	printOutbox(w, st)
	c := st.Config
	fmt.Fprintf(w, "\nconfiguration: %s, %d rules, loaded %s (%s ago)", cell(c.File, 200), c.Rules, clock(st.At, c.LoadedAt), httpapi.Human(st.At.Sub(c.LoadedAt)))
	if !c.LastReloadOK {
		fmt.Fprint(w, "; the last reload was refused (alertd check says why)")
	}
	fmt.Fprintln(w)
}

func headline(st *httpapi.Status) string {
	parts := []string{plural(len(st.Firing), "firing", "firing"), plural(len(st.Pending), "pending", "pending")}
	if n := len(st.HeldBack()); n > 0 {
		parts = append(parts, plural(n, "held back", "held back"))
	}
	if st.Outbox.Pending > 0 {
		parts = append(parts, plural(st.Outbox.Pending, "mail waiting", "mails waiting"))
	}
	if st.Outbox.Dead > 0 {
		parts = append(parts, plural(st.Outbox.Dead, "dead letter", "dead letters"))
	}
	return strings.Join(parts, ", ")
}

func printAlerts(w io.Writer, st *httpapi.Status, what string, as []httpapi.StatusAlert) {
	if len(as) == 0 {
		fmt.Fprintf(w, "\nnothing %s\n", what)
		return
	}
	fmt.Fprintf(w, "\n%s:\n", strings.ToUpper(what[:1])+what[1:])
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	last := "MAIL"
	if what == "pending" {
		last = "FIRES"
	}
	fmt.Fprintf(tw, "RULE\tSERIES\tVALUE\tSINCE\tFOR\t%s\n", last)
	for _, a := range as {
		value := cell(a.Value, 40)
		switch {
		case a.Silent:
			value = "silent (silent_for " + a.Threshold + ")"
		case a.Threshold != "":
			value += " (threshold " + cell(a.Threshold, 40) + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", cell(a.Rule, 60), cell(a.Series, 120), value,
			clock(st.At, a.Since), httpapi.Human(st.At.Sub(a.Since)), mailText(st, a))
	}
	_ = tw.Flush()
}

func mailText(st *httpapi.Status, a httpapi.StatusAlert) string {
	switch {
	case a.State == "pending":
		return in(st.At, a.FiresAt) + " (" + clock(st.At, a.FiresAt) + ")"
	case a.Held != "" && a.RetryAt.IsZero():
		return "held: " + a.Held
	case a.Held != "":
		return "held: " + a.Held + " until " + clock(st.At, a.RetryAt)
	case !a.LastMail.IsZero():
		return "sent " + clock(st.At, a.LastMail)
	}
	return "in the rule's summary mail"
}

func printHeld(w io.Writer, st *httpapi.Status) {
	if len(st.Suppressed) == 0 {
		return
	}
	var counts []string
	for _, s := range st.Suppressed {
		counts = append(counts, fmt.Sprintf("%s %d by %s", cell(s.Rule, 60), s.Count, s.Reason))
	}
	fmt.Fprintf(w, "\nheld back since the start: %s\n", strings.Join(counts, ", "))
}

func printSilences(w io.Writer, st *httpapi.Status) {
	if len(st.Silences) == 0 {
		fmt.Fprintln(w, "\nno active silences")
		return
	}
	fmt.Fprintln(w, "\nSilences:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRULE\tSERIES\tEXPIRES\tCOMMENT")
	for _, si := range st.Silences {
		series := si.Series
		if series == "" {
			series = "(all)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s (%s)\t%s\n", si.ID, cell(si.Rule, 60), cell(series, 120),
			in(st.At, si.Expires), clock(st.At, si.Expires), cell(si.Comment, 80))
	}
	_ = tw.Flush()
}

func printOutbox(w io.Writer, st *httpapi.Status) {
	o := st.Outbox
	switch {
	case o.Error != "":
		fmt.Fprintf(w, "\noutbox: could not be read: %s\n", cell(o.Error, 200))
		return
	case o.Pending == 0:
		fmt.Fprintln(w, "\noutbox: no mail waiting")
	default:
		fmt.Fprintf(w, "\noutbox: %s, the oldest for %s", plural(o.Pending, "mail waiting", "mails waiting"), httpapi.Human(st.At.Sub(o.Oldest)))
		if o.Attempts > 0 {
			fmt.Fprintf(w, ", %s", plural(o.Attempts, "attempt", "attempts"))
		}
		if !o.NextAttempt.IsZero() {
			fmt.Fprintf(w, ", next %s", in(st.At, o.NextAttempt))
		}
		fmt.Fprintln(w)
		if o.LastError != "" {
			fmt.Fprintf(w, "  the server said: %s\n", cell(o.LastError, 300))
		}
	}
	if o.Dead > 0 {
		fmt.Fprintf(w, "\nDead letters (%d; alertd outbox retry -all-dead sends them again):\n", o.Dead)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tRULE\tSERIES\tGIVEN UP\tTHE SERVER SAID")
		for _, d := range o.DeadLetters {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", d.ID, cell(d.Rule, 60), cell(d.Series, 120), clock(st.At, d.DeadAt), cell(d.Error, 160))
		}
		_ = tw.Flush()
	}
	if o.Unreadable > 0 {
		fmt.Fprintf(w, "%s kept aside (alertd outbox list)\n", plural(o.Unreadable, "unreadable entry", "unreadable entries"))
	}
}

// cell is s for one table cell in a terminal: on one line, at most max
// characters, and with control characters shown as escapes — a topic or
// a server reply must not move the cursor or recolour the terminal.
func cell(s string, max int) string {
	var b strings.Builder
	for _, r := range strings.Join(strings.Fields(s), " ") {
		if unicode.IsPrint(r) {
			b.WriteRune(r)
		} else {
			b.WriteString(strings.Trim(strconv.QuoteRune(r), "'"))
		}
	}
	return oneLine(b.String(), max)
}

// clock is t in the local zone, the time alone on at's day.
func clock(at, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	t, at = t.Local(), at.Local()
	if t.YearDay() == at.YearDay() && t.Year() == at.Year() {
		return t.Format("15:04:05")
	}
	return t.Format("2006-01-02 15:04")
}

func in(at, t time.Time) string {
	if d := t.Sub(at); d > 0 {
		return "in " + httpapi.Human(d)
	}
	return "now"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}
