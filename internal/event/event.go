// Package event defines what arrived: a topic and a payload from some
// ingress (an MQTT publish, a mail to the SMTP ingress, an HTTP POST). It
// is the only thing the rules engine knows about where readings come from.
package event

import "time"

// Event is one message as it arrived, before any rule looked at it.
type Event struct {
	// Source names the ingress: "mqtt", "smtp" or "http".
	Source string
	// Topic is the concrete MQTT topic, or the equivalent name an ingress
	// gives the message.
	Topic   string
	Payload []byte
	// Received is when alertd got the message (devices rarely have clocks).
	Received time.Time
	// Retained marks a broker's stored last value replayed on subscribe:
	// the reading may be old.
	Retained bool
}
