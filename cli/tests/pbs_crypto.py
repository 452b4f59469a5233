#!/usr/bin/env python3
"""An independent implementation of PBS's client-side encryption, for cairn's interop tests.

Written from the format alone (Python's `cryptography` for AES-GCM and the KDFs, `zstandard`
for zstd), sharing no code with cairn:

  pbs_crypto.py make DIR PASSPHRASE
      writes DIR/key.json (PBKDF2), DIR/ds (a PBS datastore of encrypted chunks),
      DIR/image.img and its two indexes DIR/image.fidx and DIR/image.didx; prints the key's
      fingerprint.
  pbs_crypto.py check DATASTORE KEYFILE PASSPHRASE INDEX IMAGE
      decrypts every chunk INDEX names (fidx or didx) with the key in KEYFILE, checks CRCs,
      tags and keyed digests, and compares the image with IMAGE.
"""

import base64
import hashlib
import json
import os
import struct
import sys
import zlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
import zstandard


def magic(text):
    return hashlib.sha256(text.encode()).digest()[:8]


ENCRYPTED = magic("Proxmox Backup encrypted blob v1.0")
ENCRYPTED_ZSTD = magic("Proxmox Backup zstd compressed encrypted blob v1.0")
FIDX = magic("Proxmox Backup fixed sized chunk index v1.0")
DIDX = magic("Proxmox Backup dynamic sized chunk index v1.0")


def id_key(key):
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=b"_id_key", iterations=10)
    return kdf.derive(key)


def keyed_digest(key, data):
    return hashlib.sha256(data + id_key(key)).digest()


def fingerprint(key):
    text = hashlib.sha256(b"Proxmox Backup Encryption Key Fingerprint").digest()
    return ":".join(f"{b:02x}" for b in keyed_digest(key, text))


def encrypt_blob(key, plaintext):
    compressed = zstandard.ZstdCompressor(level=1).compress(plaintext)
    if len(compressed) < len(plaintext):
        kind, payload = ENCRYPTED_ZSTD, compressed
    else:
        kind, payload = ENCRYPTED, plaintext
    iv = os.urandom(16)
    sealed = AESGCM(key).encrypt(iv, payload, b"")
    ciphertext, tag = sealed[:-16], sealed[-16:]
    crc = zlib.crc32(ciphertext) & 0xFFFFFFFF
    return kind + struct.pack("<I", crc) + iv + tag + ciphertext


def decrypt_blob(key, blob, expected_len):
    kind = blob[:8]
    if kind not in (ENCRYPTED, ENCRYPTED_ZSTD):
        raise SystemExit(f"not an encrypted blob: {kind.hex()}")
    (crc,) = struct.unpack("<I", blob[8:12])
    iv, tag, ciphertext = blob[12:28], blob[28:44], blob[44:]
    if zlib.crc32(ciphertext) & 0xFFFFFFFF != crc:
        raise SystemExit("CRC mismatch")
    payload = AESGCM(key).decrypt(iv, ciphertext + tag, b"")
    if kind == ENCRYPTED_ZSTD:
        payload = zstandard.ZstdDecompressor().decompress(payload, max_output_size=expected_len)
    if len(payload) != expected_len:
        raise SystemExit(f"chunk of {len(payload)} bytes, index says {expected_len}")
    return payload


def chunk_path(store, digest):
    hexdigest = digest.hex()
    return os.path.join(store, ".chunks", hexdigest[:4], hexdigest)


def store_chunk(store, key, data):
    digest = keyed_digest(key, data)
    path = chunk_path(store, digest)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(encrypt_blob(key, data))
    return digest


def header(kind, csum, rest):
    head = kind + os.urandom(16) + struct.pack("<q", 1764590400) + csum + rest
    return head + bytes(4096 - len(head))


def write_key_file(path, key, passphrase):
    salt = os.urandom(32)
    iterations = 65535
    derived = PBKDF2HMAC(
        algorithm=hashes.SHA256(), length=32, salt=salt, iterations=iterations
    ).derive(passphrase)
    iv = os.urandom(16)
    sealed = AESGCM(derived).encrypt(iv, key, b"")
    data = iv + sealed[-16:] + sealed[:-16]
    document = {
        "kdf": {"PBKDF2": {"iter": iterations, "salt": base64.b64encode(salt).decode()}},
        "created": "2026-12-01T12:00:00Z",
        "modified": "2026-12-01T12:00:00Z",
        "data": base64.b64encode(data).decode(),
        "fingerprint": fingerprint(key),
    }
    with open(path, "w") as f:
        json.dump(document, f)


