/**
 * Audit reads (get_audit_log, get_compliance_status, the dashboard) share a small limit of
 * reads running and waiting (src/mcp/tools.ts); one caller may hold only a few of them, so a
 * caller that keeps asking cannot leave everyone else refused.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSampleTools, type SampleTools } from './sample-tools-fixture.js';
import type { CallContext } from './tools.js';

let sample: SampleTools;
beforeAll(async () => {
  sample = await openSampleTools(await mkdtemp(join(tmpdir(), 'policyguard-tools-reads-')));
});
afterAll(() => sample?.close());

const as = (subject: string): CallContext => ({ principal: { subject, groups: [] } });

describe('audit reads under the read limit', () => {
  it("one caller's reads beyond its share are refused, naming it; another caller's read still waits its turn and is answered", async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const blocked = async () => {
      await gate;
      return { ok: true as const, value: 'read' };
    };
    const greedy = Array.from({ length: 20 }, () => sample.tools.readAudit(as('token:greedy'), blocked));
    const other = sample.tools.readAudit(as('token:admin'), async () => ({ ok: true as const, value: 'admin read' }));
    release();
    const answers = await Promise.all(greedy);
    expect(answers.filter((a) => a.ok)).toHaveLength(2);
    expect(answers.filter((a) => !a.ok).map((a) => !a.ok && a.error)).toEqual(Array(18).fill("caller 'token:greedy' has 2 audit queries running or waiting already; retry once they are answered"));
    expect(await other).toEqual({ ok: true, value: 'admin read' });
    // Its share is back once they are answered.
    expect(await sample.tools.readAudit(as('token:greedy'), blocked)).toEqual({ ok: true, value: 'read' });
  });

  it('under --auth none every caller is "anonymous": they share no per-caller limit, only the server\'s', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const reads = Array.from({ length: 5 }, () => sample.tools.readAudit(as('anonymous'), async () => (await gate, { ok: true as const, value: 'read' })));
    release();
    expect((await Promise.all(reads)).every((r) => r.ok)).toBe(true);
  });
});
