import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { imageEnvironment } from './image.js';

describe('imageEnvironment (the benches run the bundle with the Dockerfile’s ENV)', () => {
  it('reads the repository’s Dockerfile: production mode, two malloc arenas, and a young generation sized for a busy server', () => {
    const env = imageEnvironment(readFileSync(new URL('../../Dockerfile', import.meta.url), 'utf8'));
    expect(env.NODE_ENV).toBe('production');
    expect(env.MALLOC_ARENA_MAX).toBe('2');
    expect(env.NODE_OPTIONS).toMatch(/(^|\s)--max-semi-space-size=\d+(\s|$)/);
  });

  it('takes only the last stage, joins continued lines, and unquotes values', () => {
    const dockerfile = ['FROM node AS build', 'ENV BUILD_ONLY=1', 'FROM node AS runtime', 'ENV A=1 \\', '# a comment inside the instruction', '    B="x \\"y\\" z"', 'RUN true', 'ENV C='].join('\n');
    expect(imageEnvironment(dockerfile)).toEqual({ A: '1', B: 'x "y" z', C: '' });
  });

  it('refuses what it cannot read, saying where', () => {
    expect(() => imageEnvironment('ENV A=1')).toThrow('the Dockerfile has no FROM line');
    expect(() => imageEnvironment('FROM node\nENV NODE_ENV production')).toThrow(/`ENV NODE_ENV production` is not in KEY=value form from "NODE_ENV production"/);
  });
});
