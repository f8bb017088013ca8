// Package natstest starts an in-process NATS JetStream cluster of one or
// three nodes for tests: every node has its own store directory, client,
// route and MQTT listeners on loopback, and can be killed and restarted.
//
// Only _test.go files and the benchmark harness (cmd/alertd-bench, which
// runs a cluster beside alertd's processes through NodeOptions) may import
// this package: it links
// github.com/nats-io/nats-server/v2, which the alertd binary must not carry
// (the single-node path has no NATS dependency at run time, and the binary
// ships to Raspberry Pis where size matters). `go list -deps ./cmd/alertd`
// must not list nats-server.
//
// nats-server's requirements, read from server/mqtt.go
// (validateMQTTOptions) and server/jetstream_cluster.go:
//   - MQTT needs JetStream (sessions, QoS 1 and retained messages live in
//     streams), and in a cluster an explicit, unique server_name.
//   - A JetStream cluster needs a cluster name, routes between all nodes and
//     its own store directory per node; its meta group elects a leader
//     before any stream can be created.
//   - The MQTT streams ($MQTT_msgs, $MQTT_sess, ...) are created on the first
//     MQTT connection with min(3, cluster size) replicas, so that connection
//     needs the meta leader too: wait with WaitReady first.
package natstest

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// readyTimeout bounds the start of a node and the meta leader's election.
// A cold 3-node cluster elects in about a second on loopback; the rest is
// headroom for a loaded CI machine under -race.
const readyTimeout = 60 * time.Second

// Cluster is a set of in-process nats-server nodes routed to each other.
type Cluster struct {
	t     testing.TB
	name  string
	mu    sync.Mutex
	nodes []*Node
}

// Node is one nats-server of a Cluster. Its ports and store directory stay
// the same across Kill and Restart, as a real server's would.
type Node struct {
	Name        string
	ClientPort  int
	ClusterPort int
	MQTTPort    int
	StoreDir    string

	srv *server.Server // nil while killed
}

// Start runs n nodes (1 or 3 are what the tests use) and waits until their
// JetStream is ready. The nodes are shut down when the test ends.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("natstest: %d nodes", n)
	}
	c := &Cluster{t: t, name: "alertd-test"}
	for i := range n {
		c.nodes = append(c.nodes, &Node{
			Name:        fmt.Sprintf("n%d", i+1),
			ClientPort:  freePort(t),
			ClusterPort: freePort(t),
			MQTTPort:    freePort(t),
			StoreDir:    t.TempDir(),
		})
	}
	t.Cleanup(c.Shutdown)
	for i := range c.nodes {
		c.start(i)
	}
	c.WaitReady()
	return c
}

// options builds a node's configuration.
func (c *Cluster) options(nd *Node) *server.Options { return NodeOptions(c.name, c.nodes, nd) }

// NodeOptions is the configuration of node nd of a cluster named name made
// of nodes: JetStream in nd's store directory, MQTT, client and route
// listeners on loopback; routes name every node (a server recognises and
// drops the route to itself). One node is a cluster of none.
func NodeOptions(name string, nodes []*Node, nd *Node) *server.Options {
	o := &server.Options{
		ServerName:             nd.Name,
		Host:                   "127.0.0.1",
		Port:                   nd.ClientPort,
		NoLog:                  true,
		NoSigs:                 true,
		JetStream:              true,
		StoreDir:               nd.StoreDir,
		JetStreamMaxMemory:     64 << 20,
		JetStreamMaxStore:      1 << 30,
		DisableJetStreamBanner: true,
	}
	o.MQTT.Host = "127.0.0.1"
	o.MQTT.Port = nd.MQTTPort
	if len(nodes) > 1 {
		o.Cluster.Name = name
		o.Cluster.Host = "127.0.0.1"
		o.Cluster.Port = nd.ClusterPort
		for _, peer := range nodes {
			o.Routes = append(o.Routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", peer.ClusterPort)})
		}
	}
	return o
}

func (c *Cluster) start(i int) {
	c.t.Helper()
	c.mu.Lock()
	nd := c.nodes[i]
	c.mu.Unlock()
	s, err := server.NewServer(c.options(nd))
	if err != nil {
		c.t.Fatalf("natstest: configure %s: %v", nd.Name, err)
	}
	s.Start()
	if !s.ReadyForConnections(readyTimeout) {
		s.Shutdown()
		c.t.Fatalf("natstest: %s not ready for connections after %v", nd.Name, readyTimeout)
	}
	c.mu.Lock()
	nd.srv = s
	c.mu.Unlock()
}

// Kill shuts node i down without lame-duck mode: its Raft groups do not
// hand their leadership over, so the survivors elect new leaders after
// their election timeout (4–9 s in nats-server), as after a crash.
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	s := c.nodes[i].srv
	c.nodes[i].srv = nil
	c.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Restart starts a killed node i again on its ports and store directory.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.start(i)
}

