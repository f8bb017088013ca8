package smtpin

import (
	"strings"
	"testing"
	"time"
)

func TestBodyText(t *testing.T) {
	cases := []struct{ name, data, want string }{
		{"plain", "Subject: x\r\n\r\nhello\r\nworld", "hello\nworld"},
		{"no header at all", "just a line from a sketch\r\nand another", "just a line from a sketch\nand another"},
		{"LF-only lines", "Subject: x\nContent-Type: text/plain\n\nline one\nline two", "line one\nline two"},
		{"HTML only", "Content-Type: text/html; charset=utf-8\r\n\r\n<html><head><style>p{color:red}</style><title>t</title></head>" +
			"<body><h1>Alarm</h1><p>Temp&eacute;rature &gt; 30&nbsp;C</p><script>x()</script><br>ok</body></html>",
			"Alarm\n\nTempérature > 30\u00a0C\n\nok"},
		{"latin-1 declared, 8bit", "Content-Type: text/plain; charset=ISO-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\nsal\xf3n a 31\xb0C", "salón a 31°C"},
		{"8-bit with no charset", "Subject: x\r\n\r\nca\xf1o", "caño"},
		{"windows-1252 euro, quoted-printable", "Content-Type: text/plain; charset=windows-1252\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n5 =80 =96 ok", "5 € – ok"},
		{"latin-9", "Content-Type: text/plain; charset=iso-8859-15\r\n\r\n\xa4", "€"},
		{"multipart prefers plain", "Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n<b>html</b>\r\n" +
			"--b\r\nContent-Type: text/plain\r\n\r\nplain\r\n--b--\r\n", "plain"},
		{"attachment skipped", "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment\r\n\r\nlog\r\n" +
			"--b\r\nContent-Type: text/html\r\n\r\n<p>see log</p>\r\n--b--\r\n", "see log"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := bodyText(parseMessage([]byte(tc.data)), 8<<10); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestBodyTextIsCapped(t *testing.T) {
	got := bodyText(parseMessage([]byte("\r\n"+strings.Repeat("ñ", 100))), 11)
	if got != strings.Repeat("ñ", 5) {
		t.Errorf("got %q, want five ñ (10 bytes: a character is not split)", got)
	}
}

func TestSubjectDecoding(t *testing.T) {
	for raw, want := range map[string]string{
		"=?iso-8859-1?q?Temperatura_alta_en_el_sal=F3n?=": "Temperatura alta en el salón",
		"=?utf-8?b?wqFBbGFybWEh?=":                        "¡Alarma!",
		"=?windows-1252?q?=80_5?=":                        "€ 5",
		"sal\xf3n":                                        "salón",
	} {
		m := parseMessage([]byte("Subject: " + raw + "\r\n\r\n"))
		if got := decodeHeader(m.get("Subject")); got != want {
			t.Errorf("%q: got %q, want %q", raw, got, want)
		}
	}
}

// TestHTMLToTextIsLinear: a mail of nothing but opening tags that skip to
// a closing tag must not cost the square of its size (hours on 1 MiB;
// linear is under a second, so 30 s only fails on the square, not on a
// loaded machine).
func TestHTMLToTextIsLinear(t *testing.T) {
	for _, tag := range []string{"<script>", "<STYLE>", "<!--", "<p "} {
		begun := time.Now()
		htmlToText(strings.Repeat(tag, 1<<20/len(tag)))
		if d := time.Since(begun); d > 30*time.Second {
			t.Errorf("1 MiB of %q took %s", tag, d)
		}
	}
	if got := htmlToText("a<SCRIPT>x</Script>b<style>y"); got != "ab" {
		t.Errorf("got %q", got)
	}
}
