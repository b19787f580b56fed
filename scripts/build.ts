// `npm run build`: the server as the image runs it, `dist/policyguard.js` (docs/deploy.md).
//
// One ES module bundle of src/cli/main.ts and the dependencies it imports, made by esbuild after
// `tsc` has type-checked src/. Bundled, the operator holds about 20 MB less RSS and starts in
// about half the time than as the same code compiled file by file and loaded from node_modules
// (docs/performance.md, "Operator memory"): Node keeps the source text of every module it loads,
// and @kubernetes/client-node alone is a thousand files.
//
// - Code splitting: what `import()` loads lazily (tracing, the CLI's other commands) stays in
//   its own chunk under dist/chunks/ and is read only when used.
// - Whitespace and syntax are minified; names are kept, so stack traces and logs name the
//   functions and classes they did. Source maps sit next to each file: run with
//   `NODE_OPTIONS=--enable-source-maps` to get stack traces in src/ lines.
// - CommonJS dependencies `require()` Node's built-ins: each file gets a `require` made with
//   `createRequire`, which an ES module does not have.
// - The image keeps the production node_modules: the dashboard reads uPlot's files from it, and
//   the bundled packages' license files ship with them.
import { rm } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));
const outdir = `${root}dist`;

await rm(outdir, { recursive: true, force: true });
const result = await build({
  absWorkingDir: root,
  entryPoints: { policyguard: 'src/cli/main.ts' },
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  // package.json "engines".
  target: 'node22.19',
  outdir,
  chunkNames: 'chunks/[name]-[hash]',
  minifyWhitespace: true,
  minifySyntax: true,
  sourcemap: 'linked',
  // Maps name src/ lines; the sources themselves are not copied into them (a third of dist/).
  sourcesContent: false,
  banner: { js: "import { createRequire as __policyguardCreateRequire } from 'node:module'; const require = __policyguardCreateRequire(import.meta.url);" },
  logLevel: 'warning',
  metafile: true,
});
const files = Object.entries(result.metafile.outputs).filter(([file]) => file.endsWith('.js'));
const megabytes = files.reduce((n, [, out]) => n + out.bytes, 0) / 1024 / 1024;
process.stdout.write(`built dist/policyguard.js: ${files.length} files, ${megabytes.toFixed(1)} MB of JavaScript\n`);
