"""A token server for registry:2's ``auth: token``, so the Bearer flow is tested for real.

Anonymous callers get ``pull`` on every repository except ``private/…`` and the catalog;
``pusher:secret`` gets every action asked for. Tokens are RS256 JWTs whose ``x5c`` header
carries the self-signed certificate the registry is configured to trust.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tests.support.net import LoopbackServer
from tests.support.registry import TokenAuth

SERVICE = "regfs-test-registry"
ISSUER = "regfs-test-issuer"
PUSHER = ("pusher", "secret")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


REFRESH_TOKEN = "regfs-test-refresh-token"
"""An identity token (``identitytoken`` in auth.json) the server exchanges for pusher tokens."""


class TokenServer:
    def __init__(self, workdir: Path, token_lifetime: int = 300) -> None:
        """``token_lifetime``: seconds a token is valid (its ``exp``), while every answer
        still says ``expires_in: 300``, so a client meets expiry as a 401 mid-read."""
        self.token_lifetime = token_lifetime
        workdir.mkdir(parents=True, exist_ok=True)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "regfs test token issuer")])
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(self._key, hashes.SHA256())
        )
        bundle = workdir / "token-root.pem"
        bundle.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self.requests: list[dict[str, list[str]]] = []
        self._server = LoopbackServer(self._handler())
        self.port = self._server.port
        self.auth = TokenAuth(f"http://{self._server.host}/token", SERVICE, ISSUER, bundle)

    def stop(self) -> None:
        self._server.stop()

    def _grant(self, scope: str, pusher: bool) -> dict[str, object] | None:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        wanted = [a for a in actions.split(",") if a]
        if kind == "registry" and name == "catalog":
            return {"type": kind, "name": name, "actions": ["*"]}
        if kind != "repository":
            return None
        if pusher:
            return {"type": kind, "name": name, "actions": wanted}
        if name.startswith("private/"):
            return {"type": kind, "name": name, "actions": []}
        return {"type": kind, "name": name, "actions": [a for a in wanted if a == "pull"]}

    def issue(self, scopes: list[str], pusher: bool) -> str:
        now = int(time.time())
        grants = [grant for scope in scopes if (grant := self._grant(scope, pusher))]
        header = {
            "typ": "JWT",
            "alg": "RS256",
            "x5c": [base64.b64encode(self._cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        claims = {
            "iss": ISSUER,
            "sub": "pusher" if pusher else "",
            "aud": SERVICE,
            "exp": now + self.token_lifetime,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": grants,
        }
        encoded = [_b64url(json.dumps(part).encode()) for part in (header, claims)]
        signing_input = ".".join(encoded)
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self
        expected = "Basic " + base64.b64encode(":".join(PUSHER).encode()).decode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                server.requests.append(query)
                authorization = self.headers.get("Authorization")
                if authorization is not None and authorization != expected:
                    self.send_response(401)
                    self.end_headers()
                    return
                token = server.issue(query.get("scope", []), pusher=authorization is not None)
                self._answer({"token": token, "expires_in": 300})

            def do_POST(self) -> None:
                """OAuth2: ``grant_type=refresh_token`` with the known refresh token."""
                length = int(self.headers.get("Content-Length", "0"))
                form = parse_qs(self.rfile.read(length).decode())
                server.requests.append({**form, "method": ["POST"]})
                if form.get("refresh_token") != [REFRESH_TOKEN]:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                token = server.issue(form.get("scope", []), pusher=True)
                self._answer({"access_token": token, "expires_in": 300})

            def _answer(self, document: dict[str, object]) -> None:
                body = json.dumps(document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
