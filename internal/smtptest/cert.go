package smtptest

import (
	"crypto/tls"
	"crypto/x509"
	"testing"

	"github.com/alertd/alertd/internal/testcert"
)

// selfSigned makes a throw-away certificate for 127.0.0.1 and localhost
// and writes it as PEM into a temporary directory, for smtp.tls.ca_file.
func selfSigned(t testing.TB) (tls.Certificate, *x509.CertPool, string) {
	t.Helper()
	c := testcert.New(t, t.TempDir(), "smtptest")
	return c.TLS, c.Pool, c.CertFile
}
