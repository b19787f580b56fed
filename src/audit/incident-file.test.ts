import { execFileSync } from 'node:child_process';
import { appendFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { INCIDENT_LIST_LIMIT, openFileIncidentLog, previousIncidentFile, type IncidentInput } from './incident-file.js';
import { incidentInput } from './incident-fixture.js';

let dir: string;
let path: string;
let logs: string[];
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pg-incidents-'));
  path = join(dir, 'data', 'incidents.jsonl');
  logs = [];
});
afterEach(async () => {
  vi.useRealTimers();
  await rm(dir, { recursive: true, force: true });
});

const open = () => openFileIncidentLog(path, { log: (m) => logs.push(m) });

const incident = (overrides: Partial<IncidentInput> = {}): IncidentInput => incidentInput(overrides);

describe('file incident log', () => {
  it('rotates at maxBytes, keeping the file before, so the disk holds at most about twice that; list reads both', async () => {
    const log = await openFileIncidentLog(path, { log: (m) => logs.push(m), maxBytes: 2_000 });
    const recorded = [];
    for (let i = 0; i < 13; i++) recorded.push(await log.record(incident({ description: `#${i}` })));
    expect(previousIncidentFile(path)).toBe(join(dir, 'data', 'incidents.1.jsonl'));
    expect((await readdir(join(dir, 'data'))).sort()).toEqual(['incidents.1.jsonl', 'incidents.jsonl']);
    for (const file of [path, previousIncidentFile(path)]) expect((await stat(file)).size).toBeLessThan(2_000 + 1_000);
    const listed = await log.list();
    // Newest first, across both files, without a gap; the oldest are gone with the third file.
    expect(listed[0]).toEqual(recorded.at(-1));
    expect(listed.map((i) => i.description)).toEqual(recorded.slice(-listed.length).reverse().map((i) => i.description));
    expect(listed.length).toBeGreaterThan(2);
    expect(listed.length).toBeLessThan(13);
    expect(await log.list(new Date(listed[1]!.timestamp))).toEqual(listed.filter((i) => i.timestamp >= listed[1]!.timestamp));
  });

  it('refuses to open when something other than a regular file is at its path, naming what it is', async () => {
    await mkdir(path, { recursive: true });
    await expect(open()).rejects.toThrow(`the incident log ${path} is a folder, not a regular file: PolicyGuard writes only a regular file there`);
    await rm(path, { recursive: true });
    execFileSync('mkfifo', [path]);
    await expect(open()).rejects.toThrow(`the incident log ${path} is a FIFO, not a regular file`);
    // The rotated file is read by list() too.
    await rm(path);
    await mkdir(previousIncidentFile(path));
    await expect(open()).rejects.toThrow(`the incident log ${previousIncidentFile(path)} is a folder, not a regular file`);
  });

  it('records incidents with ids, redacted evidence and open status, and lists them newest first', async () => {
    const log = await open();
    const first = await log.record(incident());
    const second = await log.record(incident({ severity: 'critical', agent_id: null }));
    expect(first).toMatchObject({
      incident_id: expect.stringMatching(/^inc_[0-9a-f]{12}$/),
      status: 'open',
      resolution: null,
      evidence: { target: 'shell.exec', headers: { Authorization: '[REDACTED]' } },
    });
    expect(await readFile(path, 'utf8')).not.toContain('Bearer abc');
    expect(await log.list()).toEqual([second, first]);
  });

  it('redacts secrets in the free text of the description and recommended action', async () => {
    const log = await open();
    const stored = await log.record(incident({ description: 'leaked token=abc in the logs', recommended_action: 'rotate password: hunter2' }));
    expect(stored).toMatchObject({ description: 'leaked token=[REDACTED] in the logs', recommended_action: 'rotate password: [REDACTED]' });
    expect(await readFile(path, 'utf8')).not.toMatch(/abc in|hunter2/);
  });

  it('keeps incidents across reopen, in order even when record() calls overlap', async () => {
    const log = await open();
    const recorded = await Promise.all(Array.from({ length: 20 }, (_, i) => log.record(incident({ description: `#${i}` }))));
    const reopened = await open();
    expect((await reopened.list()).map((i) => i.description)).toEqual(recorded.map((i) => i.description).reverse());
  });

  it('lists only incidents since a time', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const log = await open();
    vi.setSystemTime(new Date('2026-01-01T00:00:00.000Z'));
    await log.record(incident({ description: 'old' }));
    vi.setSystemTime(new Date('2026-01-03T00:00:00.000Z'));
    await log.record(incident({ description: 'new' }));
    const recent = await log.list(new Date('2026-01-02T00:00:00.000Z'));
    expect(recent.map((i) => i.description)).toEqual(['new']);
  });

  it('repairs a torn last line on open and keeps appending after it', async () => {
    const log = await open();
    await log.record(incident({ description: 'kept' }));
    await appendFile(path, '{"incident_id":"inc_');
    const reopened = await open();
    expect(logs.join()).toMatch(/removed an incomplete last line \(20 bytes/);
    await reopened.record(incident({ description: 'after' }));
    expect((await reopened.list()).map((i) => i.description)).toEqual(['after', 'kept']);
    expect((await readFile(path, 'utf8')).split('\n')).toHaveLength(3);
  });

  it('returns at most the newest 10,000 and skips (and reports) unreadable lines', async () => {
    const log = await open();
    const template = await log.record(incident());
    const lines = Array.from({ length: INCIDENT_LIST_LIMIT + 5 }, (_, i) => JSON.stringify({ ...template, description: `#${i}` }));
    lines.splice(INCIDENT_LIST_LIMIT, 0, 'not json');
    await writeFile(path, `${lines.join('\n')}\n`);
    const listed = await log.list();
    expect(listed).toHaveLength(INCIDENT_LIST_LIMIT);
    expect(listed[0]?.description).toBe(`#${INCIDENT_LIST_LIMIT + 4}`);
    expect(listed.at(-1)?.description).toBe('#5');
    expect(logs.join()).toMatch(/skipped 1 unreadable line/);
  });
});
