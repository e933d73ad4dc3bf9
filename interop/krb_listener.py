"""A minimal WinRM listener that accepts Kerberos with pyspnego + python-gssapi.

An independent peer for our client: the security context is pyspnego's (MIT krb5 through the
`gssapi` package, service keytab from KRB5_KTNAME) and every message is decrypted and
encrypted with pyspnego's `unwrap_winrm` / `wrap_winrm`. It serves the `cmd` shell just far
enough to run one command: Create, Command (its output is the command line it received),
Receive (that output and exit code 0), Signal, Delete. Plaintext bodies are refused with 401
like a Windows host with AllowUnencrypted=false.

Prints `port=N` once listening on 127.0.0.1; exits after 10 minutes at the latest.
"""

import base64
import re
import struct
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape

import spnego

BOUNDARY = b"--Encrypted Boundary"
SHELL_NS = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
LIFETIME_SECONDS = 600

ENVELOPE = (
    '<s:Envelope xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
    'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
    'xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" '
    'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" '
    f'xmlns:rsp="{SHELL_NS}">'
    "<s:Header><a:Action>{action}</a:Action>"
    "<a:MessageID>uuid:{message_id}</a:MessageID>"
    "<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>"
    "<a:RelatesTo>{relates}</a:RelatesTo></s:Header><s:Body>{body}</s:Body></s:Envelope>"
)


def envelope(action: str, relates: str, body: str) -> bytes:
    return ENVELOPE.format(
        action=action, message_id=str(uuid.uuid4()).upper(), relates=relates, body=body
    ).encode("utf-8")


def tag(xml: str, name: str) -> str:
    m = re.search(rf"<(?:\w+:)?{name}(?:\s[^>]*)?>(.*?)</(?:\w+:)?{name}>", xml, re.S)
    return m.group(1) if m else ""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    commands = {}

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        auth = self.headers.get("Authorization")
        if auth:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() not in ("kerberos", "negotiate"):
                return self.reply(401, headers=[("WWW-Authenticate", "Kerberos")])
            protocol = "kerberos" if scheme.lower() == "kerberos" else "negotiate"
            self.ctx = spnego.server(service="HTTP", protocol=protocol)
            self.scheme = scheme
            try:
                out = self.ctx.step(base64.b64decode(token))
            except Exception as e:  # refused token: a fresh 401, as Windows answers
                sys.stderr.write(f"refused: {e}\n")
                self.ctx = None
                return self.reply(401, headers=[("WWW-Authenticate", "Kerberos"),
                                                ("WWW-Authenticate", "Negotiate")])
            headers = []
            if out:
                headers.append(("WWW-Authenticate", f"{scheme} {base64.b64encode(out).decode()}"))
            if not self.ctx.complete:
                return self.reply(401, headers=headers)
            if not body:
                return self.reply(200, headers=headers)
        ctx = getattr(self, "ctx", None)
        content_type = self.headers.get("Content-Type", "")
        if ctx is None or not ctx.complete or "multipart/encrypted" not in content_type:
            return self.reply(401, headers=[("WWW-Authenticate", "Kerberos")])
        protocol = re.search(r'protocol="([^"]+)"', content_type).group(1)
        xml = self.decrypt(ctx, body).decode("utf-8")
        answer = self.dispatch(xml)
        sealed = self.encrypt(ctx, protocol.encode(), answer)
        self.reply(200, sealed, headers=[(
            "Content-Type",
            f'multipart/encrypted;protocol="{protocol}";boundary="Encrypted Boundary"',
        )])

    @staticmethod
    def decrypt(ctx, body: bytes) -> bytes:
        part = body.split(BOUNDARY + b"\r\n")[2]
        if part.endswith(BOUNDARY + b"--\r\n"):
            part = part[: -len(BOUNDARY + b"--\r\n")]
        payload = part.replace(b"\tContent-Type: application/octet-stream\r\n", b"", 1)
        header_len = struct.unpack("<i", payload[:4])[0]
        header = payload[4 : 4 + header_len]
        expected = int(re.search(rb"Length=(\d+)", body).group(1))
        data = ctx.unwrap_winrm(header, payload[4 + header_len :])
        if len(data) != expected:
            raise ValueError("length mismatch")
        return data

    @staticmethod
    def encrypt(ctx, protocol: bytes, data: bytes) -> bytes:
        result = ctx.wrap_winrm(data)
        return (
            BOUNDARY + b"\r\n\tContent-Type: " + protocol + b"\r\n"
            b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length="
            + str(len(data)).encode() + b"\r\n" + BOUNDARY + b"\r\n"
            b"\tContent-Type: application/octet-stream\r\n"
            + struct.pack("<i", len(result.header)) + result.header + result.data
            + BOUNDARY + b"--\r\n"
        )

    def dispatch(self, xml: str) -> bytes:
        action = tag(xml, "Action")
        relates = tag(xml, "MessageID")
        if action.endswith("/transfer/Create"):
            shell_id = str(uuid.uuid4()).upper()
            body = (
                "<x:ResourceCreated><a:Address>http://localhost/wsman</a:Address>"
                "<a:ReferenceParameters><w:ResourceURI>"
                f"{SHELL_NS}/cmd</w:ResourceURI><w:SelectorSet>"
                f'<w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet>'
                "</a:ReferenceParameters></x:ResourceCreated>"
                f"<rsp:Shell><rsp:ShellId>{shell_id}</rsp:ShellId></rsp:Shell>"
            )
            return envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse",
                            relates, body)
        if action.endswith("/shell/Command"):
            command_id = str(uuid.uuid4()).upper()
            line = " ".join([tag(xml, "Command").strip()]
                            + [a for a in re.findall(r"<(?:\w+:)?Arguments>(.*?)</", xml, re.S)])
            from xml.sax.saxutils import unescape
            Handler.commands[command_id] = unescape(line) + "\r\n"
            body = f"<rsp:CommandResponse><rsp:CommandId>{command_id}</rsp:CommandId></rsp:CommandResponse>"
            return envelope(f"{SHELL_NS}/CommandResponse", relates, body)
        if action.endswith("/shell/Receive"):
            command_id = re.search(r'CommandId="([^"]+)"', xml).group(1)
            out = base64.b64encode(Handler.commands.pop(command_id, "").encode("utf-8")).decode()
            body = (
                f'<rsp:ReceiveResponse><rsp:Stream Name="stdout" CommandId="{command_id}">{out}'
                f'</rsp:Stream><rsp:Stream Name="stdout" CommandId="{command_id}" End="true">'
                f'</rsp:Stream><rsp:Stream Name="stderr" CommandId="{command_id}" End="true">'
                f'</rsp:Stream><rsp:CommandState CommandId="{command_id}" '
                f'State="{SHELL_NS}/CommandState/Done"><rsp:ExitCode>0</rsp:ExitCode>'
                "</rsp:CommandState></rsp:ReceiveResponse>"
            )
            return envelope(f"{SHELL_NS}/ReceiveResponse", relates, body)
        if action.endswith("/shell/Signal"):
            return envelope(f"{SHELL_NS}/SignalResponse", relates, "<rsp:SignalResponse/>")
        if action.endswith("/transfer/Delete"):
            return envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse",
                            relates, "")
        return envelope("http://schemas.xmlsoap.org/ws/2004/08/addressing/fault", relates,
                        escape(action))


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"port={server.server_address[1]}", flush=True)
    threading.Timer(LIFETIME_SECONDS, server.shutdown).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
