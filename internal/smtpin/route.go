package smtpin

import (
	"fmt"
	"strings"
)

// route is where a recipient goes.
type route int

const (
	routeDenied route = iota // neither alertd nor relay_to: 550
	routeSelf                // alertd itself: an event, never relayed
	routeRelay               // relay_to: upstream, and an event
)

// relayTo is the compiled relay_to list: whole addresses and domains, in
// lower case.
type relayTo struct {
	addrs   map[string]bool
	domains map[string]bool
}

func compileRelayTo(list []string) (relayTo, error) {
	r := relayTo{addrs: map[string]bool{}, domains: map[string]bool{}}
	for i, e := range list {
		e = strings.ToLower(strings.TrimSpace(e))
		local, domain, ok := splitAddr(e)
		if !ok || !validHostname(domain) || strings.ContainsAny(local, " <>,;") {
			return r, &ConfigError{fmt.Sprintf("relay_to[%d]", i),
				fmt.Errorf("%q is neither an address (ops@example.org) nor a domain (@example.org)", list[i])}
		}
		if local == "" {
			r.domains[domain] = true
		} else {
			r.addrs[e] = true
		}
	}
	return r, nil
}

// splitAddr splits at the last '@', so a quoted local part holding an '@'
// cannot pick the domain.
func splitAddr(a string) (local, domain string, ok bool) {
	i := strings.LastIndexByte(a, '@')
	if i < 0 {
		return "", "", false
	}
	return a[:i], a[i+1:], true
}

// routeOf decides where rcpt goes. "postmaster" without a domain is
// alertd itself, as RFC 5321 §4.5.1 asks every server to accept it.
func routeOf(rcpt, hostname string, r relayTo) route {
	rcpt = strings.ToLower(rcpt)
	local, domain, ok := splitAddr(rcpt)
	switch {
	case !ok:
		if rcpt == "postmaster" {
			return routeSelf
		}
		return routeDenied
	case local == "":
		return routeDenied
	case strings.TrimSuffix(domain, ".") == hostname:
		return routeSelf
	case r.addrs[rcpt] || r.domains[domain]:
		return routeRelay
	}
	return routeDenied
}
