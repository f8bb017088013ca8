package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The reference of the SMTP ingress scenario: Postfix doing alertd's job
// on the same machine — accept over SMTP on a loopback port, queue to
// disk (Postfix fsyncs the queue file before its 250), relay to the same
// upstream sink. A private instance: its own config_directory, queue and
// data directories under the run's temporary directory, its master
// process started by the harness in the foreground (not through
// postfix-script, which takes seconds to check a queue), so nothing of
// the system's Postfix is used or touched.

// postfixDaemons is where Debian installs Postfix's master and daemons.
var postfixDaemons = "/usr/lib/postfix/sbin"

// postfixMissing says why Postfix cannot run here, or "".
func postfixMissing() string {
	if _, err := os.Stat(filepath.Join(postfixDaemons, "master")); err != nil {
		return "Postfix is not installed (apt-get install postfix): " + err.Error()
	}
	if os.Geteuid() != 0 {
		return "Postfix's master must start as root (its daemons drop to the postfix user): run the harness as root"
	}
	if _, err := user.Lookup("postfix"); err != nil {
		return "no postfix user: " + err.Error()
	}
	if _, err := user.LookupGroup("postdrop"); err != nil {
		return "no postdrop group: " + err.Error()
	}
	return ""
}

// postfixRun is one private Postfix instance.
type postfixRun struct {
	dir    string
	addr   string
	cmd    *exec.Cmd
	exited chan struct{}
}

// startPostfix creates a private instance in dir listening on a free
// loopback port, relaying everything from 127.0.0.0/8 to the sink at
// 127.0.0.1:sinkPort, and waits for its greeting.
func startPostfix(dir string, sinkPort int) (*postfixRun, error) {
	if why := postfixMissing(); why != "" {
		return nil, errors.New(why)
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	if err := postfixTree(dir); err != nil {
		return nil, err
	}
	main := fmt.Sprintf(`# A private instance for alertd-bench: loopback only, relays to the sink.
compatibility_level = 3.6
queue_directory = %[1]s/queue
data_directory = %[1]s/data
meta_directory = /etc/postfix
maillog_file_prefixes = %[1]s
maillog_file = %[1]s/maillog
myhostname = postfix.bench.localhost
mydomain = bench.localhost
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:%[2]d
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtp_host_lookup = native
# The clients come from 127.0.0.x addresses no resolver knows; without
# internet a reverse lookup would only time out.
smtpd_peername_lookup = no
default_process_limit = 200
smtpd_client_connection_rate_limit = 0
smtpd_client_connection_count_limit = 0
biff = no
`, dir, sinkPort)
	// One line per service of Debian's master.cf that a relay uses, none
	// chrooted (a chroot would need copies of /etc files in the queue).
	master := addr + ` inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
local unix - n n - - local
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
`
	if err := os.WriteFile(filepath.Join(dir, "main.cf"), []byte(main), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "master.cf"), []byte(master), 0o644); err != nil {
		return nil, err
	}
	p := &postfixRun{dir: dir, addr: addr, exited: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(postfixDaemons, "master"), "-c", dir)
	p.cmd.Env = append(os.Environ(), "MAIL_CONFIG="+dir)
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start Postfix's master: %w", err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if greets(addr) {
			return p, nil
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("Postfix's master exited at start: %s", p.log())
		default:
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("Postfix did not greet on %s within 20 s: %s", addr, p.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// postfixTree creates the queue and data directories with the owners and
// modes postfix-files gives them.
func postfixTree(dir string) error {
	pf, err := user.Lookup("postfix")
	if err != nil {
		return err
	}
	pd, err := user.LookupGroup("postdrop")
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(pf.Uid)
	gid, _ := strconv.Atoi(pd.Gid)
	// The daemons run as postfix once they have changed to the queue:
	// every directory above it must let them through.
	// Only the harness's own directories are opened up, never /tmp itself.
	for d := filepath.Dir(dir); strings.HasPrefix(d, os.TempDir()+"/"); d = filepath.Dir(d) {
		if st, err := os.Stat(d); err == nil && st.Mode().Perm()&0o011 != 0o011 {
			if err := os.Chmod(d, st.Mode().Perm()|0o711); err != nil {
				return err
			}
		}
	}
	mk := func(path string, mode os.FileMode, uid, gid int) error {
		if err := os.MkdirAll(path, mode); err != nil {
			return err
		}
		if err := os.Chown(path, uid, gid); err != nil {
			return err
		}
		return os.Chmod(path, mode)
	}
	if err := mk(dir, 0o755, 0, 0); err != nil {
		return err
	}
	q := filepath.Join(dir, "queue")
	if err := mk(q, 0o755, 0, 0); err != nil {
		return err
	}
	if err := mk(filepath.Join(q, "pid"), 0o755, 0, 0); err != nil {
		return err
	}
	for _, d := range []string{"active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "private", "saved", "trace"} {
		if err := mk(filepath.Join(q, d), 0o700, uid, 0); err != nil {
			return err
		}
	}
	if err := mk(filepath.Join(q, "maildrop"), 0o730, uid, gid); err != nil {
		return err
	}
	if err := mk(filepath.Join(q, "public"), 0o710, uid, gid); err != nil {
		return err
	}
	return mk(filepath.Join(dir, "data"), 0o700, uid, 0)
}

// greets reports whether a 220 greeting comes from addr.
func greets(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "220") {
		return false
	}
	_, _ = c.Write([]byte("QUIT\r\n"))
	return true
}

// log is the end of the instance's maillog.
func (p *postfixRun) log() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "maillog"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// queued counts the mails in the instance's queue directories.
func (p *postfixRun) queued() int {
	n := 0
	for _, d := range []string{"incoming", "active", "deferred", "maildrop", "hold"} {
		_ = filepath.WalkDir(filepath.Join(p.dir, "queue", d), func(_ string, e os.DirEntry, err error) error {
			if err == nil && !e.IsDir() {
				n++
			}
			return nil
		})
	}
	return n
}

// stop ends the master, which ends its daemons.
func (p *postfixRun) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}
