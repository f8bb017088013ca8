package mqtttest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// StartTLS runs a broker whose listener speaks MQTT over TLS only, with a
// throw-away certificate for 127.0.0.1 and localhost (its PEM in CAFile).
func StartTLS(t testing.TB) *Mosquitto {
	t.Helper()
	m := &Mosquitto{t: t, dir: t.TempDir(), port: freePort(t)}
	cert, key := m.selfSigned()
	m.CAFile = cert
	m.tls = "certfile " + cert + "\nkeyfile " + key + "\n"
	m.start()
	t.Cleanup(m.Stop)
	return m
}

// TLSURL is ssl://host:port.
func (m *Mosquitto) TLSURL() string { return "ssl://" + m.Addr() }

// selfSigned writes a certificate and its key as PEM files.
func (m *Mosquitto) selfSigned() (certFile, keyFile string) {
	t := m.t
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "mqtttest"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(m.dir, "broker.crt"), filepath.Join(m.dir, "broker.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
