package smtpin

import (
	"fmt"
	"net/netip"
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

// validMailbox accepts what alertd can pass on unchanged: a dot-atom
// local part (RFC 5321 §4.1.2) and a domain, or, for a sender, an address
// literal such as [192.168.1.5]. go-smtp hands a quoted local part over
// unquoted and lets the domain hold any byte but space and '>', so a
// local part that needed quotes, a control character or 8-bit text would
// reach the upstream RCPT, or a header, as something else.
func validMailbox(a string, literal bool) bool {
	local, domain, ok := splitAddr(a)
	if !ok || local == "" || len(a) > 254 {
		return false
	}
	for i := 0; i < len(local); i++ {
		if c := local[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(".!#$%&'*+-/=?^_`{|}~", c) >= 0) {
			return false
		}
	}
	if inner, ok := strings.CutPrefix(domain, "["); ok && literal {
		inner, ok = strings.CutSuffix(inner, "]")
		_, err := netip.ParseAddr(strings.TrimPrefix(inner, "IPv6:"))
		return ok && err == nil
	}
	return validHostname(strings.ToLower(strings.TrimSuffix(domain, ".")))
}
