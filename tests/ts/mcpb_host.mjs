// What Claude Desktop does with a bundle's manifest when it starts the server: the MCPB
// toolchain's own getMcpConfigForManifest (defaults, then the person's values, booleans as
// "true"/"false", ${__dirname}, the platform's override). For test_backlog_mcp.py:
//   node mcpb_host.mjs BUNDLE_DIR '{"base_url": "...", ...}' [PLATFORM]
import { readFileSync } from "node:fs";
import { join, sep } from "node:path";
import { getMcpConfigForManifest } from "@anthropic-ai/mcpb";

const [dir, userConfig, platform] = process.argv.slice(2);
if (platform) Object.defineProperty(process, "platform", { value: platform });
const manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
const config = await getMcpConfigForManifest({
  manifest, extensionPath: dir, userConfig: JSON.parse(userConfig), pathSeparator: sep,
  systemDirs: { HOME: "/home/user", DESKTOP: "/home/user/Desktop",
                DOCUMENTS: "/home/user/Documents", DOWNLOADS: "/home/user/Downloads" },
});
process.stdout.write(JSON.stringify(config ?? null) + "\n");
