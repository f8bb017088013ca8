package smtptest

import (
	"errors"
	"io"
	"slices"
	"strings"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// errAuthRequired is what MAIL gets before AUTH on a server with users,
// as Postfix and Gmail answer.
var errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}

// newSession runs at EHLO (go-smtp's Backend.NewSession).
func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	_, tlsNow := c.TLSConnectionState()
	afterStartTLS := s.opts.TLS == StartTLS && tlsNow
	s.mu.Lock()
	if !afterStartTLS {
		s.conns++
	}
	s.cmds = append(s.cmds, "EHLO "+c.Hostname())
	s.mu.Unlock()
	return &session{s: s, conn: c, tlsAtStart: tlsNow}, nil
}

type session struct {
	s          *Server
	conn       *smtp.Conn
	tlsAtStart bool
	user       string
	from       string
	to         []string
	afterData  bool // the next Reset is go-smtp's own, after DATA
}

var _ smtp.AuthSession = (*session)(nil)

func (se *session) AuthMechanisms() []string {
	if len(se.s.opts.Users) == 0 && se.s.opts.Token == nil {
		return nil
	}
	return se.s.opts.Mechanisms
}

func (se *session) Auth(mech string) (sasl.Server, error) {
	if !slices.Contains(se.AuthMechanisms(), mech) {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	check := func(user, pass string) error {
		se.s.record("AUTH " + mech + " " + user)
		if err := se.s.scripted("AUTH"); err != nil {
			return err
		}
		if want, ok := se.s.opts.Users[user]; !ok || want != pass {
			return smtp.ErrAuthFailed
		}
		se.user = user
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, user, pass string) error {
			if identity != "" && identity != user {
				return smtp.ErrAuthFailed
			}
			return check(user, pass)
		}), nil
	case sasl.Login:
		return &loginServer{prompts: se.s.opts.LoginPrompts, check: check}, nil
	case XOAuth2, sasl.OAuthBearer:
		return &tokenServer{mech: mech, se: se}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (se *session) Mail(from string, opts *smtp.MailOptions) error {
	cmd := "MAIL <" + from + ">"
	if se.s.opts.DSN && opts != nil {
		if opts.Return != "" {
			cmd += " RET=" + string(opts.Return)
		}
		if opts.EnvelopeID != "" {
			cmd += " ENVID=" + opts.EnvelopeID
		}
	}
	se.s.record(cmd)
	if (len(se.s.opts.Users) > 0 || se.s.opts.Token != nil) && se.user == "" {
		return errAuthRequired
	}
	if err := se.s.scripted("MAIL"); err != nil {
		return err
	}
	// go-smtp accepts a nested MAIL and keeps the earlier recipients; a
	// fresh MAIL starts a fresh envelope here.
	se.from, se.to = from, nil
	return nil
}

func (se *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	cmd := "RCPT <" + to + ">"
	if se.s.opts.DSN && opts != nil && len(opts.Notify) > 0 {
		n := make([]string, len(opts.Notify))
		for i, v := range opts.Notify {
			n[i] = string(v)
		}
		cmd += " NOTIFY=" + strings.Join(n, ",")
	}
	se.s.record(cmd)
	if err := se.s.scriptedRcpt(to); err != nil {
		return err
	}
	se.to = append(se.to, to)
	return nil
}

func (se *session) Data(r io.Reader) error {
	se.s.record("DATA")
	se.afterData = true
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m := parse(data)
	m.From, m.To, m.AuthUser = se.from, slices.Clone(se.to), se.user
	se.s.delayData()
	if held, err := se.s.waitHold(m); held {
		if err == nil {
			se.s.accept(m)
		}
		return err
	}
	if err := se.s.scripted("DATA"); err != nil {
		return err
	}
	se.s.accept(m)
	return nil
}

func (se *session) Reset() {
	if se.afterData {
		se.afterData = false
	} else {
		se.s.record("RSET")
	}
	se.from, se.to = "", nil
}

func (se *session) Logout() error {
	// At STARTTLS go-smtp swaps in the TLS connection, then ends the
	// plaintext session; a new one begins at the next EHLO.
	if _, tlsNow := se.conn.TLSConnectionState(); tlsNow && !se.tlsAtStart {
		se.s.record("STARTTLS")
	} else {
		se.s.record("LOGOUT")
	}
	return nil
}

// loginServer is AUTH LOGIN with configurable prompts (go-sasl has no
// LOGIN server). It accepts the user name as an initial response too
// ("AUTH LOGIN dXNlcg==", as go-sasl's client sends).
type loginServer struct {
	prompts [2]string
	check   func(user, pass string) error
	user    string
	step    int
}

func (l *loginServer) Next(resp []byte) (challenge []byte, done bool, err error) {
	switch l.step {
	case 0:
		l.step = 1
		if resp == nil {
			return []byte(l.prompts[0]), false, nil
		}
		fallthrough
	case 1:
		l.user = string(resp)
		l.step = 2
		return []byte(l.prompts[1]), false, nil
	case 2:
		l.step = 3
		return nil, true, l.check(l.user, string(resp))
	}
	return nil, true, errors.New("LOGIN exchange is over")
}
