/**
 * `npm run bench [-- engine|hotpath|mcp|latency|gateway|controller ...]`: the benchmarks. Each
 * prints one line per figure — name, value, the baseline measured in the same run, and value ÷
 * baseline. No argument runs them all; the controller bench runs only when the test control
 * plane can start, and prints why when it cannot.
 */
import os from 'node:os';
import { printHeader, printInfo } from './report.js';

const SECTIONS = ['engine', 'hotpath', 'mcp', 'latency', 'gateway', 'controller'] as const;
type Section = (typeof SECTIONS)[number];

async function main(argv: string[]): Promise<void> {
  const unknown = argv.filter((a) => !(SECTIONS as readonly string[]).includes(a));
  if (unknown.length > 0) {
    console.error(`unknown section(s): ${unknown.join(', ')}; choose from ${SECTIONS.join(', ')}`);
    process.exit(2);
  }
  const chosen: Section[] = argv.length > 0 ? (argv as Section[]) : [...SECTIONS];
  printInfo(`${new Date().toISOString()}  node ${process.version}  ${process.platform}/${process.arch}  ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'})`);
  printHeader();
  const load = () => os.loadavg().map((l) => l.toFixed(1)).join(' ');
  for (const section of chosen) {
    const started = Date.now();
    // Other work on the machine inflates tails: say how busy it was.
    printInfo(`${section}: load average ${load()} at start`);
    if (section === 'engine') await (await import('./engine.js')).runEngineBench();
    if (section === 'hotpath') await (await import('./hotpath.js')).runHotPathBench();
    if (section === 'mcp') await (await import('./mcp.js')).runMcpBench();
    if (section === 'latency') await (await import('./latency.js')).runLatencyBench();
    if (section === 'gateway') await (await import('./gateway.js')).runGatewayBench();
    if (section === 'controller') await (await import('./controller.js')).runControllerBench();
    printInfo(`${section}: ${((Date.now() - started) / 1000).toFixed(0)} s, load average ${load()} at end`);
  }
}

main(process.argv.slice(2)).then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
