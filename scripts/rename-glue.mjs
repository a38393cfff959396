// Applies wasm-opt's import and export renaming to the wasm-bindgen glue.
//
//   node scripts/rename-glue.mjs <glue.js> <mapping.json> <renamed.wasm>
//
// `wasm-opt --minify-imports-and-exports-and-modules` gives every import, export and import
// module of the module a name of a letter or two, and prints the mapping as JSON:
// {"imports": [[module, name, new name], …], "exports": [[name, new name], …]}. The glue
// names them too: imports as the members of the object it hands to the module, exports as
// members of `wasm`. This rewrites those, and only those, in place. wasm-bindgen's names
// carry a 16-digit hash each and appear in both files, so this saves about 8 KB of the
// download before compression.
//
// Every rename must find its name where it expects it, or the script fails: a
// new wasm-bindgen that writes the glue differently stops the build rather than
// producing glue that no longer matches the module.
import { readFileSync, writeFileSync } from 'node:fs';

const [gluePath, mappingPath, wasmPath] = process.argv.slice(2);
if (!gluePath || !mappingPath || !wasmPath) {
  console.error('usage: rename-glue.mjs <glue.js> <mapping.json> <renamed.wasm>');
  process.exit(2);
}

let glue = readFileSync(gluePath, 'utf8');
const mapping = JSON.parse(readFileSync(mappingPath, 'utf8'));

const escape = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Replaces every match of `pattern` with `replacement`; fails unless there is one. */
function rename(pattern, replacement, what) {
  let found = 0;
  glue = glue.replace(pattern, () => {
    found += 1;
    return replacement;
  });
  if (found === 0) {
    console.error(`rename-glue: ${what} not found in ${gluePath}`);
    process.exit(1);
  }
}

// The renamed module tells which module each renamed import is now in.
const renamedImports = WebAssembly.Module.imports(new WebAssembly.Module(readFileSync(wasmPath)));
const moduleOf = new Map(renamedImports.map((entry) => [entry.name, entry.module]));
const modules = new Map();
for (const [module, name, renamed] of mapping.imports) {
  // An import is a member `name: function(…)` of the object the glue passes as `module`.
  rename(new RegExp(`(?<=^\\s*)${escape(name)}(?=: function\\b)`, 'gm'), renamed, `import ${name}`);
  modules.set(module, moduleOf.get(renamed));
}
for (const [name, renamed] of mapping.exports) {
  // Some exports are only for wasm-bindgen's own tooling; the glue never names them.
  if (!glue.includes(name)) continue;
  rename(new RegExp(`\\bwasm\\.${escape(name)}\\b`, 'g'), `wasm.${renamed}`, `export ${name}`);
}
for (const [module, renamed] of modules) {
  rename(new RegExp(`(?<=^\\s*)${escape(JSON.stringify(module))}(?=: )`, 'gm'),
    JSON.stringify(renamed), `import module ${module}`);
}

writeFileSync(gluePath, glue);
