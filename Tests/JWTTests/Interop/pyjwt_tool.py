#!/usr/bin/env python3
"""Interop helper for the JWT tests: the other side, written with PyJWT and cryptography.

  sign ALG KEYFILE CLAIMS_JSON        print a token PyJWT signs
  verify ALG KEYFILE TOKEN [ISS]      print the claims PyJWT verifies, or exit 1 with the error
  forge-none CLAIMS_JSON              print an alg:none token
  forge-confusion PUBKEYFILE CLAIMS   print an HS256 token whose HMAC key is the RSA public key PEM
  check-keys DIR                      load gen-worker-keys output with cryptography and exercise it
"""
import base64
import hashlib
import hmac
import json
import os
import stat
import sys

try:
    import jwt
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
except ImportError as e:  # the Swift test fails with this message
    sys.exit("python module missing: %s (pip install PyJWT cryptography)" % e)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "sign":
        alg, keyfile, claims = args
        print(jwt.encode(json.loads(claims), read(keyfile), algorithm=alg))
    elif cmd == "verify":
        alg, keyfile, token = args[:3]
        kwargs = {"issuer": args[3]} if len(args) > 3 else {}
        try:
            claims = jwt.decode(token, read(keyfile), algorithms=[alg], options={"verify_aud": False}, **kwargs)
        except jwt.PyJWTError as e:
            print("%s: %s" % (type(e).__name__, e))
            sys.exit(1)
        print(json.dumps(claims, sort_keys=True))
    elif cmd == "forge-none":
        header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        print(header + "." + b64url(args[0].encode()) + ".")
    elif cmd == "forge-confusion":
        pem, claims = read(args[0]), args[1]
        signing_input = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64url(claims.encode())
        sig = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
        print(signing_input + "." + b64url(sig))
    elif cmd == "check-keys":
        d = args[0]
        private = serialization.load_pem_private_key(read(os.path.join(d, "attempts_private.pem")), password=None)
        public = serialization.load_pem_public_key(read(os.path.join(d, "attempts_public.pem")))
        sig = private.sign(b"lightning", padding.PKCS1v15(), hashes.SHA256())
        public.verify(sig, b"lightning", padding.PKCS1v15(), hashes.SHA256())
        secret = read(os.path.join(d, "worker_secret")).decode().strip()
        modes = {n: oct(stat.S_IMODE(os.stat(os.path.join(d, n)).st_mode))
                 for n in ("attempts_private.pem", "attempts_public.pem", "worker_secret")}
        print(json.dumps({"bits": private.key_size, "secret_bytes": len(base64.b64decode(secret, validate=True)),
                          "modes": modes}, sort_keys=True))
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
