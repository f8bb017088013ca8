package smtpin

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
)

// Read hands go-smtp one whole command line at a time. go-smtp reads
// commands with bufio's ReadLine, which returns a partial line with a nil
// error when the read under it fails: a command cut off by the idle
// timeout would run, and the client would hear its reply instead of the
// 421. Holding a partial line here lets a timeout drop it. Message data,
// BDAT chunks and TLS records pass straight through.
func (c *client) Read(p []byte) (int, error) {
	if c.hangup.Load() {
		return 0, io.EOF
	}
	if !c.plain || c.raw {
		if len(c.held) > 0 {
			n := copy(p, c.held)
			c.held = c.held[n:]
			return n, nil
		}
		n, err := c.Conn.Read(p)
		c.sawErr(err)
		return n, err
	}
	var buf [4096]byte
	for {
		if n, ok := c.takeLine(p); ok {
			return n, nil
		}
		n, err := c.Conn.Read(buf[:])
		c.held = append(c.held, buf[:n]...)
		if err != nil {
			if n, ok := c.takeLine(p); ok {
				return n, nil // the error comes again at the next read
			}
			c.held = nil
			c.sawErr(err)
			return 0, err
		}
	}
}

// takeLine moves the first whole line held into p. A line longer than
// MaxLineLength goes through as it is, for go-smtp to refuse.
func (c *client) takeLine(p []byte) (int, bool) {
	end := bytes.IndexByte(c.held, '\n') + 1
	if end == 0 {
		if len(c.held) <= c.srv.opts.MaxLineLength {
			return 0, false
		}
		end = len(c.held)
	}
	n := copy(p, c.held[:end])
	if n >= 5 && bytes.EqualFold(c.held[:5], []byte("BDAT ")) {
		c.raw = true // its chunk follows, binary, until the reply
	}
	c.held = c.held[n:]
	return n, true
}

func (c *client) sawErr(err error) {
	if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		c.end(Error, "timed out waiting for the client", "421 4.4.2")
	}
}

// Write sees each reply before the client does, so a refusal is logged
// and counted by the time the client can act on it.
func (c *client) Write(p []byte) (int, error) {
	if c.plain {
		c.watch(p)
	}
	return c.Conn.Write(p)
}

// watch splits what go-smtp writes into reply lines.
func (c *client) watch(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if len(c.partial) < 512 {
				c.partial = append(c.partial, p...)
			}
			return
		}
		line := string(bytes.TrimRight(append(c.partial, p[:i]...), "\r"))
		c.partial, p = c.partial[:0], p[i+1:]
		c.replied(line)
	}
}

// replied sees one reply line; only the last line of a reply ("250 ...",
// not "250-...") counts. A refusal nobody logged yet is go-smtp's own.
func (c *client) replied(line string) {
	if len(line) < 4 || line[3] != ' ' {
		return
	}
	code, _ := strconv.Atoi(line[:3])
	switch code {
	case 354:
		c.raw = true // the message follows, until the reply to its dot
		return
	case 220:
		c.greetings++
		c.plain = c.greetings < 2 // after STARTTLS's 220 come TLS records
	}
	c.raw = false
	c.mu.Lock()
	defer c.mu.Unlock()
	if code < 400 || c.accounted || c.ending {
		c.accounted = false
		return
	}
	c.srv.logRefusal(c.log, resultOfReply(line), "refused by the SMTP layer", line)
}

// resultOfReply classifies a reply go-smtp gave by itself.
func resultOfReply(line string) Result {
	switch {
	case line[:3] == "552":
		return TooBig
	case len(line) > 6 && line[5:7] == ".7": // x.7.y: security, i.e. AUTH
		return AuthFailed
	}
	return Error
}
