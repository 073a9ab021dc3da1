#!/usr/bin/env node
// Usage: node client.mjs <mcpServerUrl> <clientId> <clientSecret> <scope|""> [toolName] [toolArgsJson]
//
// Connects to an MCP server over Streamable HTTP using the official SDK's built-in
// client_credentials provider (ClientCredentialsProvider, client_secret_basic unless the AS
// metadata only lists client_secret_post), lists tools, optionally calls one, prints JSON.
//
// Env:
//   MCP_EXPECTED_ISSUER  issuer/authorization-server URL the credentials belong to. Must equal
//                        (modulo one trailing slash) authorization_servers[0] in the MCP server's
//                        protected-resource metadata. If unset, the SDK prints a deprecation
//                        warning to stderr and trusts whatever AS the MCP server advertises.
//   PRINT_TOKEN=1        include the raw access_token in the output.
//
// stdout: one JSON object {tools, toolResult?, token}. Exit 0 on success, 1 on any error
// (error JSON on stdout: {error, message, code?, oauthError?}).
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ClientCredentialsProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js';

const [serverUrl, clientId, clientSecret, scope, toolName, toolArgsJson] = process.argv.slice(2);
if (!serverUrl || !clientId || clientSecret === undefined || scope === undefined) {
  console.error('usage: node client.mjs <mcpServerUrl> <clientId> <clientSecret> <scope|""> [toolName] [toolArgsJson]');
  process.exit(2);
}

const provider = new ClientCredentialsProvider({
  clientId,
  clientSecret,
  scope: scope || undefined, // sent verbatim as the `scope` form param of the token request
  ...(process.env.MCP_EXPECTED_ISSUER ? { expectedIssuer: process.env.MCP_EXPECTED_ISSUER } : {}),
});

const transport = new StreamableHTTPClientTransport(new URL(serverUrl), { authProvider: provider });
const client = new Client({ name: 'mayfly-interop-client', version: '0.1.0' }, { capabilities: {} });

try {
  await client.connect(transport); // initialize -> 401 -> discovery -> token -> retry
  const { tools } = await client.listTools();
  const out = { tools };
  if (toolName) {
    out.toolResult = await client.callTool({ name: toolName, arguments: toolArgsJson ? JSON.parse(toolArgsJson) : {} });
  }
  const t = provider.tokens();
  out.token = t && {
    token_type: t.token_type,
    expires_in: t.expires_in,
    scope: t.scope,
    issuer: t.issuer, // stamped by the SDK: the AS URL used for discovery (not from the wire)
    ...(process.env.PRINT_TOKEN ? { access_token: t.access_token } : {}),
  };
  console.log(JSON.stringify(out, null, 2));
  await client.close();
  process.exit(0);
} catch (err) {
  console.log(JSON.stringify({
    error: err?.constructor?.name ?? String(err),
    message: err?.message,
    code: err?.code,              // StreamableHTTPError: HTTP status
    oauthError: err?.errorCode,   // OAuthError subclasses: e.g. "invalid_client"
  }));
  await client.close().catch(() => {});
  process.exit(1);
}
