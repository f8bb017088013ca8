// Package mailer composes alert mail and delivers the outbox.
//
// Composition (compose.go) builds the complete RFC 5322 message once, at
// enqueue time: UTF-8 subject encoded per RFC 2047, UTF-8 body in
// quoted-printable, Date and Message-ID fixed so a retry is the same mail.
// Delivery (deliver.go) drains the outbox through a Transport: SMTP
// submission (smtp.go: STARTTLS or implicit TLS per RFC 8314, AUTH PLAIN
// per RFC 4616 and LOGIN, per-recipient results, RSET after a failed
// transaction as RFC 5321 section 4.1.1.5 allows) or, with no SMTP server
// configured, a spool directory of .eml files (spool.go). The Deliverers
// of the partitions one instance owns can share at most n SMTP sessions
// through a Pool (pool.go). Every failure is classified (errors.go) as
// retry or permanent, keeping the server's words, and explained in plain
// words with what to change (explain.go). A session
// can be set up and ended without sending anything (probe.go, the preflight
// at start) and recorded as a transcript with every AUTH payload redacted
// (transcript.go, for send-test).
//
// The mailer composes from rendered text and never imports the rules.
package mailer
