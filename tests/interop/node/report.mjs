// What the SDK clients here print: one JSON line, and their exit code.

/** The client's findings, then a clean close and exit 0. */
export async function done(client, out) {
  console.log(JSON.stringify(out));
  await client.close();
  process.exit(0);
}

/** An error as the Python side reads it (name, message, code), then exit 1. */
export function failed(err) {
  console.log(JSON.stringify({ error: err?.constructor?.name ?? String(err), message: err?.message, code: err?.code }));
  process.exit(1);
}

/** The claims of a JWS, unverified (the server checks them; the tests read them). */
export function claimsOf(token) {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
}
