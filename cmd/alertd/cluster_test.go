package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alertd/alertd/internal/cluster"
	"github.com/alertd/alertd/internal/cluster/natstest"
)

const credsContent = "-----BEGIN NATS USER JWT-----\nnot-a-real-jwt-Xq7\n------END NATS USER JWT------\n"

// natsConfig writes a clustered configuration for urls and returns its path.
func natsConfig(t *testing.T, urls, prefix, extra string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "alertd.yaml")
	if err := os.WriteFile(path, []byte(`
store:
  backend: nats
  nats:
    urls: [`+urls+`]
    partitions: 4
    replicas: 1
    prefix: `+prefix+`
`+extra+`
defaults: {to: [ops@example.org]}
rules:
  - {name: greenhouse-hot, topic: "sensors/+/telemetry", field: temp, above: 30}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startIngest runs one alertd instance's ingest, which never acknowledges,
// so what is published stays as lag.
func startIngest(t *testing.T, c *natstest.Cluster, id string) (*cluster.Ingest, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	in, err := cluster.New(cluster.Config{JS: js, Instance: id, Filters: []string{"sensors/+/telemetry"}, Partitions: 4, Replicas: 1,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	var handled atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- in.Run(ctx, func(context.Context, cluster.Reading) error { handled.Add(1); return nil })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("the ingest did not stop")
		}
	})
	for deadline := time.Now().Add(20 * time.Second); len(in.Owned()) < 4; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("instance %s owns %v after 20s, want all 4 partitions", id, in.Owned())
		}
	}
	return in, js
}

// alertd cluster status reads the instances, owners, terms and lag from
// NATS itself, as an operator on any machine with the file would.
func TestClusterStatus(t *testing.T) {
	c := natstest.Start(t, 1)
	urls := strings.ReplaceAll(c.URL(), ",", ", ")
	config := natsConfig(t, urls, "alertd", "")

	// Before any alertd ran: no stream, said so.
	r := alertd(t, nil, "cluster", "status", "-config", config)
	if r.code != 1 || !strings.Contains(r.stderr, "no alertd has run on this cluster yet: no stream alertd_ingest") || r.stdout != "" {
		t.Errorf("before any alertd: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	in, js := startIngest(t, c, "node-a")
	for _, dev := range []string{"d1", "d2", "d3"} {
		if _, err := js.Publish(context.Background(), "sensors."+dev+".telemetry", []byte(`{"temp": 31}`)); err != nil {
			t.Fatal(err)
		}
	}

	var st cluster.Status
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		r = alertd(t, nil, "cluster", "status", "-json", "-config", config)
		if r.code != 0 {
			t.Fatalf("cluster status -json: exit %d, %s", r.code, r.stderr)
		}
		st = cluster.Status{}
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("cluster status -json: %v\n%s", err, r.stdout)
		}
		lag := uint64(0)
		for _, p := range st.Partitions {
			lag += p.Pending + uint64(p.AckPending)
		}
		if lag == 3 && len(st.Members) == 1 || time.Now().After(deadline) {
			break
		}
	}
	if len(st.Members) != 1 || st.Members[0] != "node-a" || len(st.Partitions) != 4 || st.Messages != 3 || st.Stream != "alertd_ingest" {
		t.Errorf("cluster status -json: %+v", st)
	}
	for _, p := range st.Partitions {
		if p.Owner != "node-a" || p.Term == 0 {
			t.Errorf("partition %d: owner %q term %d, want node-a with a term", p.Partition, p.Owner, p.Term)
		}
	}
	if got := in.Owned(); len(got) != 4 {
		t.Errorf("the ingest owns %v", got)
	}

	r = alertd(t, nil, "cluster", "status", "-config", config)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("cluster status: exit %d, stderr %q", r.code, r.stderr)
	}
	t.Logf("alertd cluster status:\n%s", r.stdout)
	for _, want := range []string{
		"cluster alertd on " + urls + ": 1 instance, 4 of 4 partitions owned, lag 3; stream alertd_ingest holds 3 readings",
		"INSTANCE  UP", "node-a    ", "4 (0 1 2 3)",
		"PARTITION  OWNER   TERM  PENDING  ACK PENDING",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("cluster status lacks %q:\n%s", want, r.stdout)
		}
	}

	// Another prefix on the same NATS: no alertd of that deployment yet.
	other := natsConfig(t, urls, "staging", "")
	if r := alertd(t, nil, "cluster", "status", "-config", other); r.code != 1 || !strings.Contains(r.stderr, "no stream staging_ingest") {
		t.Errorf("another prefix: exit %d, stderr %q", r.code, r.stderr)
	}
}

// Unreachable NATS: the URL is named, the credentials never shown, exit 1.
func TestClusterStatusUnreachable(t *testing.T) {
	dead := "nats://" + freePort(t)
	dir := t.TempDir()
	creds := filepath.Join(dir, "alertd.creds")
	if err := os.WriteFile(creds, []byte(credsContent), 0o600); err != nil {
		t.Fatal(err)
	}
	config := natsConfig(t, dead, "alertd", "    credentials_file: "+creds)
	start := time.Now()
	r := alertd(t, nil, "cluster", "status", "-config", config, "-timeout", "3s")
	if r.code != 1 || !strings.Contains(r.stderr, "connect to NATS at "+dead) || r.stdout != "" {
		t.Errorf("unreachable NATS: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if strings.Contains(r.stderr, "not-a-real-jwt") {
		t.Errorf("the error shows the credentials: %s", r.stderr)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("gave up after %v", d)
	}
}

// check accepts a clustered file and says where readings and state live,
// not an embedded broker or a store file that will not be used.
func TestCheckClusterFile(t *testing.T) {
	config := natsConfig(t, "nats://nats1.example.org:4222, tls://nats2.example.org:4222", "alertd", "    lease_ttl: 10s")
	r := alertd(t, nil, "check", "-config", config)
	if r.code != 0 || r.stderr != "" || len(lines(r.stdout)) != 1 {
		t.Fatalf("check: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	want := config + ": ok: 1 rule(s), readings and state on NATS nats://nats1.example.org:4222, tls://nats2.example.org:4222 " +
		"(prefix alertd, 4 partitions, 1 replicas, lease 10s, instance host-pid at start), mail as .eml files in "
	if !strings.HasPrefix(r.stdout, want) {
		t.Errorf("check said\n%q\nwant it to start with\n%q", r.stdout, want)
	}
	for _, odd := range []string{"embedded broker", "alertd.db"} {
		if strings.Contains(r.stdout, odd) {
			t.Errorf("check mentions %q for a clustered file: %s", odd, r.stdout)
		}
	}

	bbolt := filepath.Join(t.TempDir(), "alertd.yaml")
	if err := os.WriteFile(bbolt, []byte("defaults: {to: [ops@example.org]}\nrules: [{name: hot, topic: a/b, above: 1}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := alertd(t, nil, "cluster", "status", "-config", bbolt); r.code != 2 || !strings.Contains(r.stderr, "store.backend: bbolt") {
		t.Errorf("cluster status of a single-node file: exit %d, stderr %q", r.code, r.stderr)
	}

	tlsBad := natsConfig(t, "tls://nats1.example.org:4222", "alertd", "    tls: {ca_file: missing-ca.pem}")
	if r := alertd(t, nil, "check", "-config", tlsBad); r.code != 2 || !strings.Contains(r.stderr, ":9:20: store.nats.tls: ca_file: open ") {
		t.Errorf("check with a missing store.nats.tls.ca_file: exit %d, stderr %q", r.code, r.stderr)
	}
}

// The commands that work on a store file refuse a clustered file, which
// has none, instead of making an empty store file nobody reads and
// reporting success. The silences of a cluster are in NATS: the silence
// command goes there, and says so when NATS does not answer.
func TestStoreCommandsRefuseAClusteredFile(t *testing.T) {
	config := natsConfig(t, "nats://127.0.0.1:1", "alertd", "")
	r := alertd(t, nil, "silence", "add", "-config", config, "-rule", "hot", "-for", "2h")
	if r.code != 1 || !strings.Contains(r.stderr, "connect to NATS at nats://127.0.0.1:1: no server answered") {
		t.Errorf("silence add with NATS away: exit %d, stderr %q", r.code, r.stderr)
	}
	for _, args := range [][]string{
		{"outbox", "list", "-config", config},
		{"store", "check", "-config", config},
	} {
		r := alertd(t, nil, args...)
		if r.code == 0 || !strings.Contains(r.stderr, "store.backend: nats") {
			t.Errorf("%v: exit %d, stderr %q; want a refusal naming store.backend: nats", args, r.code, r.stderr)
		}
	}
	if matches, _ := filepath.Glob(filepath.Join(filepath.Dir(config), "*.db")); len(matches) > 0 {
		t.Errorf("a store file was made for a clustered file: %v", matches)
	}
}
