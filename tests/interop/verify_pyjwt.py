"""Verify a mayfly access token with PyJWT against mayfly's served JWKS.

Usage: verify_pyjwt.py JWKS_URL ISSUER AUDIENCE TOKEN
Prints the verified claims as JSON and exits 0, or exits 1 with the reason.
An independent implementation: if mayfly's JWS, JWKS or claims drift from the
standards, this fails.
"""

import json
import sys

import jwt


def main() -> int:
    jwks_url, issuer, audience, token = sys.argv[1:5]
    try:
        header = jwt.get_unverified_header(token)
        if header.get("typ") != "at+jwt":
            raise ValueError(f"typ is {header.get('typ')!r}, not at+jwt")
        signing_key = jwt.PyJWKClient(jwks_url).get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token,
            signing_key.key,
            algorithms=["ES256", "EdDSA"],
            audience=audience,
            issuer=issuer,
            options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
        )
    except Exception as e:  # report any failure as a verification failure
        print(f"rejected: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(claims))
    return 0


if __name__ == "__main__":
    sys.exit(main())
