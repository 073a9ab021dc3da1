#!/usr/bin/env node
// Usage: node person_client.mjs <mcpServerUrl> <toolName> [toolArgsJson]
//
// A person's MCP client on the TypeScript SDK v2 (@modelcontextprotocol/client, unmodified):
// an OAuthClientProvider as the SDK documents it (in memory, registering itself through
// RFC 7591, with a DpopSession), driven by the SDK's own auth flow. Where a desktop client
// would open a browser, this one follows the redirects headlessly (mayfly -> the IdP -> mayfly's
// consent page, where it clicks Allow -> the redirect URI) and hands the callback's parameters
// to transport.finishAuth, which checks `iss` (RFC 9207) and redeems the code.
//
// Env: PERSON_REDIRECT (the redirect URI to register; default http://127.0.0.1:33419/callback).
// stdout: one JSON object {tools, toolResult, token_type, claims, refresh}; exit 1 on error.
import { Client, DpopSession, StreamableHTTPClientTransport, UnauthorizedError } from '@modelcontextprotocol/client';
import { claimsOf, done, failed } from './report.mjs';

const [serverUrl, toolName, toolArgsJson] = process.argv.slice(2);
const redirect = process.env.PERSON_REDIRECT ?? 'http://127.0.0.1:33419/callback';

class PersonProvider {
  constructor() {
    this.session = DpopSession.create();
  }
  get redirectUrl() {
    return redirect;
  }
  get clientMetadata() {
    return {
      client_name: 'node IDE',
      redirect_uris: [redirect],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }
  clientInformation() {
    return this.client;
  }
  saveClientInformation(info) {
    this.client = info;
  }
  tokens() {
    return this.saved;
  }
  saveTokens(tokens) {
    this.saved = tokens;
  }
  redirectToAuthorization(url) {
    this.authorizationUrl = url;
  }
  saveCodeVerifier(verifier) {
    this.verifier = verifier;
  }
  codeVerifier() {
    return this.verifier;
  }
  dpop() {
    return this.session;
  }
}

// The browser: every redirect followed by hand, mayfly's cookie kept, Allow clicked.
async function signIn(start) {
  const cookies = new Map();
  const cookieHeader = () => [...cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  let url = new URL(start);
  for (let i = 0; i < 10; i++) {
    if (url.href.startsWith(redirect)) return url.searchParams;
    let res = await fetch(url, { redirect: 'manual', headers: { cookie: cookieHeader() } });
    for (const c of res.headers.getSetCookie()) {
      const [k, v] = c.split(';')[0].split('=');
      cookies.set(k, v);
    }
    if (res.status === 200) {
      const page = await res.text();
      const request = page.match(/name="request" value="([^"]+)"/)[1];
      res = await fetch(new URL('consent', url), {
        method: 'POST',
        redirect: 'manual',
        headers: { cookie: cookieHeader(), 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ request, decision: 'allow' }),
      });
    }
    if (![302, 303].includes(res.status)) throw new Error(`sign-in stopped at ${url} with ${res.status}`);
    url = new URL(res.headers.get('location'), url);
  }
  throw new Error('too many redirects');
}

const provider = new PersonProvider();
try {
  const first = new StreamableHTTPClientTransport(new URL(serverUrl), { authProvider: provider });
  try {
    await new Client({ name: 'mayfly-person-interop', version: '0.1.0' }).connect(first);
  } catch (err) {
    if (!(err instanceof UnauthorizedError)) throw err;
  }
  await first.finishAuth(await signIn(provider.authorizationUrl));
  const transport = new StreamableHTTPClientTransport(new URL(serverUrl), { authProvider: provider });
  const client = new Client({ name: 'mayfly-person-interop', version: '0.1.0' });
  await client.connect(transport);
  const { tools } = await client.listTools();
  const out = { tools: tools.map((t) => t.name) };
  out.toolResult = await client.callTool({ name: toolName, arguments: toolArgsJson ? JSON.parse(toolArgsJson) : {} });
  const t = await provider.tokens();
  out.token_type = t.token_type;
  out.claims = claimsOf(t.access_token);
  out.refresh = typeof t.refresh_token === 'string' && t.refresh_token.startsWith('mfy_rt_');
  out.jkt = (await provider.dpop()).thumbprint;
  await done(client, out);
} catch (err) {
  failed(err);
}
