package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alertd/alertd/internal/cluster/natstest"
)

// natsCluster is a three-node JetStream cluster in this process, as the
// cluster scenario's broker and store.
type natsCluster struct {
	nodes []*natstest.Node
	srvs  []*server.Server
}

func freePort() (int, error) {
	addr, err := freeAddr()
	if err != nil {
		return 0, err
	}
	_, port, _ := net.SplitHostPort(addr)
	return strconv.Atoi(port)
}

func startNATS(dir string, n int) (*natsCluster, error) {
	c := &natsCluster{}
	for i := range n {
		nd := &natstest.Node{Name: fmt.Sprintf("n%d", i+1), StoreDir: filepath.Join(dir, fmt.Sprintf("js%d", i+1))}
		for _, p := range []*int{&nd.ClientPort, &nd.ClusterPort, &nd.MQTTPort} {
			var err error
			if *p, err = freePort(); err != nil {
				return nil, err
			}
		}
		c.nodes = append(c.nodes, nd)
	}
	for _, nd := range c.nodes {
		s, err := server.NewServer(natstest.NodeOptions("alertd-bench", c.nodes, nd))
		if err != nil {
			c.stop()
			return nil, err
		}
		s.Start()
		c.srvs = append(c.srvs, s)
		if !s.ReadyForConnections(30 * time.Second) {
			c.stop()
			return nil, fmt.Errorf("nats node %s did not start", nd.Name)
		}
	}
	return c, nil
}

func (c *natsCluster) urls() []string {
	var u []string
	for _, nd := range c.nodes {
		u = append(u, fmt.Sprintf("nats://127.0.0.1:%d", nd.ClientPort))
	}
	return u
}

func (c *natsCluster) mqttURL(i int) string {
	return fmt.Sprintf("tcp://127.0.0.1:%d", c.nodes[i].MQTTPort)
}

