#!/usr/bin/python3
"""A real SMTP server for tests (Debian's python3-aiosmtpd): stores every
message it accepts as OUTDIR/NNNN.json (envelope, authenticated login,
whether TLS was in use, the message as received, and its headers and body
decoded by Python's email package) and prints READY once it accepts
connections.

usage: smtp_server.py OUTDIR PORT [--starttls CERT KEY | --tls CERT KEY]
                      [--auth USER PASSWORD]
"""

import argparse
import asyncio
import email
import email.policy
import json
import os
import ssl
import sys
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Saver:
    def __init__(self, outdir):
        self.outdir = outdir
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        path = os.path.join(self.outdir, "%04d.json" % self.count)
        login = session.auth_data.login if session.auth_data else None
        msg = email.message_from_bytes(
            envelope.original_content, policy=email.policy.default
        )
        with open(path + ".tmp", "w") as f:
            json.dump(
                {
                    "from": envelope.mail_from,
                    "to": envelope.rcpt_tos,
                    "login": login.decode() if isinstance(login, bytes) else login,
                    "tls": session.ssl is not None
                    or server.transport.get_extra_info("ssl_object") is not None,
                    "data": envelope.original_content.decode("utf-8", "replace"),
                    "headers": {k: str(v) for k, v in msg.items()},
                    "body": msg.get_content(),
                },
                f,
            )
        os.rename(path + ".tmp", path)
        return "250 Message accepted"


def main():
    # aiosmtpd itself still sets the deprecated Session.login_data.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    p = argparse.ArgumentParser()
    p.add_argument("outdir")
    p.add_argument("port", type=int)
    p.add_argument("--starttls", nargs=2)
    p.add_argument("--tls", nargs=2)
    p.add_argument("--auth", nargs=2)
    a = p.parse_args()
    kwargs = {}
    controller_kwargs = {}
    if a.starttls or a.tls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(*(a.starttls or a.tls))
        if a.starttls:
            kwargs["tls_context"] = ctx
            kwargs["require_starttls"] = True
        else:
            controller_kwargs["ssl_context"] = ctx
    if a.auth:
        user, password = (s.encode() for s in a.auth)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login == user
                and auth_data.password == password
            )
            return AuthResult(success=ok, handled=False, auth_data=auth_data)

        kwargs["authenticator"] = authenticator
        # aiosmtpd only knows of STARTTLS: on a connection that is TLS from
        # the first byte it would never offer AUTH.
        kwargs["auth_require_tls"] = not a.tls
    controller = Controller(
        Saver(a.outdir),
        hostname="127.0.0.1",
        port=a.port,
        **controller_kwargs,
        **kwargs,
    )
    controller.start()
    print("READY", flush=True)
    try:
        asyncio.get_event_loop().run_until_complete(asyncio.Event().wait())
    finally:
        controller.stop()


if __name__ == "__main__":
    sys.exit(main())