// Shutdown stops every node; it is idempotent.
func (c *Cluster) Shutdown() {
	for i := range c.nodes {
		c.Kill(i)
	}
}

// Server is node i's nats-server, nil while it is killed.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].srv
}

// Node returns node i's description.
func (c *Cluster) Node(i int) Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return *c.nodes[i]
}

// Index is the position of the node called name, or -1.
func (c *Cluster) Index(name string) int {
	for i, nd := range c.nodes {
		if nd.Name == name {
			return i
		}
	}
	return -1
}

// URL is the NATS client URL list of every node, killed ones included, as
// an operator would configure it: "nats://127.0.0.1:1,nats://127.0.0.1:2".
func (c *Cluster) URL() string {
	var urls []string
	for _, nd := range c.nodes {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", nd.ClientPort))
	}
	return strings.Join(urls, ",")
}

// MQTTURL is node i's MQTT listener as a paho broker URL.
func (c *Cluster) MQTTURL(i int) string {
	return fmt.Sprintf("tcp://127.0.0.1:%d", c.nodes[i].MQTTPort)
}

// WaitReady waits until the JetStream meta group has a leader, every
// running node is current with it and the leader counts each of them as
// a peer online, so streams and KV buckets (R3 too) can be created
// through any of them.
func (c *Cluster) WaitReady() {
	c.t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for time.Now().Before(deadline) {
		if c.ready() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("natstest: JetStream not ready after %v", readyTimeout)
}

func (c *Cluster) ready() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	var leader *server.Server
	running := 0
	for _, nd := range c.nodes {
		if nd.srv == nil {
			continue
		}
		running++
		if !nd.srv.JetStreamEnabled() {
			return false
		}
		if len(c.nodes) == 1 {
			return true
		}
		if !nd.srv.JetStreamIsCurrent() {
			return false
		}
		if nd.srv.JetStreamIsLeader() {
			leader = nd.srv
		}
	}
	// The leader places replicas only on peers it has heard from: until
	// it has from every running node, an R3 stream is refused with "no
	// suitable peers for placement" (seen once in CI).
	return leader != nil && len(leader.JetStreamClusterPeers()) >= running
}

// WaitHealthy waits until every running node's /healthz is ok: besides
// WaitReady, every stream and consumer replica it hosts has caught up. An
// operator waits for this between the restarts of a rolling upgrade;
// losing another node before it holds is losing a quorum's data.
func (c *Cluster) WaitHealthy() {
	c.t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for time.Now().Before(deadline) {
		if c.ready() && c.healthy() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("natstest: nodes not healthy after %v", readyTimeout)
}

func (c *Cluster) healthy() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, nd := range c.nodes {
		if nd.srv != nil {
			if h := nd.srv.Healthz(&server.HealthzOptions{}); h.Status != "ok" {
				return false
			}
		}
	}
	return true
}

// freePort asks the kernel for a free loopback port. Another process may
// take it before the server binds it; on loopback in a test that is rare
// enough to accept, and it keeps a node's ports stable across restarts.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("natstest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
