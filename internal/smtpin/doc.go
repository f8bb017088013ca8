// Package smtpin is alertd's SMTP ingress: a listener for devices that can
// only "send mail to a server on port 25" (Arduinos, ESP32s, shell scripts
// on a Raspberry Pi). It owns the SMTP conversation with those devices and
// nothing after it: every mail it accepts is handed, as one *Mail, to the
// Sink the wiring provides, and the device hears 250 only once the Sink
// has returned, that is after the mail is committed.
//
// What a mail may ask for, and the invariants that keep alertd from ever
// being an open relay:
//
//   - Only clients inside Options.Networks get a session; everyone else
//     hears "554 5.7.1" in place of the greeting.
//   - When Options.Users is set, MAIL needs a successful AUTH first (530).
//   - A recipient is accepted only if it is alertd itself (any local part
//     at Options.Hostname: the mail becomes an event and is never relayed)
//     or matches Options.RelayTo (the mail is relayed upstream and is an
//     event too). Any other recipient gets "550 5.7.1 relaying denied",
//     and the rest of the mail goes on.
//   - The relayed copy is sent by alertd as Options.From; the device's From
//     is kept as Reply-To and X-Original-From, a Received trace header is
//     prepended, and header lines are rebuilt so that a stray CR or LF
//     cannot start a header of its own.
//
// Every refusal is logged once, with the client's address and a reason,
// and counted by Result.
//
// Specifications implemented, with go-smtp doing the framing:
//   - RFC 5321 (SMTP): HELO and EHLO, a 554 greeting for refused clients
//     (§3.1), the Received trace (§4.4), the minimum limits (§4.5.3).
//   - RFC 1870 (SIZE): Options.MaxMessageBytes is advertised and enforced.
//   - RFC 4954 (SMTP AUTH), RFC 4616 (PLAIN, where an authorization
//     identity other than the user is refused), and the LOGIN mechanism of
//     draft-murchison-sasl-login-00, with the prompts "Username:" and
//     "Password:" that devices expect.
//   - RFC 3207 (STARTTLS), when Options.TLS is set; never required.
//   - RFC 3848 transmission types (ESMTPA, ESMTPS, ESMTPSA) in Received.
package smtpin
