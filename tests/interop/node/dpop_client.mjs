#!/usr/bin/env node
// Usage: node dpop_client.mjs <mcpServerUrl> <clientId> <clientSecret> [toolName] [toolArgsJson]
//
// The MCP TypeScript SDK v2 (@modelcontextprotocol/client, pinned in package.json) with its
// DpopSession, unmodified: the built-in ClientCredentialsProvider opted into DPoP the way the
// SDK documents it, by a provider that answers `dpop()` with one session for its life. The SDK
// finds mayfly through the gateway's RFC 9728 metadata, sends a DPoP proof to the token
// endpoint (retrying once on `use_dpop_nonce`), and then `Authorization: DPoP` plus a fresh
// proof (`ath`, `htm`, `htu`) on every MCP request.
//
// Env: MCP_EXPECTED_ISSUER (the issuer the credentials belong to).
// stdout: one JSON object {tools, toolResult?, token_type, jkt, cnf, claims}; exit 1 on error.
import { Client, ClientCredentialsProvider, DpopSession, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { claimsOf, done, failed } from './report.mjs';

const [serverUrl, clientId, clientSecret, toolName, toolArgsJson] = process.argv.slice(2);
if (!serverUrl || !clientId || clientSecret === undefined) {
  console.error('usage: node dpop_client.mjs <mcpServerUrl> <clientId> <clientSecret> [toolName] [toolArgsJson]');
  process.exit(2);
}

// The SDK's opt-in (OAuthClientProvider.dpop()); the built-in provider does not declare it itself.
class DpopClientCredentialsProvider extends ClientCredentialsProvider {
  constructor(options) {
    super(options);
    this.session = DpopSession.create();
  }
  dpop() {
    return this.session;
  }
}

const provider = new DpopClientCredentialsProvider({
  clientId,
  clientSecret,
  expectedIssuer: process.env.MCP_EXPECTED_ISSUER,
});
const transport = new StreamableHTTPClientTransport(new URL(serverUrl), { authProvider: provider });
const client = new Client({ name: 'mayfly-dpop-interop', version: '0.1.0' });

try {
  await client.connect(transport);
  const { tools } = await client.listTools();
  const out = { tools: tools.map((t) => t.name) };
  if (toolName) {
    out.toolResult = await client.callTool({ name: toolName, arguments: toolArgsJson ? JSON.parse(toolArgsJson) : {} });
  }
  const t = await provider.tokens();
  const session = await provider.dpop();
  const claims = claimsOf(t.access_token);
  out.token_type = t.token_type;
  out.jkt = session.thumbprint;
  out.claims = claims;
  await done(client, out);
} catch (err) {
  failed(err);
}
