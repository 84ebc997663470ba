// Whether every package of package.json is installed here at its pinned
// version (what `npm ci` makes of package-lock.json). Exit 0 when so; else
// the missing or stale ones are named and the exit status is 1.
// deploy/setup.sh --test runs `npm ci` when this fails; run.sh skips (or,
// with MC_REQUIRE_WEB=1, fails) a test whose packages are missing.
import { readFileSync } from "node:fs";

const here = new URL(".", import.meta.url).pathname;
const want = JSON.parse(readFileSync(here + "package.json", "utf8")).dependencies;
const bad = [];
for (const [name, version] of Object.entries(want)) {
  try {
    const got = JSON.parse(readFileSync(`${here}node_modules/${name}/package.json`, "utf8")).version;
    if (got !== version) bad.push(`${name} ${got} (want ${version})`);
  } catch {
    bad.push(`${name} (missing)`);
  }
}
if (bad.length) {
  console.log(bad.join(", "));
  process.exit(1);
}
