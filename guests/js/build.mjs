// Builds a JavaScript pipeline into a sluice component:
//   node guests/js/build.mjs my_filter.js [out.wasm]
// Needs `npm install` in guests/js first (@bytecodealliance/componentize-js).
import { readFile, writeFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { componentize } from "@bytecodealliance/componentize-js";

const here = dirname(fileURLToPath(import.meta.url));
const [source, out = basename(source, ".js") + ".wasm"] = process.argv.slice(2);
if (!source) {
  console.error("usage: node build.mjs PIPELINE.js [OUT.wasm]");
  process.exit(2);
}
// One module: the kit, then the pipeline without its import of the kit.
const kit = await readFile(join(here, "kit", "sluice_pipeline.js"), "utf8");
const own = (await readFile(source, "utf8")).replace(/^import\s*\{[^}]*\}\s*from\s*["']sluice_pipeline["'];?\s*$/m, "");
const work = await mkdtemp(join(tmpdir(), "sluice-js-"));
try {
  const app = join(work, "app.js");
  await writeFile(app, `${kit}\n${own}`);
  const { component } = await componentize({
    sourcePath: app,
    witPath: resolve(here, "..", "..", "wit"),
    worldName: "pipeline",
    disableFeatures: ["stdio", "random", "clocks", "http", "fetch-event"],
  });
  await writeFile(out, component);
  console.log(`built ${out} (${component.length} bytes)`);
} finally {
  await rm(work, { recursive: true, force: true });
}
