# A strict, independent SMTP server for alertd's tests: Python's aiosmtpd.
# usage: strict.py PORT OUTDIR [--user USER --password PASSWORD] [--refuse-repeated-ehlo]
#
# aiosmtpd itself refuses a nested MAIL (503). With --refuse-repeated-ehlo
# a second EHLO gets "503 5.5.1 Invalid command: Already identified", as
# OpenSMTPD answers (OpenSMTPD/OpenSMTPD#1147). Scripted by address:
#   RCPT TO:<reject...>    550        RCPT TO:<later...>    450
#   MAIL FROM:<reject...>  550        MAIL FROM:<later...>  451
#   DATA with a spam... recipient: 554 after the message
# Each accepted mail is saved in OUTDIR as NNNNNN.eml with X-Envelope-From
# and X-Envelope-To lines prepended. Prints READY once it accepts
# connections; runs until stdin closes.
import argparse
import os
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

ap = argparse.ArgumentParser()
ap.add_argument("port", type=int)
ap.add_argument("outdir")
ap.add_argument("--user")
ap.add_argument("--password")
ap.add_argument("--refuse-repeated-ehlo", action="store_true")
args = ap.parse_args()
outdir, user, password = args.outdir, args.user, args.password


class Handler:
    def __init__(self):
        self.n = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        if args.refuse_repeated_ehlo and session.host_name:
            return ["503 5.5.1 Invalid command: Already identified"]
        session.host_name = hostname
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if address.startswith("reject"):
            return "550 5.7.1 <%s>: Sender address rejected: Access denied" % address
        if address.startswith("later"):
            return "451 4.3.0 <%s>: Temporary lookup failure" % address
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("reject"):
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        if address.startswith("later"):
            return "450 4.2.1 <%s>: Recipient address rejected: try again later" % address
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if any(r.startswith("spam") for r in envelope.rcpt_tos):
            return "554 5.7.1 Message rejected as spam"
        self.n += 1
        path = os.path.join(outdir, "%06d.eml" % self.n)
        with open(path + ".tmp", "wb") as f:
            f.write(("X-Envelope-From: %s\r\nX-Envelope-To: %s\r\n" % (
                envelope.mail_from, ",".join(envelope.rcpt_tos))).encode())
            f.write(envelope.original_content)
        os.rename(path + ".tmp", path)
        return "250 2.0.0 Ok: queued"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword)
          and auth_data.login.decode() == user
          and auth_data.password.decode() == password)
    return AuthResult(success=ok)


kwargs = {}
if user:
    # Plaintext on loopback: AUTH must not wait for STARTTLS here.
    kwargs = dict(authenticator=authenticator, auth_require_tls=False, auth_required=True)
controller = Controller(Handler(), hostname="127.0.0.1", port=args.port, **kwargs)
controller.start()
print("READY", flush=True)
sys.stdin.read()
controller.stop()
