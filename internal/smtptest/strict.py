# A strict, independent SMTP server for alertd's tests: Python's aiosmtpd.
# usage: strict.py PORT OUTDIR [USER PASSWORD]
# RCPT to reject* gets 550, to later* gets 450; each accepted mail is saved
# in OUTDIR as NNNNNN.eml with X-Envelope-From/-To lines prepended. Runs
# until stdin closes.
import os
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, outdir = int(sys.argv[1]), sys.argv[2]
user = sys.argv[3] if len(sys.argv) > 4 else None
password = sys.argv[4] if len(sys.argv) > 4 else None


class Handler:
    def __init__(self):
        self.n = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("reject"):
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        if address.startswith("later"):
            return "450 4.2.1 <%s>: try again later" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
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
    kwargs = dict(authenticator=authenticator, auth_require_tls=False, auth_required=True)
controller = Controller(Handler(), hostname="127.0.0.1", port=port, **kwargs)
controller.start()
print("READY", flush=True)
sys.stdin.read()
controller.stop()
