package httpin

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/alertd/alertd/internal/event"
)

// Sink is what the listener needs from the rest of alertd. Both calls
// return only after the commit: when they return nil, the event has been
// through the rules (and any mail it caused is in the outbox), or the mail
// is in the outbox. Only then does the device get its 202.
//
// A call that returns an error has committed nothing the device could
// count on: the device is told to retry (503), or to wait (429 for a
// *RateLimitedError). ctx ends when the device hangs up or the commit
// timeout passes.
type Sink interface {
	Event(ctx context.Context, ev *event.Event) (id string, err error)
	Mail(ctx context.Context, m *Mail) (Outcome, error)
}

// Mail is a mail a device asked alertd to send (POST /v1/mail). The
// listener has checked every recipient against relay_to and cleaned the
// subject and text; the Sink gives it the outbox, dedupe and rate limit of
// the SMTP relay.
type Mail struct {
	// Client is the peer's address as the listener saw it (a proxy's, when
	// there is one: forwarded-for headers are not trusted).
	Client netip.Addr
	// To holds bare addresses ("ops@example.org"), each allowed by
	// relay_to, without duplicates.
	To []string
	// Subject has no control characters; Text has LF line ends and no
	// control characters but tabs. Both are valid UTF-8.
	Subject, Text string
}

// Outcome is what became of an accepted mail.
type Outcome struct {
	ID string
	// Duplicate is true when the same mail was queued within the dedupe
	// window, so nothing new was queued. The device still gets a 202: a
	// retry would be held back just the same.
	Duplicate bool
}

// RateLimitedError is the Sink refusing a call because a rate limit holds:
// nothing was committed and the device should try again after RetryAfter.
// The listener answers 429 with a Retry-After header.
type RateLimitedError struct {
	RetryAfter time.Duration
}

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("rate limited: retry after %s", e.RetryAfter)
}

// Results label each answered request (alertd_ingress_http_total{result}).
const (
	ResultAccepted     = "accepted"     // 202
	ResultUnauthorized = "unauthorized" // 401
	ResultForbidden    = "forbidden"    // 403: a recipient outside relay_to
	ResultTooBig       = "too_big"      // 413
	ResultUnsupported  = "unsupported"  // 415
	ResultRateLimited  = "rate_limited" // 429
	ResultBadRequest   = "bad_request"  // 400, 404, 405, 408
	ResultError        = "error"        // 503: the Sink failed
)

// Results lists every result, so a counter can start each at zero.
func Results() []string {
	return []string{
		ResultAccepted, ResultUnauthorized, ResultForbidden, ResultTooBig,
		ResultUnsupported, ResultRateLimited, ResultBadRequest, ResultError,
	}
}
