package cluster

import "testing"

// The conversions must be nats-server's (server/mqtt.go), or a topic alertd
// reports would differ from the one the device published.
func TestFilterToSubject(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"fleet/+/telemetry", "fleet.*.telemetry"},
		{"sensors/#", "sensors.>"},
		{"a.b/c", "a//b.c"},
		{"/a", "/.a"},
		{"a/", "a./"},
		{"a//b", "a./.b"},
		{"plain", "plain"},
	} {
		got, err := filterToSubject(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("filterToSubject(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := filterToSubject("a b"); err == nil {
		t.Error("a filter with a space was accepted; nats-server refuses such topics")
	}
}

func TestSubjectToTopicRoundTrip(t *testing.T) {
	for _, topic := range []string{"fleet/dev1/telemetry", "a.b/c", "/a", "a/", "a//b", "x/./y"} {
		s, err := filterToSubject(topic)
		if err != nil {
			t.Fatal(err)
		}
		if got := subjectToTopic(s); got != topic {
			t.Errorf("topic %q → subject %q → %q", topic, s, got)
		}
	}
}

func TestSplitStored(t *testing.T) {
	n := newNames("alertd")
	p, subj, err := n.splitStored("alertd.in.12.fleet.dev1.telemetry")
	if err != nil || p != 12 || subj != "fleet.dev1.telemetry" {
		t.Fatalf("got %d %q %v", p, subj, err)
	}
	for _, bad := range []string{"other.in.1.a", "alertd.in.x.a", "alertd.in.3"} {
		if _, _, err := n.splitStored(bad); err == nil {
			t.Errorf("splitStored(%q) accepted", bad)
		}
	}
}

// PartitionOf must stay nats-server's FNV-1a: TestMQTTReadingsKeepTheirPartition
// checks it against the stream's own transform.
func TestPartitionOfSpreads(t *testing.T) {
	counts := make([]int, 16)
	for _, topic := range fleetTopics(1600) {
		s, _ := filterToSubject(topic)
		counts[PartitionOf(s, 16)]++
	}
	for p, c := range counts {
		if c < 50 || c > 150 {
			t.Errorf("partition %d got %d of 1600 topics; the hash should spread them about evenly", p, c)
		}
	}
}
