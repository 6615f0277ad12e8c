# Golden vectors for transport/ofp, computed with Python's `cryptography`
# (OpenSSL), an implementation independent of Go's, from the recipe in
# docs/ofp.md (LibreFang HEAD). Run: python3 testdata/vectors.py
import base64, hashlib, hmac
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives import hashes, serialization

raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
secret = "cluster-secret-for-vectors"
node_i, node_r = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
nonce_i, nonce_r = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
id_i = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([1]) * 32)
id_r = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([2]) * 32)
eph_i = x25519.X25519PrivateKey.from_private_bytes(bytes(range(32)))
eph_r = x25519.X25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
b64 = lambda b: base64.b64encode(b).decode()
mac = lambda k, d: hmac.new(k.encode(), d.encode(), hashlib.sha256).hexdigest()

pub_i, pub_r = b64(id_i.public_key().public_bytes(*raw)), b64(id_r.public_key().public_bytes(*raw))
eph_pub_i, eph_pub_r = b64(eph_i.public_key().public_bytes(*raw)), b64(eph_r.public_key().public_bytes(*raw))
auth_i = f"{nonce_i}|{node_i}|{node_r}"
auth_boot = f"{nonce_i}|{node_i}|"
auth_r = f"{nonce_r}|{node_r}|{node_i}"
shared = eph_i.exchange(eph_r.public_key())
okm = HKDF(algorithm=hashes.SHA256(), length=32, salt=f"{nonce_i}|{nonce_r}".encode(), info=b"librefang-ofp/v1/session-key").derive(shared)
session = okm.hex()
ping = '{"id":"x","type":"request","method":"ping"}'
out = {
    "public_key_i": pub_i, "public_key_r": pub_r,
    "ephemeral_i": eph_pub_i, "ephemeral_r": eph_pub_r,
    "auth_hmac_i": mac(secret, auth_i), "auth_hmac_bootstrap": mac(secret, auth_boot), "auth_hmac_r": mac(secret, auth_r),
    "signature_i": b64(id_i.sign(f"{auth_i}|{eph_pub_i}".encode())),
    "signature_i_legacy": b64(id_i.sign(auth_i.encode())),
    "signature_r": b64(id_r.sign(f"{auth_r}|{eph_pub_r}".encode())),
    "session_key": session,
    "legacy_session_key": mac(secret, nonce_i + nonce_r),
    "fingerprint_i": hashlib.sha256(pub_i.encode()).hexdigest(),
    "ping_mac": mac(session, ping),
}
for k, v in out.items():
    print(f'\t"{k}": "{v}",')
