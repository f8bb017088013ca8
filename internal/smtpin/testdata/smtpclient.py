"""Sends one mail with Python's smtplib, as a Raspberry Pi script would.

Usage: smtpclient.py < args.json, with keys
  port, host (127.0.0.1), source (local address to bind, optional),
  helo (optional), starttls (bool), user, password, mech (PLAIN|LOGIN),
  initial_response (bool, default true),
  from, to (list),
  raw_b64 (the message bytes) or compose {from, subject, text, html}.
Prints one JSON line: {"ok": true, "refused": {rcpt: [code, text]}} or
{"error": <exception class>, "code": n, "text": "..."}.
"""
import base64
import json
import smtplib
import ssl
import sys
from email.message import EmailMessage


def message(a):
    if "raw_b64" in a:
        return base64.b64decode(a["raw_b64"])
    c = a["compose"]
    m = EmailMessage()
    m["From"] = c["from"]
    m["To"] = ", ".join(a["to"])
    m["Subject"] = c["subject"]
    m.set_content(c["text"])
    if c.get("html"):
        m.add_alternative(c["html"], subtype="html")
    return m.as_bytes()


def send(a):
    source = (a["source"], 0) if a.get("source") else None
    s = smtplib.SMTP(a.get("host", "127.0.0.1"), a["port"], local_hostname=a.get("helo"),
                     source_address=source, timeout=10)
    try:
        s.ehlo()
        if a.get("starttls"):
            s.starttls(context=ssl._create_unverified_context())
            s.ehlo()
        if a.get("user"):
            s.user, s.password = a["user"], a["password"]
            mech = a.get("mech", "PLAIN")
            s.auth(mech, getattr(s, "auth_" + mech.lower()),
                   initial_response_ok=a.get("initial_response", True))
        refused = s.sendmail(a["from"], a["to"], message(a))
        s.quit()
        return {"ok": True, "refused": {k: [v[0], v[1].decode()] for k, v in refused.items()}}
    finally:
        s.close()


def main():
    a = json.load(sys.stdin)
    try:
        out = send(a)
    except smtplib.SMTPRecipientsRefused as e:
        out = {"error": "SMTPRecipientsRefused",
               "refused": {k: [v[0], v[1].decode()] for k, v in e.recipients.items()}}
    except smtplib.SMTPResponseException as e:
        out = {"error": type(e).__name__, "code": e.smtp_code, "text": e.smtp_error.decode(errors="replace")}
    except (smtplib.SMTPException, OSError) as e:
        out = {"error": type(e).__name__, "text": str(e)}
    print(json.dumps(out))


main()
