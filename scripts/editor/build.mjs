// npm run build:editor: bundles entry.mjs into static/vendor/tiptap/tiptap.min.js and writes the
// licence of every package that went into it to static/vendor/tiptap/LICENSE.
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const outDir = join(root, "static", "vendor", "tiptap");

const result = await build({
  entryPoints: [join(root, "scripts", "editor", "entry.mjs")],
  outfile: join(outDir, "tiptap.min.js"),
  bundle: true,
  minify: true,
  format: "iife",
  target: "es2020",
  legalComments: "none", // the licences are in LICENSE, written below
  metafile: true,
  logLevel: "info",
});

const packages = new Map();
for (const input of Object.keys(result.metafile.inputs)) {
  const match = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
  if (match && !packages.has(match[1])) {
    packages.set(match[1], join(root, "node_modules", match[1]));
  }
}

const sections = [...packages].sort().map(([name, dir]) => {
  const meta = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  const file = readdirSync(dir).find((entry) => /^licen[cs]e(\.md|\.txt)?$/i.test(entry));
  const text = file ? readFileSync(join(dir, file), "utf8").trim() : `License: ${meta.license}`;
  return `${name} ${meta.version} (${meta.license})\n\n${text}\n`;
});
writeFileSync(
  join(outDir, "LICENSE"),
  "static/vendor/tiptap/tiptap.min.js bundles the following packages (npm run build:editor).\n\n" +
    sections.join("\n" + "-".repeat(72) + "\n\n"),
);
console.log(`${packages.size} packages, licences in ${join(outDir, "LICENSE")}`);
