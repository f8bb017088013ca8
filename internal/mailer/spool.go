package mailer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/emersion/go-message/textproto"
)

// Spool is the Transport used when no SMTP server is configured: each mail
// becomes one .eml file, named after its Message-ID so a re-delivery after a
// crash rewrites the same file instead of adding a copy.
type Spool struct {
	Dir string
}

var _ Transport = (*Spool)(nil)

// Send writes msg atomically (temporary file, fsync, rename, fsync of the
// directory): a file in the spool is always a whole mail.
func (s *Spool) Send(_ context.Context, env Envelope, msg []byte) (Outcome, error) {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return Outcome{}, &Error{Kind: KindConfig, Step: "spool", Err: err, Hint: "check store.spool"}
	}
	name := spoolName(msg)
	tmp, err := os.CreateTemp(s.Dir, ".tmp-*")
	if err != nil {
		return Outcome{}, &Error{Kind: KindConfig, Step: "spool", Err: err, Hint: "check store.spool"}
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(msg)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(s.Dir, name))
	}
	if err == nil {
		err = syncDir(s.Dir)
	}
	if err != nil {
		return Outcome{}, &Error{Kind: KindTemporary, Step: "spool", Err: err}
	}
	return Outcome{Accepted: env.To}, nil
}

// Path is where Send writes msg.
func (s *Spool) Path(msg []byte) string { return filepath.Join(s.Dir, spoolName(msg)) }

// Close has nothing to release.
func (s *Spool) Close() error { return nil }

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// spoolName derives a safe file name from the Message-ID header.
func spoolName(msg []byte) string {
	id := ""
	if h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(msg))); err == nil {
		id = strings.Trim(h.Get("Message-Id"), "<> ")
	}
	id = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_', r == '@':
			return r
		}
		return '_'
	}, id)
	if id == "" || len(id) > 200 {
		sum := sha256.Sum256(msg)
		id = fmt.Sprintf("mail-%x", sum[:16])
	}
	return id + ".eml"
}
