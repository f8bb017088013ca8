package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alertd/alertd/internal/app"
	"github.com/alertd/alertd/internal/cluster"
	"github.com/alertd/alertd/internal/config"
	"github.com/alertd/alertd/internal/httpapi"
)

const clusterUsage = `usage: alertd cluster status -config FILE [-json] [-timeout 10s]

The alertd instances sharing the NATS JetStream cluster of store.nats
(store.backend: nats): the live instances, which one owns each partition
and under which term, each partition's lag (readings stored and not yet
delivered, plus delivered and not yet acknowledged), and how many
readings the ingest stream holds. It reads NATS directly, so it works
from any machine with the configuration, whether an alertd runs there or
not. Exit 1 when NATS cannot be reached or no alertd has run on it yet.
-json prints the same as JSON.
`

func cmdCluster(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "status" {
		if len(args) > 0 && args[0] != "-h" && args[0] != "-help" && args[0] != "--help" {
			fmt.Fprintf(stderr, "alertd cluster: unknown action %q\n\n", args[0])
		}
		fmt.Fprint(stderr, clusterUsage)
		return 2
	}
	fs := newFlags("cluster status", stderr)
	path := fs.String("config", "", "configuration file (YAML)")
	asJSON := fs.Bool("json", false, "print the status as JSON")
	timeout := fs.Duration("timeout", 10*time.Second, "give up on NATS after this long")
	switch pos, code := parseInterleaved(fs, args[1:]); {
	case code >= 0:
		return code
	case len(pos) > 0 || *path == "" || *timeout <= 0:
		fmt.Fprint(stderr, clusterUsage)
		return 2
	}
	cfg, err := checkConfig(*path)
	if err != nil {
		return reportConfigError(err, stderr)
	}
	n := cfg.Store.NATS
	if cfg.Store.Backend != config.BackendNATS || n == nil {
		fmt.Fprintf(stderr, "alertd cluster status: %s has store.backend: %s; a cluster needs store.backend: nats and store.nats\n", cfg.File, cfg.Store.Backend)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	st, err := readClusterStatus(ctx, n)
	if err != nil {
		fmt.Fprintln(stderr, "alertd cluster status:", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
		return 0
	}
	printCluster(stdout, n, st, time.Now())
	return 0
}

func readClusterStatus(ctx context.Context, n *config.NATSStore) (cluster.Status, error) {
	tlsCfg, err := app.NATSTLS(n)
	if err != nil {
		return cluster.Status{}, err // checkConfig built it already: only a file changed since
	}
	host, _ := os.Hostname()
	nc, err := cluster.Connect(ctx, n.URLs, n.CredentialsFile, tlsCfg, "alertd cluster status on "+host)
	if err != nil {
		return cluster.Status{}, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return cluster.Status{}, fmt.Errorf("JetStream: %w", err)
	}
	st, err := cluster.ReadStatus(ctx, js, n.Prefix)
	if errors.Is(err, context.DeadlineExceeded) {
		return st, fmt.Errorf("%w (is JetStream enabled on %s?)", err, strings.Join(nc.Servers(), ", "))
	}
	return st, err
}

func printCluster(w io.Writer, n *config.NATSStore, st cluster.Status, now time.Time) {
	owned, lag := 0, uint64(0)
	for _, p := range st.Partitions {
		if p.Owner != "" {
			owned++
		}
		lag += p.Pending + uint64(p.AckPending)
	}
	fmt.Fprintf(w, "cluster %s on %s: %s, %d of %d partitions owned, lag %d; stream %s holds %d readings\n",
		cell(n.Prefix, 40), cell(strings.Join(n.URLs, ", "), 200), plural(len(st.Members), "instance", "instances"),
		owned, len(st.Partitions), lag, cell(st.Stream, 60), st.Messages)
	if len(st.Partitions) != n.Partitions {
		fmt.Fprintf(w, "note: the stream has %d partitions, store.nats.partitions says %d: an alertd with this file would refuse to start\n",
			len(st.Partitions), n.Partitions)
	}
	if len(st.Members) == 0 {
		fmt.Fprintln(w, "\nno instance alive")
	} else {
		fmt.Fprintln(w, "\nInstances:")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "INSTANCE\tUP\tPARTITIONS")
		for _, m := range st.Members {
			var mine []string
			for _, p := range st.Partitions {
				if p.Owner == m {
					mine = append(mine, fmt.Sprint(p.Partition))
				}
			}
			up := "-"
			if t := st.Started[m]; !t.IsZero() {
				up = httpapi.Human(now.Sub(t))
			}
			fmt.Fprintf(tw, "%s\t%s\t%d (%s)\n", cell(m, 60), up, len(mine), strings.Join(mine, " "))
		}
		tw.Flush()
	}
	fmt.Fprintln(w, "\nPartitions:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PARTITION\tOWNER\tTERM\tPENDING\tACK PENDING")
	for _, p := range st.Partitions {
		owner, term := "(none)", "-"
		if p.Owner != "" {
			owner, term = cell(p.Owner, 60), fmt.Sprint(p.Term)
			if !slices.Contains(st.Members, p.Owner) {
				owner += " (gone; the lease runs out)"
			}
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\n", p.Partition, owner, term, p.Pending, p.AckPending)
	}
	tw.Flush()
}

// checkConfig is app.Check, plus loading store.nats.tls's files the way
// app.Check loads mqtt.tls's: a missing CA or key is reported at its key.
func checkConfig(path string) (*config.Config, error) {
	cfg, err := app.Check(path)
	if err != nil || cfg.Store.NATS == nil || cfg.Store.NATS.TLS == nil {
		return cfg, err
	}
	if _, err := app.NATSTLS(cfg.Store.NATS); err != nil {
		t := cfg.Store.NATS.TLS
		key := "ca_file"
		if t.CAFile == "" || strings.HasPrefix(err.Error(), "cert_file") {
			key = "cert_file"
		}
		var errs config.Errors
		errs.Add(cfg.File, t.Pos.At(key), "store.nats.tls: %v", err)
		return nil, errs
	}
	return cfg, nil
}

// clusterSummary is check's line for store.backend: nats, where there is
// no embedded broker and no store file.
func clusterSummary(cfg *config.Config) string {
	n := cfg.Store.NATS
	mail := "mail as .eml files in " + cfg.Store.Spool
	if s := cfg.SMTP; s != nil {
		auth := "no auth"
		if s.Username != "" && s.Auth != "none" {
			auth = fmt.Sprintf("auth %s as %s", s.Auth, s.Username)
		}
		mail = fmt.Sprintf("mail via %s:%d (%s, %s)", s.Host, s.Port, s.Security, auth)
	}
	instance := n.Instance
	if instance == "" {
		instance = "host-pid at start"
	}
	return fmt.Sprintf("%s: ok: %d rule(s), readings and state on NATS %s (prefix %s, %d partitions, %d replicas, lease %s, instance %s), %s",
		cfg.File, len(cfg.Rules), strings.Join(n.URLs, ", "), n.Prefix, n.Partitions, n.Replicas, n.LeaseTTL, instance, mail)
}