func (c *natsCluster) stop() {
	for _, s := range c.srvs {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// cpu is the harness process's CPU time (the cluster runs in it).
func selfCPU() float64 { return cpuOf(os.Getpid()) }

// clusterResult is one run of the cluster ingest: readings published and
// consumed per second over the middle 80 %, and the CPU seconds per 100k
// readings of the consumers and of the harness (nats-server and the
// publisher).
type clusterResult struct {
	offered, took float64
	consumerCPU   float64
	harnessCPU    float64
}

// clusterIngest publishes n readings of devices topics into JetStream at
// full speed and measures how fast the consumers take them: a bare
// JetStream consumer (one pull consumer per partition, JSON parsed, each
// reading acknowledged) when instances is 0, else that many alertd
// processes in store.backend: nats.
func clusterIngest(nc *natsCluster, dir, bin string, n, devices, instances, round int) (res clusterResult, err error) {
	conn, err := nats.Connect(strings.Join(nc.urls(), ","))
	if err != nil {
		return res, err
	}
	defer conn.Close()
	js, err := jetstream.New(conn)
	if err != nil {
		return res, err
	}
	prefix := fmt.Sprintf("b%dr%d", instances, round)
	topic := prefix + "dev"
	defer dropPrefix(nc, prefix)
	var count func() float64
	var cpu func() float64
	var stop func()
	if instances == 0 {
		count, stop, err = bareJetStream(js, prefix, topic)
		cpu = func() float64 { return 0 } // in the harness: counted there
	} else {
		var ps []*alertdProc
		ps, err = startClusterAlertd(bin, dir, nc, prefix, topic, instances, 0)
		stop = func() {
			for _, p := range ps {
				_ = p.stop()
			}
		}
		count = func() float64 {
			t := 0.0
			for _, p := range ps {
				t += p.metric(`alertd_messages_received_total{source="mqtt"}`)
			}
			return t
		}
		cpu = func() float64 {
			t := 0.0
			for _, p := range ps {
				t += cpuOf(p.cmd.Process.Pid)
			}
			return t
		}
		if err == nil {
			_, err = waitOwned(ps, 16)
		}
	}
	if err != nil {
		return res, err
	}
	defer stop()

	payload := []byte(`{"temp": 21.5, "hum": 40}`)
	cpu0, self0 := cpu(), selfCPU()
	start := time.Now()
	pubDone := make(chan time.Duration, 1)
	go func() {
		for i := range n {
			for {
				_, err := js.PublishAsync(fmt.Sprintf("%s.d%05d.telemetry", topic, i%devices), payload)
				if err == nil {
					break
				}
				<-js.PublishAsyncComplete()
			}
		}
		<-js.PublishAsyncComplete()
		pubDone <- time.Since(start)
	}()
	var samples []clusterSample
	deadline := time.Now().Add(120 * time.Second)
	for {
		got := count()
		samples = append(samples, clusterSample{time.Since(start), got})
		if got >= float64(n) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	pub := <-pubDone
	res.offered = float64(n) / pub.Seconds()
	res.took = middleRate(samples, float64(n))
	res.consumerCPU = (cpu() - cpu0) / float64(n) * 1e5
	res.harnessCPU = (selfCPU() - self0) / float64(n) * 1e5
	if got := samples[len(samples)-1].n; got < float64(n) {
		return res, fmt.Errorf("%d instances: %.0f of %d readings consumed in 120 s", instances, got, n)
	}
	return res, nil
}

// dropPrefix deletes every stream (KV buckets are streams too) a run
// under prefix made: the next run starts on a cluster as empty, not one
// carrying every earlier run's Raft groups.
func dropPrefix(nc *natsCluster, prefix string) {
	conn, err := nats.Connect(strings.Join(nc.urls(), ","))
	if err != nil {
		return
	}
	defer conn.Close()
	js, err := jetstream.New(conn)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var names []string
	for name := range js.StreamNames(ctx).Name() {
		if strings.HasPrefix(name, prefix+"_") || strings.HasPrefix(name, "KV_"+prefix+"_") {
			names = append(names, name)
		}
	}
	for _, name := range names {
		_ = js.DeleteStream(ctx, name)
	}
}

// clusterSample is a consumer's count at a time since the start.
type clusterSample struct {
	at time.Duration
	n  float64
}

// middleRate is the rate between the samples that first reach 10 % and
// 90 % of n.
func middleRate(s []clusterSample, n float64) float64 {
	var a, b *clusterSample
	for i := range s {
		if a == nil && s[i].n >= 0.1*n {
			a = &s[i]
		}
		if b == nil && s[i].n >= 0.9*n {
			b = &s[i]
		}
	}
	if a == nil || b == nil || b.at <= a.at {
		return 0
	}
	return (b.n - a.n) / (b.at - a.at).Seconds()
}

// bareJetStream is the reference consumer: the stream alertd creates (its
// topics partitioned into 16 by the same transform), one durable pull
// consumer per partition, each reading's JSON parsed and the reading
// acknowledged.
func bareJetStream(js jetstream.JetStream, prefix, topic string) (count func() float64, stop func(), err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	name := prefix + "_ingest"
	cfg := jetstream.StreamConfig{
		Name: name, Subjects: []string{topic + ".*.telemetry"},
		SubjectTransform: &jetstream.SubjectTransformConfig{Source: ">", Destination: prefix + ".in.{{partition(16)}}.>"},
		Retention:        jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, Replicas: 3,
	}
	for {
		attempt, done := context.WithTimeout(ctx, 2*time.Second)
		_, err = js.CreateStream(attempt, cfg)
		done()
		if err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(200 * time.Millisecond) // the meta leader is being elected
	}
	if err != nil {
		return nil, nil, fmt.Errorf("create stream %s: %w", name, err)
	}
	var n atomic.Int64
	var its []jetstream.MessagesContext
	for p := range 16 {
		c, err := js.CreateOrUpdateConsumer(ctx, name, jetstream.ConsumerConfig{
			Durable: fmt.Sprintf("%s_p%03d", prefix, p), FilterSubject: fmt.Sprintf("%s.in.%d.>", prefix, p),
			AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1024, Replicas: 3,
		})
		if err != nil {
			return nil, nil, err
		}
		it, err := c.Messages(jetstream.PullMaxMessages(128))
		if err != nil {
			return nil, nil, err
		}
		its = append(its, it)
		go func() {
			var v map[string]any
			for {
				m, err := it.Next()
				if err != nil {
					return
				}
				if json.Unmarshal(m.Data(), &v) == nil {
					_ = m.Ack()
					n.Add(1)
				}
			}
		}()
	}
	return func() float64 { return float64(n.Load()) }, func() {
		for _, it := range its {
			it.Stop()
		}
	}, nil
}

// startClusterAlertd starts instances alertd processes sharing the
// cluster under prefix, rules on topic/+/telemetry (ten rules, none
// breached by the stream's readings), mail to smtpPort (0: the spool).
func startClusterAlertd(bin, dir string, nc *natsCluster, prefix, topic string, instances, smtpPort int) ([]*alertdProc, error) {
	var urls []string
	for _, u := range nc.urls() {
		urls = append(urls, fmt.Sprintf("%q", u))
	}
	mail := ""
	if smtpPort != 0 {
		mail = fmt.Sprintf(`smtp: {host: 127.0.0.1, port: %d, security: none, auth: none, from: "alertd <alertd@example.org>"}`+"\n", smtpPort)
	}
	var rules strings.Builder
	for i := range 10 {
		fmt.Fprintf(&rules, "  - {name: r%d, topic: \"%s/+/telemetry\", field: temp, above: %d, subject: \"hot lat{{.Device}}\"}\n", i, topic, 30+i)
	}
	var ps []*alertdProc
	for k := range instances {
		admin, err := freeAddr()
		if err != nil {
			return ps, err
		}
		d := filepath.Join(dir, fmt.Sprintf("%s-%d", prefix, k))
		cfg := fmt.Sprintf(`http: {listen: %q}
log: {level: error}
store:
  path: %q
  backend: nats
  nats: {urls: [%s], prefix: %s, instance: %s-%d, replicas: 3}
%sdefaults: {to: [ops@example.org], cooldown: 0s, rate_limit: 10000/m}
rules:
%s`, admin, filepath.Join(d, "alertd.db"), strings.Join(urls, ", "), prefix, prefix, k, mail, rules.String())
		p, err := startAlertdBin(bin, d, cfg, admin)
		if err != nil {
			return ps, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// waitOwned waits up to a minute until the instances together own n
// partitions, and says how many they own.
func waitOwned(ps []*alertdProc, n int) (int, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		t := 0
		for _, p := range ps {
			t += int(p.metric("alertd_cluster_partitions_owned"))
		}
		if t >= n {
			return t, nil
		}
		if time.Now().After(deadline) {
			return t, fmt.Errorf("%d of %d partitions owned after 60 s", t, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// clusterLatency publishes n breaching readings at rate per second, each
// on its own device topic, at QoS 1 through nats-server's MQTT listener,
// to instances alertd processes, and measures publish → SMTP DATA.
func clusterLatency(nc *natsCluster, dir, bin string, n, rate, instances, breached int) (res latencyResult, err error) {
	ls, port, stopSink, err := startLatencySink()
	if err != nil {
		return res, err
	}
	defer stopSink()
	prefix := fmt.Sprintf("lat%d", time.Now().UnixNano()%1e6)
	ps, err := startClusterAlertd(bin, dir, nc, prefix, "lat", instances, port)
	defer func() {
		for _, p := range ps {
			_ = p.stop()
		}
		dropPrefix(nc, prefix)
	}()
	if err != nil {
		return res, err
	}
	if _, err := waitOwned(ps, 16); err != nil {
		return res, err
	}
	opts := mqtt.NewClientOptions().AddBroker(nc.mqttURL(0)).SetClientID(prefix + "-pub").SetConnectTimeout(10 * time.Second)
	pub := mqtt.NewClient(opts)
	if tok := pub.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		return res, fmt.Errorf("connect to nats-server's MQTT listener: %v", tok.Error())
	}
	defer pub.Disconnect(100)
	sent := make(map[string]time.Time, n)
	var mu sync.Mutex
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	start := time.Now()
	for i := range n {
		<-tick.C
		id := fmt.Sprint(i)
		mu.Lock()
		sent[id] = time.Now()
		mu.Unlock()
		// Rule ri is above 30+i: 30.5 breaches r0 only (one alert, one
		// mail per reading, as the single-node latency scenario), 39.5 all
		// ten.
		pub.Publish(fmt.Sprintf("lat/%s/telemetry", id), 1, false, fmt.Sprintf(`{"temp": %g}`, 29.5+float64(breached)))
	}
	res.offered = float64(n) / time.Since(start).Seconds()
	wait := time.Now().Add(30 * time.Second)
	for time.Now().Before(wait) {
		ls.mu.Lock()
		got := len(ls.seen)
		ls.mu.Unlock()
		if got >= n {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	var lat []time.Duration
	for id, at := range sent {
		if got, ok := ls.seen[id]; ok {
			lat = append(lat, got.Sub(at))
		}
	}
	if len(lat) < n {
		return res, fmt.Errorf("%d of %d alerts arrived", len(lat), n)
	}
	s := summarize(lat)
	res.p50, res.p99 = s.p50, s.p99
	return res, nil
}

// clusterScenarios runs the cluster ingest (a bare JetStream consumer, then
// 1, 2 and 3 alertd instances, alternating within each round) and the
// cluster latency, and returns their tables.
func clusterScenarios(dir, bin string, o options) (string, error) {
	nc, err := startNATS(dir, 3)
	if err != nil {
		return "", err
	}
	defer nc.stop()
	// The latency first, on a fresh cluster: after a dozen ingest runs of
	// 100k readings the servers are still busy with them (a reading's
	// mail took seconds at 1,000 mails/s then, 15 ms before them).
	var lat strings.Builder
	fmt.Fprintf(&lat, "\n| cluster latency, publish (QoS 1, nats-server's MQTT listener) → SMTP DATA accepted of a reading's first mail, %d readings at 100/s, 3 alertd instances | offered alerts/s (mails/s) | p50 | p99 |\n|---|---:|---:|---:|\n", o.alerts)
	for _, breached := range []int{1, 10} {
		var lats []latencyResult
		for round := range o.rounds {
			r, err := clusterLatency(nc, dir, bin, o.alerts, 100, 3, breached)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(os.Stderr, "round %d cluster latency, %d rules breached: offered %.1f readings/s  p50 %v  p99 %v\n", round+1, breached, r.offered, r.p50, r.p99)
			lats = append(lats, r)
		}
		offered := medianOf(lats, func(r latencyResult) float64 { return r.offered })
		fmt.Fprintf(&lat, "| alertd × 3 on JetStream R3, each reading breaching %d of the 10 rules (median of rounds) | %.0f | %.2f ms | %.2f ms |\n",
			breached, offered*float64(breached),
			medianOf(lats, func(r latencyResult) float64 { return msOf(r.p50) }),
			medianOf(lats, func(r latencyResult) float64 { return msOf(r.p99) }))
	}
	n := o.messages / 2
	results := map[int][]clusterResult{}
	for round := range o.rounds {
		for _, k := range []int{0, 1, 2, 3} {
			r, err := clusterIngest(nc, dir, bin, n, o.devices, k, round)
			if err != nil {
				return "", err
			}
			name := "bare JetStream consumer"
			if k > 0 {
				name = fmt.Sprintf("alertd × %d", k)
			}
			fmt.Fprintf(os.Stderr, "round %d cluster/%-24s offered %7.0f msg/s  took %7.0f msg/s  consumers %.2f CPU s/100k  harness (nats-server, publisher) %.2f CPU s/100k\n",
				round+1, name, r.offered, r.took, r.consumerCPU, r.harnessCPU)
			results[k] = append(results[k], r)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| cluster ingest: %d readings over %d device topics, 16 partitions, R3, 3 nats-server nodes in the harness | offered msg/s (JetStream publish, acknowledged) | consumed msg/s, middle 80 %% (median) | ratio to the bare consumer | consumers' CPU s per 100k | harness CPU s per 100k (nats-server ×3, publisher) |\n|---|---:|---:|---:|---:|---:|\n", n, o.devices)
	bare := medianOf(results[0], func(r clusterResult) float64 { return r.took })
	for _, k := range []int{0, 1, 2, 3} {
		name := "bare JetStream consumer (in the harness)"
		if k > 0 {
			name = fmt.Sprintf("alertd × %d (processes)", k)
		}
		took := medianOf(results[k], func(r clusterResult) float64 { return r.took })
		ratio := ""
		if bare > 0 && k > 0 {
			ratio = fmt.Sprintf("%.2f", took/bare)
		}
		fmt.Fprintf(&b, "| %s | %.0f | %.0f | %s | %.2f | %.2f |\n", name,
			medianOf(results[k], func(r clusterResult) float64 { return r.offered }), took, ratio,
			medianOf(results[k], func(r clusterResult) float64 { return r.consumerCPU }),
			medianOf(results[k], func(r clusterResult) float64 { return r.harnessCPU }))
	}
	b.WriteString(lat.String())
	return b.String(), nil
}
