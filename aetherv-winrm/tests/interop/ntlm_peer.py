#!/usr/bin/env python3
"""NTLM peer for aetherv-winrm's interop test (tests/ntlm_pyspnego.rs), driving pyspnego.

Protocol: one command per line on stdin, one reply per line on stdout. Binary values are
base64; "-" stands for an empty value.

    SERVER                      -> OK                 (acceptor; needs NTLM_USER_FILE)
    CLIENT <user> <password>    -> OK                 (initiator; both base64 UTF-8)
    STEP <token>                -> TOKEN <token> <complete 0|1> <client principal>
    UNWRAP <header> <data>      -> PLAIN <plaintext>  (ctx.unwrap_winrm)
    WRAP <plaintext>            -> WRAPPED <header> <data> <padding length>  (ctx.wrap_winrm)
    QUIT                        -> BYE
Any failure replies ERR <base64 message>. Startup prints READY <pyspnego version>, or
NOSPNEGO <base64 message> and exits with status 3 when the module is missing.
"""

import base64
import sys


def reply(*parts):
    sys.stdout.write(" ".join(parts) + "\n")
    sys.stdout.flush()


def enc(data):
    return base64.b64encode(data).decode("ascii") if data else "-"


def dec(text):
    return b"" if text == "-" else base64.b64decode(text)


try:
    import spnego
except ImportError as exc:  # pragma: no cover - exercised by the Rust test's failure message
    reply("NOSPNEGO", enc(str(exc).encode()))
    sys.exit(3)


def main():
    reply("READY", getattr(spnego, "__version__", "unknown"))
    ctx = None
    server = False
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        cmd, args = words[0], words[1:]
        try:
            if cmd == "SERVER":
                ctx = spnego.server(protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)
                server = True
                reply("OK")
            elif cmd == "CLIENT":
                user, password = dec(args[0]).decode("utf-8"), dec(args[1]).decode("utf-8")
                ctx = spnego.client(
                    user,
                    password,
                    hostname="hv01",
                    service="WSMAN",
                    protocol="ntlm",
                    options=spnego.NegotiateOptions.use_ntlm,
                )
                server = False
                reply("OK")
            elif cmd == "STEP":
                token = dec(args[0]) if args else b""
                out = ctx.step(token or None)
                principal = (ctx.client_principal or "") if server and ctx.complete else ""
                reply("TOKEN", enc(out or b""), "1" if ctx.complete else "0", enc(principal.encode("utf-8")))
            elif cmd == "UNWRAP":
                reply("PLAIN", enc(ctx.unwrap_winrm(dec(args[0]), dec(args[1]))))
            elif cmd == "WRAP":
                result = ctx.wrap_winrm(dec(args[0]))
                reply("WRAPPED", enc(result.header), enc(result.data), str(result.padding_length))
            elif cmd == "QUIT":
                reply("BYE")
                return
            else:
                reply("ERR", enc(("unknown command " + cmd).encode()))
        except Exception as exc:  # report every failure to the Rust side, keep serving
            reply("ERR", enc(("%s: %s" % (type(exc).__name__, exc)).encode("utf-8")))


if __name__ == "__main__":
    main()
