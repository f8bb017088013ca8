package httpin

import (
	"errors"
	"fmt"
	"net/mail"
	"strings"
)

// relayTo is ingress.relay_to: the only recipients mail from devices may
// go to, whole addresses or whole domains, compared case-insensitively.
// A domain entry covers that domain only, not its subdomains: a device
// allowed "@example.org" cannot mail "x@mail.example.org.attacker.net" nor
// "x@sub.example.org".
type relayTo struct {
	addrs   map[string]bool
	domains map[string]bool
}

func newRelayTo(list []string) (*relayTo, error) {
	r := &relayTo{addrs: map[string]bool{}, domains: map[string]bool{}}
	for i, e := range list {
		if d, ok := strings.CutPrefix(e, "@"); ok {
			if err := checkDomain(d); err != nil {
				return nil, fmt.Errorf("entry %d (%q): %w", i+1, e, err)
			}
			r.domains[strings.ToLower(d)] = true
			continue
		}
		a, err := mail.ParseAddress(e)
		if err != nil {
			return nil, fmt.Errorf("entry %d (%q): not an address or @domain: %w", i+1, e, err)
		}
		r.addrs[strings.ToLower(a.Address)] = true
	}
	return r, nil
}

func checkDomain(d string) error {
	if d == "" || strings.ContainsAny(d, "@ \t\r\n<>,;\"") || strings.HasPrefix(d, ".") || strings.HasSuffix(d, ".") {
		return errors.New("not a domain")
	}
	return nil
}

// allows reports whether addr, a bare address, may receive device mail.
func (r *relayTo) allows(addr string) bool {
	addr = strings.ToLower(addr)
	if r.addrs[addr] {
		return true
	}
	at := strings.LastIndexByte(addr, '@')
	return at >= 0 && r.domains[addr[at+1:]]
}
