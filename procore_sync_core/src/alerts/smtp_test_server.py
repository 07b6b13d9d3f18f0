"""An SMTP server for the alert tests (aiosmtpd), started by transport_tests.rs.

Listens on 127.0.0.1 on a free port, prints "listening <port>" once it does, appends each
message it accepts to --out as one JSON line, and exits when its standard input closes
(so that it cannot outlive the test that started it).

    python3 smtp_test_server.py --out FILE [--mode plain|starttls|smtps]
        [--cert PEM --key PEM] [--user U --password P]
"""

import argparse
import asyncio
import email
import email.policy
import json
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Recorder:
    def __init__(self, out):
        self.out = out

    async def handle_DATA(self, server, session, envelope):
        transport = server.transport
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        record = {
            "subject": str(parsed["subject"]),
            "to": str(parsed["to"]),
            "auto_submitted": str(parsed["auto-submitted"]),
            "body": parsed.get_body().get_content(),
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
            "login": session.auth_data if isinstance(session.auth_data, str) else None,
            "tls": transport is not None and transport.get_extra_info("ssl_object") is not None,
        }
        with open(self.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return "250 OK"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--mode", choices=["plain", "starttls", "smtps"], default="plain")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()

    context = None
    if args.mode != "plain":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == args.user
            and auth_data.password.decode() == args.password
        )
        return AuthResult(success=ok, handled=False,
                          auth_data=auth_data.login.decode() if ok else None)

    def protocol():
        return SMTP(
            Recorder(args.out),
            hostname="localhost",
            authenticator=authenticator if args.user else None,
            auth_required=bool(args.user),
            # A plain server takes a login only in the test for a relay on this machine;
            # smtps is TLS from the start, which aiosmtpd does not count as STARTTLS.
            auth_require_tls=args.mode == "starttls",
            tls_context=context if args.mode == "starttls" else None,
            require_starttls=args.mode == "starttls",
        )

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(loop.create_server(
        protocol, "127.0.0.1", 0, ssl=context if args.mode == "smtps" else None))
    port = server.sockets[0].getsockname()[1]

    def stdin_closed():
        if not sys.stdin.buffer.read1(4096):
            loop.stop()

    loop.add_reader(sys.stdin.fileno(), stdin_closed)
    print(f"listening {port}", flush=True)
    loop.run_forever()


if __name__ == "__main__":
    main()
