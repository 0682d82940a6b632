// Records what the shipped bundle was built from: a hash of every source file under ui/ (node_modules aside)
// and the hash of every file written to the output. tests/e2e/ui/test_bundle.py recomputes both, so a source
// edited without `npm run build`, or a built file edited by hand, fails the test suite.
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";

const UI = fileURLToPath(new URL("..", import.meta.url));
const OUT = join(UI, "..", "app", "morphserve", "api", "ui_static");
const SKIP = new Set(["node_modules", "dist"]);

function files(root, dir = root) {
  const found = [];
  for (const name of readdirSync(dir)) {
    if (SKIP.has(name) || name.startsWith(".")) continue;
    const path = join(dir, name);
    if (statSync(path).isDirectory()) found.push(...files(root, path));
    else found.push(relative(root, path).split(sep).join("/"));
  }
  return found.sort();
}

const sha = (data) => createHash("sha256").update(data).digest("hex");
/** sha256 over "<path>\n<sha256 of its bytes>\n" for each file in sorted order (the test does the same). */
function treeHash(root, names) {
  const h = createHash("sha256");
  for (const name of names) h.update(`${name}\n${sha(readFileSync(join(root, name)))}\n`);
  return h.digest("hex");
}

const sources = files(UI);
const outputs = files(OUT).filter((n) => n !== "build-info.json");
const info = {
  source_sha256: treeHash(UI, sources),
  sources: sources.length,
  outputs: Object.fromEntries(outputs.map((n) => [n, sha(readFileSync(join(OUT, n)))])),
  node: process.version,
};
writeFileSync(join(OUT, "build-info.json"), JSON.stringify(info, null, 2) + "\n");
console.log(`build-info.json: ${sources.length} sources, ${outputs.length} outputs, ${info.source_sha256.slice(0, 12)}`);
