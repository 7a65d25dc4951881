// Connect to the server with the official TypeScript SDK 1.x client, list tools, call one,
// list prompts and resource templates.
// usage: node client.mjs COMMAND [ARG ...]   (BACKLOG_* come from the environment); prints JSON.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const [command, ...args] = process.argv.slice(2);
const started = Date.now();
const transport = new StdioClientTransport({ command, args, env: process.env, stderr: "ignore" });
const client = new Client({ name: "ts-sdk-1", version: "1.0.0" });
await client.connect(transport);
const connectedMs = Date.now() - started;
const tools = await client.listTools();
const result = await client.callTool({ name: "issue_details_get",
                                       arguments: { issue_id_or_key: "DEMO-42" } });
const failed = await client.callTool({ name: "issue_details_get",
                                       arguments: { issue_id_or_key: "../x" } });
const prompts = await client.listPrompts();
const templates = await client.listResourceTemplates();
console.log(JSON.stringify({
  connectedMs, version: client.getServerVersion(), tools: tools.tools.map((t) => t.name),
  nextCursor: tools.nextCursor ?? null, result, failed,
  prompts: prompts.prompts.map((p) => p.name),
  templates: templates.resourceTemplates.map((t) => t.uriTemplate),
}));
await client.close();
