// A real MCP client from the official TypeScript SDK, run by fangd's tests
// against POST /mcp. It initializes, lists the tools, calls a built-in and
// a proxied tool, and prints what it saw as one JSON object.
//
// usage: node mcp-client.mjs <url> <api key> <builtin tool> <builtin args json> <proxied tool> <proxied args json>
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, apiKey, builtin, builtinArgs, proxied, proxiedArgs] = process.argv.slice(2);
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${apiKey}` } },
});
const client = new Client({ name: "fangd-test-node-client", version: "1.0.0" });
const text = (res) => (res.content || []).filter((c) => c.type === "text").map((c) => c.text).join("");

try {
  await client.connect(transport);
  const tools = await client.listTools();
  const b = await client.callTool({ name: builtin, arguments: JSON.parse(builtinArgs) });
  const p = await client.callTool({ name: proxied, arguments: JSON.parse(proxiedArgs) });
  const out = {
    sessionId: transport.sessionId ?? null,
    protocolVersion: transport.protocolVersion ?? null,
    server: client.getServerVersion(),
    tools: tools.tools.map((t) => t.name),
    builtin: { text: text(b), isError: !!b.isError },
    proxied: { text: text(p), isError: !!p.isError },
  };
  await transport.terminateSession().catch(() => {});
  await client.close();
  console.log(JSON.stringify(out));
} catch (err) {
  console.log(JSON.stringify({ error: String(err && err.message ? err.message : err) }));
  process.exit(1);
}
