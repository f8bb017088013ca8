package subscriber

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"syscall"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// failure is why the broker cannot be reached, in plain words, and whether
// it is the configuration's fault (credentials, TLS, a name that does not
// resolve) rather than a broker that is down.
type failure struct {
	why    string
	config bool
}

// explain turns a failed connection attempt into the broker's reason (the
// CONNACK return code, MQTT 3.1.1 section 3.2.2.3) or what went wrong on
// the network or in TLS, with what to check.
func explain(broker string, err error) failure {
	u, _ := url.Parse(broker)
	hostport, host, secure := broker, "", false
	if u != nil {
		hostport, host = u.Host, u.Hostname()
		secure = u.Scheme == "ssl" || u.Scheme == "tls" || u.Scheme == "mqtts" || u.Scheme == "wss" || u.Scheme == "tcps"
	}
	var (
		dnsErr    *net.DNSError
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		record    tls.RecordHeaderError
	)
	switch {
	case errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword):
		return failure{"the broker refused the credentials (bad user name or password); check mqtt.username and mqtt.password", true}
	case errors.Is(err, packets.ErrorRefusedNotAuthorised):
		// What Mosquitto answers a wrong password with.
		return failure{"the broker refused the credentials (not authorized); check mqtt.username and mqtt.password, " +
			"and that the broker lets this user connect", true}
	case errors.Is(err, packets.ErrorRefusedIDRejected):
		return failure{"the broker rejected the client id (identifier rejected); set mqtt.client_id to a short one of letters and digits", true}
	case errors.Is(err, packets.ErrorRefusedServerUnavailable):
		return failure{"the broker answered but is unavailable (server unavailable); see the broker's log", false}
	case errors.Is(err, packets.ErrorRefusedBadProtocolVersion):
		return failure{"the broker accepts neither MQTT 3.1.1 nor 3.1 (unacceptable protocol version)", true}
	case errors.As(err, &dnsErr) && !dnsErr.IsTimeout:
		return failure{fmt.Sprintf("the broker's name %q does not resolve (DNS); check mqtt.broker and this machine's DNS", host), true}
	case errors.Is(err, syscall.ECONNREFUSED):
		return failure{fmt.Sprintf("nothing listens at %s (connection refused); check mqtt.broker and that the broker runs", hostport), false}
	case errors.As(err, &hostErr):
		return failure{fmt.Sprintf("the broker's certificate is not valid for %q; use the name on the certificate in mqtt.broker", host), true}
	case errors.As(err, &unknownCA) || errors.As(err, &invalid) || errors.As(err, &verify):
		return failure{"the broker's certificate is not trusted; for a private CA set mqtt.tls.ca_file", true}
	case errors.As(err, &record):
		return failure{fmt.Sprintf("%s does not speak TLS; use tcp:// for a plain port, or the broker's TLS port (usually 8883)", hostport), true}
	case isTimeout(err):
		return failure{fmt.Sprintf("no answer from the broker at %s (timeout); check mqtt.broker and any firewall between", hostport), false}
	case closedEarly(err) && secure:
		return failure{fmt.Sprintf("the broker closed the connection during the TLS handshake; if %s is a plain port, use tcp://", hostport), true}
	case closedEarly(err):
		return failure{fmt.Sprintf("the broker closed the connection before answering; if %s is a TLS port (usually 8883), use ssl://", hostport), true}
	}
	return failure{"cannot connect to the broker: " + err.Error(), false}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

func closedEarly(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// onNotification follows paho's connection attempts: each failed one
// carries its reason, which is logged when it differs from the last one
// logged (not at every retry, once a second) and shown by Why.
func (s *Subscriber) onNotification(_ mqtt.Client, n mqtt.ConnectionNotification) {
	f, ok := n.(mqtt.ConnectionNotificationFailed)
	if !ok || f.Reason == nil {
		return
	}
	fl := explain(s.opts.Broker, f.Reason)
	s.why.Store(&fl.why)
	s.whyMu.Lock()
	defer s.whyMu.Unlock()
	if fl.why == s.logged {
		return
	}
	s.logged = fl.why
	level := s.log.Warn
	if fl.config {
		level = s.log.Error
	}
	level("mqtt: cannot connect to the broker; retrying every second", "broker", s.opts.Broker, "why", fl.why)
}

// connected clears the reason once a connection is up, and says the
// problem logged before is over.
func (s *Subscriber) connected() {
	s.why.Store(nil)
	s.whyMu.Lock()
	defer s.whyMu.Unlock()
	if s.logged != "" {
		s.log.Info("mqtt: connected to the broker again; the problem above is over", "broker", s.opts.Broker)
		s.logged = ""
	}
}

// Why is why the subscriber is not ready, when a connection attempt said
// so: "" while none has failed since the last connection.
func (s *Subscriber) Why() string {
	if p := s.why.Load(); p != nil && !s.Ready() {
		return *p
	}
	return ""
}
