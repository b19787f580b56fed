import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { readImage } from './image.js';

describe('readImage (the benches start the bundle as the Dockerfile does)', () => {
  it('reads the repository’s Dockerfile: production mode, two malloc arenas, a young generation and node flags for a busy server', () => {
    const { env, nodeFlags } = readImage(readFileSync(new URL('../../Dockerfile', import.meta.url), 'utf8'));
    expect(env.NODE_ENV).toBe('production');
    expect(env.MALLOC_ARENA_MAX).toBe('2');
    expect(env.NODE_OPTIONS).toMatch(/(^|\s)--max-semi-space-size=\d+(\s|$)/);
    expect(nodeFlags).toEqual(['--no-memory-reducer']);
  });

  it('takes only the last stage, joins continued lines, unquotes values, and takes the flags between node and the script', () => {
    const dockerfile = [
      'FROM node AS build',
      'ENV BUILD_ONLY=1',
      'ENTRYPOINT ["node", "--build-only", "b.js"]',
      'FROM node AS runtime',
      'ENV A=1 \\',
      '# a comment inside the instruction',
      '    B="x \\"y\\" z"',
      'RUN true',
      'ENV C=',
      'ENTRYPOINT ["node", "--a", "--b=1", "/app/main.js"]',
    ].join('\n');
    expect(readImage(dockerfile)).toEqual({ env: { A: '1', B: 'x "y" z', C: '' }, nodeFlags: ['--a', '--b=1'] });
    expect(readImage('FROM node\nENTRYPOINT ["node", "/app/main.js"]').nodeFlags).toEqual([]);
  });

  it('refuses what it cannot read, saying where', () => {
    const entry = 'ENTRYPOINT ["node", "/app/main.js"]';
    expect(() => readImage(`ENV A=1\n${entry}`)).toThrow('the Dockerfile has no FROM line');
    expect(() => readImage(`FROM node\nENV NODE_ENV production\n${entry}`)).toThrow(/`ENV NODE_ENV production` is not in KEY=value form from "NODE_ENV production"/);
    expect(() => readImage('FROM node\nENTRYPOINT node /app/main.js')).toThrow(/needs an ENTRYPOINT \["node", …flags, "<script>"\] \(exec form\), not `node \/app\/main.js`/);
    expect(() => readImage('FROM node')).toThrow(/needs an ENTRYPOINT .* not none/);
  });
});
