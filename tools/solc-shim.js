#!/usr/bin/env node
// A `solc` command-line front end over solc-js (the official compiler built to wasm).
//
// No native solc can be installed on the machines this project targets, and py-solc-x
// cannot download one, so tools/setup.sh installs this script as py-solc-x's
// `~/.solcx/solc-vX.Y.Z`. It implements the three calls py-solc-x and brownie make:
//   solc --version
//   solc --standard-json [--allow-paths P] [--base-path P]     (JSON on stdin)
//   solc --combined-json abi[,...] [--allow-paths P] -         (source on stdin)
// Imports are resolved from --base-path, --include-path and --allow-paths, in that order.
"use strict";

const fs = require("fs");
const path = require("path");
const solc = require("solc");

const args = process.argv.slice(2);

function optionValues(name) {
  const values = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === name && i + 1 < args.length) values.push(args[i + 1]);
    else if (args[i].startsWith(name + "=")) values.push(args[i].slice(name.length + 1));
  }
  return values.flatMap((v) => v.split(",")).filter(Boolean);
}

const searchRoots = [
  ...optionValues("--base-path"),
  ...optionValues("--include-path"),
  ...optionValues("--allow-paths"),
  process.cwd(),
];

function findImports(importPath) {
  const candidates = path.isAbsolute(importPath)
    ? [importPath]
    : searchRoots.map((root) => path.resolve(root, importPath));
  for (const candidate of candidates) {
    if (fs.existsSync(candidate) && fs.statSync(candidate).isFile()) {
      return { contents: fs.readFileSync(candidate, "utf8") };
    }
  }
  return { error: `File not found: ${importPath} (searched ${searchRoots.join(", ")})` };
}

function readStdin() {
  return fs.readFileSync(0, "utf8");
}

function compileStandard(inputText) {
  return solc.compile(inputText, { import: findImports });
}

function versionText() {
  // Same shape as native solc, which py-solc-x parses with a regex.
  return `solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`;
}

function combinedJson(outputs) {
  const sourceName = "<stdin>";
  const selection = outputs.map((o) => (o === "bin" ? "evm.bytecode.object" : o));
  const input = {
    language: "Solidity",
    sources: { [sourceName]: { content: readStdin() } },
    settings: { outputSelection: { "*": { "*": selection } } },
  };
  const output = JSON.parse(compileStandard(JSON.stringify(input)));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  if (errors.length) {
    process.stderr.write(errors.map((e) => e.formattedMessage).join("\n"));
    process.exit(1);
  }
  const contracts = {};
  for (const [file, byName] of Object.entries(output.contracts || {})) {
    for (const [name, c] of Object.entries(byName)) {
      const entry = {};
      for (const o of outputs) {
        entry[o] = o === "bin" ? c.evm.bytecode.object : c[o];
      }
      contracts[`${file}:${name}`] = entry;
    }
  }
  return JSON.stringify({ contracts, version: solc.version() });
}

function main() {
  if (args.includes("--version")) {
    process.stdout.write(versionText());
    return;
  }
  if (args.includes("--standard-json")) {
    process.stdout.write(compileStandard(readStdin()));
    return;
  }
  const combined = optionValues("--combined-json");
  if (combined.length) {
    process.stdout.write(combinedJson(combined));
    return;
  }
  process.stderr.write(
    "solc-shim: only --version, --standard-json and --combined-json (source on stdin) are supported\n"
  );
  process.exit(2);
}

main();
