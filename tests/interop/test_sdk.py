"""Microsoft's own clients against `calld emulator` (issue 11, item 5).

Run by .ci/run in a virtual environment with msal, azure-identity,
msgraph-sdk, pyjwt[crypto] and pytest (not by `cargo test`):

    CALLD_BIN=target/debug/calld python -m pytest -q tests/interop

The real `calld emulator` binary serves HTTPS on loopback with a
self-signed certificate made here. MSAL acquires a client-credentials token
from it; msgraph-sdk's GraphServiceClient (azure-identity credential, base
URL set to the emulator) creates a call, reads it and deletes it; the
notifications the emulator posts to a local receiver are verified with
PyJWT against the JWKS its discovery document names.
"""

import asyncio
import datetime
import http.server
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

# .ci/run sets CALLD_INTEROP_REQUIRED=1: there a missing package fails the
# run instead of skipping it.
if os.environ.get("CALLD_INTEROP_REQUIRED") == "1":
    import azure.identity  # noqa: F401
    import jwt
    import msal
    import msgraph  # noqa: F401
else:
    reason = "the interop packages (msal, azure-identity, msgraph-sdk, pyjwt[crypto]) are not installed: see .ci/run"
    msal = pytest.importorskip("msal", reason=reason)
    jwt = pytest.importorskip("jwt", reason=reason)
    pytest.importorskip("msgraph", reason=reason)
    pytest.importorskip("azure.identity", reason=reason)

from cryptography import x509  # noqa: E402  (installed by pyjwt[crypto])
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "8a34a46b-3d17-4adc-8dce-dc4e7d572698"
SECRET = "interop-test-secret"
USER = "112f7296-5fa4-42ca-bae8-6a692b15d4b8"
ROOT = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def self_signed(dir_):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "calld emulator")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = Path(dir_) / "cert.pem"
    key_file = Path(dir_) / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class Receiver(http.server.BaseHTTPRequestHandler):
    """The bot's callback: records each POST (Authorization and body)."""

    received = []
    lock = threading.Lock()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.lock:
            self.received.append((self.headers.get("Authorization", ""), json.loads(body)))
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def emulator():
    calld = Path(os.environ.get("CALLD_BIN", ROOT / "target" / "debug" / "calld"))
    if not calld.exists():
        pytest.fail(f"no calld binary at {calld}: build it first (cargo build)")
    tmp = tempfile.TemporaryDirectory()
    cert, key = self_signed(tmp.name)
    port = free_port()
    proc = subprocess.Popen(
        [str(calld), "emulator", "--listen", f"127.0.0.1:{port}", "--tls-cert", str(cert), "--tls-key", str(key)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the emulator did not start: {proc.stderr.read().decode()}")
            time.sleep(0.2)
    yield f"https://127.0.0.1:{port}", str(cert)
    proc.terminate()
    proc.wait(timeout=30)
    tmp.cleanup()


@pytest.fixture(scope="module")
def receiver():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/calls"
    server.shutdown()


def test_discovery_documents(emulator):
    base, cert = emulator
    ctx = ssl.create_default_context(cafile=cert)
    with urllib.request.urlopen(f"{base}/{TENANT}/v2.0/.well-known/openid-configuration", context=ctx) as r:
        doc = json.load(r)
    assert doc["issuer"] == f"{base}/{TENANT}/v2.0"
    assert doc["token_endpoint"] == f"{base}/{TENANT}/oauth2/v2.0/token"
    for k in ("authorization_endpoint", "jwks_uri"):
        assert doc[k].startswith(base), doc


def test_msal_client_credentials_over_tls(emulator):
    base, cert = emulator
    import requests

    session = requests.Session()
    session.verify = cert  # trust the emulator's self-signed certificate
    session.trust_env = False  # (else REQUESTS_CA_BUNDLE would win over verify)
    app = msal.ConfidentialClientApplication(
        CLIENT_ID,
        client_credential=SECRET,
        authority=f"{base}/{TENANT}",
        instance_discovery=False,
        http_client=session,
    )
    result = app.acquire_token_for_client(scopes=["https://graph.microsoft.com/.default"])
    assert "access_token" in result, result
    claims = jwt.decode(result["access_token"], options={"verify_signature": False})
    assert claims["tid"] == TENANT
    assert claims["aud"] == "https://graph.microsoft.com"


def test_msgraph_sdk_creates_gets_and_deletes_a_call(emulator, receiver):
    base, cert = emulator
    asyncio.run(sdk_round_trip(base, cert, receiver))

    # notifications: each verified against the JWKS the discovery document names
    ctx = ssl.create_default_context(cafile=cert)
    with urllib.request.urlopen(f"{base}/.well-known/openid-configuration", context=ctx) as r:
        discovery = json.load(r)
    with urllib.request.urlopen(discovery["jwks_uri"], context=ctx) as r:
        jwks = jwt.PyJWKSet.from_dict(json.load(r))
    deadline = time.monotonic() + 120
    states = []
    while time.monotonic() < deadline:
        with Receiver.lock:
            received = list(Receiver.received)
        states = [item["resourceData"]["state"] for _, body in received for item in body["value"]]
        if "terminated" in states:
            break
        time.sleep(0.2)
    assert "terminated" in states, states
    assert states[0] == "establishing", states
    for auth, body in received:
        assert auth.startswith("Bearer "), auth
        token = auth.removeprefix("Bearer ")
        kid = jwt.get_unverified_header(token)["kid"]
        key = next(k for k in jwks.keys if k.key_id == kid)
        claims = jwt.decode(
            token,
            key=key.key,
            algorithms=["RS256"],
            audience=CLIENT_ID,
            issuer=discovery["issuer"],
        )
        assert claims["tid"] == TENANT
        assert body["@odata.type"] == "#microsoft.graph.commsNotifications"


async def sdk_round_trip(base, cert, callback):
    import httpx
    from azure.identity import ClientSecretCredential
    from kiota_authentication_azure.azure_identity_authentication_provider import (
        AzureIdentityAuthenticationProvider,
    )
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph.generated.models.call import Call
    from msgraph.generated.models.identity import Identity
    from msgraph.generated.models.identity_set import IdentitySet
    from msgraph.generated.models.invitation_participant_info import InvitationParticipantInfo
    from msgraph.generated.models.modality import Modality
    from msgraph.generated.models.service_hosted_media_config import ServiceHostedMediaConfig
    from msgraph_core import GraphClientFactory

    credential = ClientSecretCredential(
        TENANT,
        CLIENT_ID,
        SECRET,
        authority=base,
        disable_instance_discovery=True,
        connection_verify=cert,
    )
    auth = AzureIdentityAuthenticationProvider(
        credential,
        scopes=["https://graph.microsoft.com/.default"],
        allowed_hosts=["127.0.0.1"],
    )
    http = GraphClientFactory.create_with_default_middleware(client=httpx.AsyncClient(verify=cert))
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = f"{base}/v1.0"
    client = GraphServiceClient(request_adapter=adapter)
    try:
        created = await client.communications.calls.post(
            Call(
                callback_uri=callback,
                targets=[InvitationParticipantInfo(identity=IdentitySet(user=Identity(id=USER, display_name="John")))],
                requested_modalities=[Modality.Audio],
                media_config=ServiceHostedMediaConfig(),
                tenant_id=TENANT,
            )
        )
        assert created.id, created
        assert created.state is not None
        got = await client.communications.calls.by_call_id(created.id).get()
        assert got.id == created.id
        assert got.callback_uri == callback
        await client.communications.calls.by_call_id(created.id).delete()
    finally:
        credential.close()
