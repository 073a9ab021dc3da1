#!/usr/bin/env node
// Usage: node verify.mjs <jwksUrl> <issuer> <audience> <token>
// Verifies an RFC 9068 access token (typ at+jwt, ES256) against a remote JWKS.
// On success: prints the JWT claims as JSON on stdout, exits 0.
// On failure: prints {"error":<class>,"code":<jose code>,"claim":..,"reason":..,"message":..} on stdout, exits 1.
// Optional env: VERIFY_PRINT_HEADER=1 also prints the protected header to stderr.
import { createRemoteJWKSet, jwtVerify, errors } from 'jose';

const [jwksUrl, issuer, audience, token] = process.argv.slice(2);
if (!jwksUrl || !issuer || !audience || !token) {
  console.error('usage: node verify.mjs <jwksUrl> <issuer> <audience> <token>');
  process.exit(2);
}

const JWKS = createRemoteJWKSet(new URL(jwksUrl));

try {
  const { payload, protectedHeader } = await jwtVerify(token, JWKS, {
    issuer,
    audience,
    typ: 'at+jwt',
    algorithms: ['ES256'],
  });
  if (process.env.VERIFY_PRINT_HEADER) console.error(JSON.stringify(protectedHeader));
  console.log(JSON.stringify(payload));
  process.exit(0);
} catch (err) {
  const out = {
    error: err?.name ?? String(err),
    code: err?.code,
    claim: err?.claim,
    reason: err?.reason,
    message: err?.message,
    isJoseError: err instanceof errors.JOSEError,
  };
  console.log(JSON.stringify(out));
  process.exit(1);
}
