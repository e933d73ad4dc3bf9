"""An independent guest for the KVP provisioning protocol, written from the protocol
description with Python's `cryptography` (OpenSSL), for tests/kvp_interop.rs.

    kvp_guest.py keygen pkcs1|capi DIR   -> writes DIR/guest.pem, prints the public key value
                                            as a guest agent publishes it (base64)
    kvp_guest.py decrypt DIR             -> reads {"items": [{"key", "value"}, ...]} on stdin,
                                            prints {"values": {name: plaintext}, "checksum_ok": bool}

Decryption follows the existing agents: unwrap the AES key with RSA PKCS#1 v1.5, decrypt every
hlvmm.data.* item on its own (base64(IV || AES-256-CBC/PKCS#7)), concatenate the plaintexts of
chunks <key>._0 .. <key>._29 in order, and compare base64(SHA-256) of the non-blank values,
sorted by key and joined with '|', with hlvmm.meta.provisioning_system_checksum.
"""

import base64
import hashlib
import json
import os
import re
import struct
import sys

from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

DATA = "hlvmm.data."
CHUNK = re.compile(r"\._[0-9]+$")


def keygen(kind, directory):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with open(os.path.join(directory, "guest.pem"), "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
    public = key.public_key()
    if kind == "pkcs1":
        blob = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    elif kind == "capi":
        numbers = public.public_numbers()
        size = (public.key_size + 7) // 8
        # BLOBHEADER (PUBLICKEYBLOB, CUR_BLOB_VERSION, reserved, CALG_RSA_KEYX),
        # RSAPUBKEY ("RSA1", bitlen, pubexp), modulus little-endian.
        blob = struct.pack("<BBHI", 0x06, 0x02, 0, 0xA400)
        blob += struct.pack("<III", 0x31415352, size * 8, numbers.e)
        blob += numbers.n.to_bytes(size, "little")
    else:
        raise SystemExit(f"unknown key kind {kind}")
    print(base64.b64encode(blob).decode())


def decrypt_value(aes_key, value):
    raw = base64.b64decode(value)
    iv, ciphertext = raw[:16], raw[16:]
    decryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = sym_padding.PKCS7(128).unpadder()
    return (unpadder.update(padded) + unpadder.finalize()).decode("utf-8")


def decrypt(directory):
    with open(os.path.join(directory, "guest.pem"), "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    items = {item["key"]: item["value"] for item in json.load(sys.stdin)["items"]}
    aes_key = key.decrypt(
        base64.b64decode(items["hlvmm.meta.shared_aes_key"]), padding.PKCS1v15()
    )
    bases = {CHUNK.sub("", k) for k in items if k.startswith(DATA)}
    values = {}
    for base in sorted(bases):
        if base in items:
            values[base] = decrypt_value(aes_key, items[base])
        else:
            pieces = []
            for i in range(30):
                piece = items.get(f"{base}._{i}")
                if piece is None:
                    break
                pieces.append(decrypt_value(aes_key, piece))
            values[base] = "".join(pieces)
    joined = "|".join(v for _, v in sorted(values.items()) if v.strip())
    checksum = base64.b64encode(hashlib.sha256(joined.encode("utf-8")).digest()).decode()
    print(
        json.dumps(
            {
                "values": {k[len(DATA):]: v for k, v in values.items()},
                "checksum_ok": checksum == items.get("hlvmm.meta.provisioning_system_checksum"),
            }
        )
    )


def main():
    if sys.argv[1] == "keygen":
        keygen(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "decrypt":
        decrypt(sys.argv[2])
    else:
        raise SystemExit("usage: kvp_guest.py keygen pkcs1|capi DIR | decrypt DIR")


if __name__ == "__main__":
    main()
