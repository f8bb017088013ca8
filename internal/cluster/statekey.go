package cluster

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

// A partition's state lives under "<prefix>.state.<p>.": one subject per
// key, "<prefix>.state.<p>.<bucket-token>.<key-token>", and the fence,
// "<prefix>.state.<p>.fence". Bucket names and keys are arbitrary bytes
// (an MQTT topic holds '.', '*', '>', spaces, NUL or nothing at all), so
// each becomes a token of '_' followed by its unpadded base64url: that
// alphabet has no '.', no wildcard and no whitespace, and the '_' keeps
// the empty key a non-empty token. A key subject has one token more than
// the fence, so no bucket or key can collide with it.

// maxStateKey bounds len(bucket)+len(key). nats-server refuses a protocol
// line over max_control_line (4096 bytes by default), and a publish line
// carries the subject, a reply inbox and two lengths; 2048 raw bytes make
// at most about 2750 characters of subject with a short prefix.
const maxStateKey = 2048

var tokenEncoding = base64.RawURLEncoding

func stateToken(b []byte) string { return "_" + tokenEncoding.EncodeToString(b) }

func parseStateToken(tok string) ([]byte, error) {
	rest, ok := strings.CutPrefix(tok, "_")
	if !ok {
		return nil, fmt.Errorf("token %q has no '_'", tok)
	}
	return tokenEncoding.DecodeString(rest)
}

// stateStream is the one stream every partition's state lives in.
func (n names) stateStream() string { return n.prefix + "_state" }

// stateSubjects is what the state stream captures.
func (n names) stateSubjects() string { return n.prefix + ".state.>" }

// statePartition filters partition p's keys and fence.
func (n names) statePartition(p int) string { return n.statePrefix(p) + ">" }

func (n names) statePrefix(p int) string { return n.prefix + ".state." + strconv.Itoa(p) + "." }

// stateFence is partition p's fence subject; its value is the owner's term.
func (n names) stateFence(p int) string { return n.statePrefix(p) + "fence" }

// stateKey is the subject of one key of partition p.
func (n names) stateKey(p int, bucket, key []byte) string {
	return n.statePrefix(p) + stateToken(bucket) + "." + stateToken(key)
}

// parseStateKey takes a stored subject of partition p apart; fence reports
// the fence subject, which has no bucket or key.
func (n names) parseStateKey(p int, subject string) (bucket, key []byte, fence bool, err error) {
	rest, ok := strings.CutPrefix(subject, n.statePrefix(p))
	if !ok {
		return nil, nil, false, fmt.Errorf("subject %q is not under %s", subject, n.statePrefix(p))
	}
	if rest == "fence" {
		return nil, nil, true, nil
	}
	bt, kt, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(kt, ".") {
		return nil, nil, false, fmt.Errorf("subject %q: want <bucket>.<key> after the partition", subject)
	}
	if bucket, err = parseStateToken(bt); err != nil {
		return nil, nil, false, fmt.Errorf("subject %q: bucket: %w", subject, err)
	}
	if key, err = parseStateToken(kt); err != nil {
		return nil, nil, false, fmt.Errorf("subject %q: key: %w", subject, err)
	}
	return bucket, key, false, nil
}
