package config

import (
	"strings"
	"testing"
)

func TestIngressNeverAnOpenRelay(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"relay_to missing", "ingress:\n  smtp: {listen: 127.0.0.1:2525}\n", "alertd.yaml:2:3: ingress.relay_to: required"},
		{"the whole Internet without users", "ingress:\n  relay_to: [ops@example.org]\n  smtp: {listen: 0.0.0.0:25, networks: [0.0.0.0/0]}\n",
			"alertd.yaml:3:40: ingress.smtp.networks: a network of the whole Internet (/0) without users would make alertd an open relay"},
		{"bad network", "ingress:\n  relay_to: [ops@example.org]\n  smtp: {listen: 0.0.0.0:25, networks: [192.168.1/24]}\n", "is not a network in CIDR form"},
		{"bad relay_to", "ingress:\n  relay_to: [example.org]\n  http: {listen: 127.0.0.1:9465, tokens: [t0k3n]}\n", `ingress.relay_to: "example.org" is not an address`},
		{"http without tokens", "ingress:\n  relay_to: [\"@example.org\"]\n  http: {listen: 127.0.0.1:9465}\n", "ingress.http.tokens: at least one token is required"},
		{"a user without password", "ingress:\n  relay_to: [ops@example.org]\n  smtp:\n    listen: 127.0.0.1:2525\n    users: [{username: arduino}]\n", "users[0]: password or password_file is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(strings.NewReader(tc.yaml), "alertd.yaml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	cfg, err := Load(strings.NewReader(`ingress:
  relay_to: [ops@example.org, "@example.org"]
  smtp: {listen: 0.0.0.0:25, users: [{username: arduino, password: s3cret}]}
  http: {listen: 127.0.0.1:9465, tokens: [t0k3n]}
`), "alertd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if s := cfg.Ingress.SMTP; strings.Join(s.Networks, ",") != "127.0.0.0/8,::1/128" || s.MaxMessageBytes != 1<<20 || cfg.Ingress.HTTP.MaxBodyBytes != 64<<10 {
		t.Errorf("defaults: networks %v, max_message_bytes %d, max_body_bytes %d", s.Networks, s.MaxMessageBytes, cfg.Ingress.HTTP.MaxBodyBytes)
	}
}

// Two listeners on one address would fail at start with "address already
// in use"; check names the key and its line instead.
func TestListenersNeedTheirOwnAddress(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"device http on the admin port", "http: {listen: 127.0.0.1:9464}\ningress:\n  relay_to: [ops@example.org]\n  http: {listen: 127.0.0.1:9464, tokens: [t0k3n]}\n",
			`alertd.yaml:4:18: ingress.http.listen: "127.0.0.1:9464" and http.listen "127.0.0.1:9464" are the same address`},
		{"wildcard against one host", "http: {listen: 127.0.0.1:2525}\ningress:\n  relay_to: [ops@example.org]\n  smtp: {listen: 0.0.0.0:2525}\n",
			`ingress.smtp.listen: "0.0.0.0:2525" and http.listen`},
		{"smtp and http ingress", "ingress:\n  relay_to: [ops@example.org]\n  smtp: {listen: \":9465\"}\n  http: {listen: 127.0.0.1:9465, tokens: [t0k3n]}\n",
			`ingress.http.listen: "127.0.0.1:9465" and ingress.smtp.listen ":9465"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(strings.NewReader(tc.yaml), "alertd.yaml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	for _, ok := range []string{
		"http: {listen: 127.0.0.1:9464}\ningress:\n  relay_to: [ops@example.org]\n  http: {listen: 127.0.0.2:9464, tokens: [t0k3n]}\n",
		"http: {listen: 127.0.0.1:0}\ningress:\n  relay_to: [ops@example.org]\n  smtp: {listen: 127.0.0.1:0}\n  http: {listen: 127.0.0.1:0, tokens: [t0k3n]}\n",
	} {
		if _, err := Load(strings.NewReader(ok), "alertd.yaml"); err != nil {
			t.Errorf("distinct addresses refused: %v\n%s", err, ok)
		}
	}
}
