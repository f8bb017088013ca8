package subscriber

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/url"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/net/proxy"
)

// readBuffer is how much of the broker's stream one read takes. paho
// reads each packet's fixed header a byte at a time and then its body,
// straight from the connection: three or four read system calls per
// reading, a fifth of alertd's CPU in a burst. Behind a buffer a burst
// of readings costs one system call per readBuffer bytes.
const readBuffer = 32 << 10

// openConnection opens the broker connection as paho would (the same
// schemes, dialer, proxy from the environment, TLS and websocket
// options) and buffers what is read from it. paho keeps the session,
// reconnects and acknowledgements; only its reads are changed. paho's
// OnConnectAttempt (a TLS config per attempt) is not applied here:
// alertd does not set it.
func openConnection(uri *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
	conn, err := dial(uri, o)
	if err != nil {
		return nil, err
	}
	return &bufferedConn{Conn: conn, r: bufio.NewReaderSize(conn, readBuffer)}, nil
}

func dial(uri *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
	dialer := o.Dialer
	if dialer == nil {
		dialer = &net.Dialer{Timeout: o.ConnectTimeout}
	}
	switch uri.Scheme {
	case "ws", "wss":
		u := *uri
		u.User = nil
		var tlsc *tls.Config
		if uri.Scheme == "wss" {
			tlsc = o.TLSConfig
		}
		return mqtt.NewWebsocket(u.String(), tlsc, o.ConnectTimeout, o.HTTPHeaders, o.WebsocketOptions)
	case "mqtt", "tcp":
		return proxy.FromEnvironmentUsing(dialer).Dial("tcp", uri.Host)
	case "ssl", "tls", "mqtts", "mqtt+ssl", "tcps":
		// Through the environment's proxy (all_proxy or ALL_PROXY, as for
		// tcp://), then TLS with the connect timeout: paho sets its own
		// deadline only once this returns.
		conn, err := proxy.FromEnvironmentUsing(dialer).Dial("tcp", uri.Host)
		if err != nil {
			return nil, err
		}
		cfg := o.TLSConfig
		if cfg == nil {
			cfg = &tls.Config{}
		}
		if cfg.ServerName == "" { // as tls.Dial does
			cfg = cfg.Clone()
			cfg.ServerName = uri.Hostname()
		}
		timeout := o.ConnectTimeout
		if timeout <= 0 {
			timeout = dialer.Timeout
		}
		ctx := context.Background()
		if timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = conn.Close()
			return nil, err
		}
		return tc, nil
	}
	return nil, errors.New("unknown protocol " + uri.Scheme)
}

// bufferedConn is a connection whose reads go through a buffer; writes,
// deadlines and Close are the connection's own.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
