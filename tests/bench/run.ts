/**
 * `npm run bench [-- engine|mcp|controller ...]`: the benchmarks of issue 7. Each prints one
 * line per figure — name, value, the baseline measured in the same run, and value ÷ baseline.
 * No argument runs all three; the controller bench runs only when the test control plane can
 * start, and prints why when it cannot.
 */
import { printHeader, printInfo } from './report.js';

const SECTIONS = ['engine'] as const;
type Section = (typeof SECTIONS)[number];

async function main(argv: string[]): Promise<void> {
  const unknown = argv.filter((a) => !(SECTIONS as readonly string[]).includes(a));
  if (unknown.length > 0) {
    console.error(`unknown section(s): ${unknown.join(', ')}; choose from ${SECTIONS.join(', ')}`);
    process.exit(2);
  }
  const chosen: Section[] = argv.length > 0 ? (argv as Section[]) : [...SECTIONS];
  printInfo(`${new Date().toISOString()}  node ${process.version}  ${process.platform}/${process.arch}  ${(await import('node:os')).cpus().length} CPUs (${(await import('node:os')).cpus()[0]?.model ?? '?'})`);
  printHeader();
  for (const section of chosen) {
    const started = Date.now();
    if (section === 'engine') await (await import('./engine.js')).runEngineBench();
    printInfo(`${section}: ${((Date.now() - started) / 1000).toFixed(0)} s`);
  }
}

main(process.argv.slice(2)).then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
