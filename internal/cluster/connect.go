package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// DefaultConnectTimeout bounds the first connection to one NATS server when
// the context has no earlier deadline: long enough for a TLS handshake to a
// remote site, short enough that a wrong address is reported while the
// operator still waits for it.
const DefaultConnectTimeout = 5 * time.Second

// reconnectWait paces reconnection attempts once connected: a node's
// restart is noticed within a fraction of LeaseTTL.
const reconnectWait = 250 * time.Millisecond

// ConnectError is a failed first connection to NATS. It names the servers
// tried (without any user information) and wraps nats.go's reason.
type ConnectError struct {
	URLs []string
	Err  error
}

func (e *ConnectError) Error() string {
	why := e.Err.Error()
	if errors.Is(e.Err, nats.ErrNoServers) {
		why = "no server answered (refused or unreachable)"
	}
	return fmt.Sprintf("connect to NATS at %s: %s", strings.Join(e.URLs, ", "), why)
}

func (e *ConnectError) Unwrap() error { return e.Err }

// Connect opens the NATS connection alertd shares between its ingest, state,
// outbox and status: to any of urls, with the user credentials (JWT and
// NKey seed) in credsFile if not empty, with tlsConfig if not nil (a tls://
// or wss:// URL alone gets a verifying default), and name as the client
// name a server's monitoring shows. Once connected it reconnects forever;
// the first connection is attempted once per server, each bounded by ctx's
// deadline or DefaultConnectTimeout, and fails with a *ConnectError.
func Connect(ctx context.Context, urls []string, credsFile string, tlsConfig *tls.Config, name string) (*nats.Conn, error) {
	shown := redactURLs(urls)
	if len(urls) == 0 {
		return nil, &ConnectError{URLs: shown, Err: errors.New("no server URL")}
	}
	timeout := DefaultConnectTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, max(time.Until(d), time.Millisecond))
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.Timeout(timeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
	}
	if credsFile != "" {
		opts = append(opts, nats.UserCredentials(credsFile))
	}
	if tlsConfig != nil {
		opts = append(opts, nats.Secure(tlsConfig))
	}
	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := nats.Connect(strings.Join(urls, ","), opts...)
		done <- result{nc, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, &ConnectError{URLs: shown, Err: r.err}
		}
		return r.nc, nil
	case <-ctx.Done():
		go func() {
			if r := <-done; r.nc != nil {
				r.nc.Close()
			}
		}()
		return nil, &ConnectError{URLs: shown, Err: ctx.Err()}
	}
}

// redactURLs drops any user information, so that an error never shows a
// password or token written into a URL.
func redactURLs(urls []string) []string {
	out := make([]string, len(urls))
	for i, raw := range urls {
		u, err := url.Parse(raw)
		switch {
		case err != nil:
			out[i] = "(an unparsable URL)"
		case u.User != nil:
			u.User = nil
			out[i] = u.String()
		default:
			out[i] = raw
		}
	}
	return out
}
