import { readFile } from 'node:fs/promises';
import { expect, it } from 'vitest';
import { VERSION } from './version.js';

const pkg = async () => JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string; engines: { node: string } };

it('VERSION is package.json version', async () => {
  expect(VERSION).toBe((await pkg()).version);
});

it('the README states the Node versions package.json engines allows (npm warns EBADENGINE outside them)', async () => {
  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
  expect((await pkg()).engines.node).toBe('^22.19.0 || ^24.0.0');
  expect(readme).toContain('Needs Node.js 22.19+ or 24 with npm (what `engines` in package.json says)');
});
