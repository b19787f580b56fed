import { PerformanceObserver, constants } from 'node:perf_hooks';
import { afterEach, describe, expect, it, vi } from 'vitest';

afterEach(() => {
  vi.doUnmock('node:vm');
  vi.resetModules();
});

describe('releaseMemory', () => {
  it('runs a full (major) garbage collection each time it is called, and says how long it took', async () => {
    const { releaseMemory } = await import('./memory.js');
    const kinds: number[] = [];
    const observer = new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) kinds.push((entry as unknown as { detail: { kind: number } }).detail.kind);
    });
    observer.observe({ entryTypes: ['gc'] });
    const results = [releaseMemory(), releaseMemory()];
    await new Promise((r) => setTimeout(r, 50));
    observer.disconnect();
    expect(kinds.filter((k) => k === constants.NODE_PERFORMANCE_GC_MAJOR).length).toBeGreaterThanOrEqual(2);
    for (const r of results) expect(r).toEqual({ ms: expect.any(Number) });
  });

  it('does not throw when the collection cannot run: it says why', async () => {
    // A Node where V8's gc() cannot be reached from a new context.
    vi.doMock('node:vm', () => ({ runInNewContext: () => { throw new ReferenceError('gc is not defined'); } }));
    const { releaseMemory } = await import('./memory.js');
    expect(releaseMemory()).toEqual({ error: 'ReferenceError: gc is not defined' });
  });
});
