// The kit's size as a browser downloads it compressed: gzip level 9, under a 5 KB budget.
// `node clients/js/size.mjs` (tests/browser/test_web_kit.py checks the same).
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const source = readFileSync(new URL("./shop-recs.js", import.meta.url));
const gzipped = gzipSync(source, { level: 9 }).length;
const budget = 5 * 1024;
console.log(`shop-recs.js: ${source.length} bytes, ${gzipped} gzipped (level 9), budget ${budget}`);
process.exitCode = gzipped < budget ? 0 : 1;