def read_key_file(path, passphrase):
    with open(path) as f:
        document = json.load(f)
    data = base64.b64decode(document["data"])
    kdf = document["kdf"]
    if kdf is None:
        key = data
    else:
        if "Scrypt" in kdf:
            p = kdf["Scrypt"]
            derive = Scrypt(salt=base64.b64decode(p["salt"]), length=32, n=p["n"], r=p["r"], p=p["p"])
        else:
            p = kdf["PBKDF2"]
            derive = PBKDF2HMAC(
                algorithm=hashes.SHA256(),
                length=32,
                salt=base64.b64decode(p["salt"]),
                iterations=p["iter"],
            )
        derived = derive.derive(passphrase)
        iv, tag, sealed = data[:16], data[16:32], data[32:]
        key = AESGCM(derived).decrypt(iv, sealed + tag, b"")
    if document.get("fingerprint") not in (None, fingerprint(key)):
        raise SystemExit("key file fingerprint does not match its key")
    return key


def make(directory, passphrase):
    key = os.urandom(32)
    store = os.path.join(directory, "ds")
    os.makedirs(os.path.join(store, ".chunks"), exist_ok=True)
    chunk = 1 << 20
    noise = os.urandom(3 * chunk + 12345)
    text = b"the same sentence again and again. " * 30000
    image = noise[: 2 * chunk] + bytes(2 * chunk) + text[:chunk] + noise[2 * chunk :]
    with open(os.path.join(directory, "image.img"), "wb") as f:
        f.write(image)
    # Fixed index, 1 MiB chunks.
    digests = [store_chunk(store, key, image[i : i + chunk]) for i in range(0, len(image), chunk)]
    table = b"".join(digests)
    rest = struct.pack("<QQ", len(image), chunk)
    with open(os.path.join(directory, "image.fidx"), "wb") as f:
        f.write(header(FIDX, hashlib.sha256(table).digest(), rest) + table)
    # Dynamic index, chunks of uneven sizes.
    entries, start, sizes = b"", 0, [300_000, 700_000, 123_457, 1 << 20, 555_555]
    i = 0
    while start < len(image):
        end = min(len(image), start + sizes[i % len(sizes)])
        entries += struct.pack("<Q", end) + store_chunk(store, key, image[start:end])
        start, i = end, i + 1
    with open(os.path.join(directory, "image.didx"), "wb") as f:
        f.write(header(DIDX, hashlib.sha256(entries).digest(), b"") + entries)
    write_key_file(os.path.join(directory, "key.json"), key, passphrase)
    print(fingerprint(key))


def check(store, key_file, passphrase, index_path, image_path):
    key = read_key_file(key_file, passphrase)
    with open(index_path, "rb") as f:
        index = f.read()
    kind, body = index[:8], index[4096:]
    chunks = []
    if kind == FIDX:
        size, chunk = struct.unpack("<QQ", index[64:80])
        for n in range(len(body) // 32):
            digest = body[32 * n : 32 * n + 32]
            chunks.append((digest, min(chunk, size - n * chunk)))
    elif kind == DIDX:
        start = 0
        for n in range(len(body) // 40):
            (end,) = struct.unpack("<Q", body[40 * n : 40 * n + 8])
            chunks.append((body[40 * n + 8 : 40 * n + 40], end - start))
            start = end
    else:
        raise SystemExit(f"not a PBS index: {kind.hex()}")
    image = bytearray()
    for digest, length in chunks:
        with open(chunk_path(store, digest), "rb") as f:
            plaintext = decrypt_blob(key, f.read(), length)
        if keyed_digest(key, plaintext) != digest:
            raise SystemExit(f"chunk {digest.hex()}: keyed digest mismatch")
        image += plaintext
    with open(image_path, "rb") as f:
        if f.read() != bytes(image):
            raise SystemExit("image differs")
    print(f"ok: {len(chunks)} chunks, {len(image)} bytes, key {fingerprint(key)}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3].encode())
    elif len(sys.argv) == 7 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3], sys.argv[4].encode(), sys.argv[5], sys.argv[6])
    else:
        raise SystemExit(__doc__)
