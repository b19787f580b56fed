/**
 * When GuardAgents were first seen (`first-seen.json`), standalone's creation time: it decides
 * which of two claiming one id keeps it (docs/decisions.md, "Identity").
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PolicySnapshot } from '../engine/snapshot.js';
import { createLogger, silentLogger } from '../log.js';
import { loadManifestDir, StandaloneStore } from './standalone.js';

const agent = (name: string, trustLevel: string, meta = '') => `apiVersion: policyguard.dev/v1alpha1
kind: GuardAgent
metadata: {name: ${name}${meta}}
spec: {agentId: bot, trustLevel: ${trustLevel}}
`;

let root: string;
afterEach(() => rm(root, { recursive: true, force: true }));

async function folders(firstSeen: string | undefined): Promise<{ configDir: string; dataDir: string }> {
  root = await mkdtemp(join(tmpdir(), 'policyguard-first-seen-'));
  const configDir = join(root, 'config');
  const dataDir = join(root, 'data');
  await mkdir(configDir);
  await mkdir(dataDir);
  await writeFile(join(configDir, 'zz-bot.yaml'), agent('zz-bot', 'low'));
  if (firstSeen !== undefined) await writeFile(join(dataDir, 'first-seen.json'), firstSeen);
  return { configDir, dataDir };
}

const ENGINE = { defaultDecision: 'allow', unknownAgentTrust: 'low', clusterPolicyNamespace: null } as const;
const open = (dirs: { configDir: string; dataDir: string }) =>
  StandaloneStore.open({ ...dirs, log: silentLogger, engine: ENGINE, watch: false, rescanIntervalMs: 0 });

describe('first-seen.json', () => {
  it("keeps an agent's time while its file cannot be read as a whole (merge-conflict markers at a restart, a file moved away), so a newcomer never becomes the older", async () => {
    const dirs = await folders(undefined);
    let store = await open(dirs);
    await writeFile(join(dirs.configDir, 'a-bot.yaml'), agent('a-bot', 'admin'));
    await store.reload();
    await store.reload();
    expect(store.snapshot().agent('bot')).toMatchObject({ name: 'zz-bot', trust: 'low' });
    await store.close();
    // Restarted while zz-bot's file names no object at all.
    await writeFile(join(dirs.configDir, 'zz-bot.yaml'), `<<<<<<< HEAD\n${agent('zz-bot', 'low')}=======\n>>>>>>> other\n`);
    store = await open(dirs);
    await store.close();
    // Fixed, and also after it was gone for a while: zz-bot is still the older.
    await writeFile(join(dirs.configDir, 'zz-bot.yaml'), agent('zz-bot', 'low'));
    store = await open(dirs);
    try {
      expect(store.snapshot().agent('bot')).toMatchObject({ name: 'zz-bot', trust: 'low' });
      await rm(join(dirs.configDir, 'zz-bot.yaml'));
      await store.reload();
      await store.reload();
      await writeFile(join(dirs.configDir, 'zz-bot.yaml'), agent('zz-bot', 'low'));
      await store.reload();
      await store.reload();
      expect(store.snapshot().agent('bot')).toMatchObject({ name: 'zz-bot', trust: 'low' });
    } finally {
      await store.close();
    }
  });

  it('a GuardAgent added after a clock stepped back is still the newer one', async () => {
    const dirs = await folders(JSON.stringify({ 'GuardAgent//zz-bot': '2999-01-01T00:00:00.000Z' }));
    const store = await open(dirs);
    try {
      await writeFile(join(dirs.configDir, 'a-bot.yaml'), agent('a-bot', 'admin'));
      await store.reload(); // seen once
      await store.reload(); // the same again: taken in
      expect(store.snapshot().agent('bot')).toMatchObject({ name: 'zz-bot', trust: 'low' });
      expect(store.problems()).toEqual([expect.stringMatching(/a-bot\.yaml:\d+: GuardAgent a-bot: Conflict: agentId "bot" is already claimed by GuardAgent zz-bot$/)]);
    } finally {
      await store.close();
    }
  });

  it('is where the creation time of a GuardAgent stays: one written through MCP (register_agent) carries none in its manifest', async () => {
    const store = await open(await folders(undefined));
    try {
      const source = store.snapshot().agent('bot')!.source;
      expect(source.metadata.creationTimestamp).toMatch(/^\d{4}-\d\d-\d\dT/);
      const { location } = await store.applyAgent(source, 'update');
      expect(await readFile(location, 'utf8')).not.toMatch(/creationTimestamp/);
    } finally {
      await store.close();
    }
  });

  it('one that cannot be written is logged at ERROR, saying what a restart risks; the change is in force all the same', async () => {
    const dirs = await folders(undefined);
    const lines: string[] = [];
    const store = await StandaloneStore.open({ ...dirs, log: createLogger('error', (l) => lines.push(l)), engine: ENGINE, watch: false, rescanIntervalMs: 0 });
    try {
      await rm(join(dirs.dataDir, 'first-seen.json'));
      await mkdir(join(dirs.dataDir, 'first-seen.json')); // renaming a file over a folder fails
      await writeFile(join(dirs.configDir, 'other.yaml'), agent('other', 'low').replace('agentId: bot', 'agentId: other'));
      await store.reload();
      await store.reload();
      expect(store.snapshot().agent('other')).toBeDefined();
      expect(lines).toEqual([expect.stringMatching(/first-seen\.json could not be written; after a restart, namespace\/name decides between GuardAgents claiming one id that are first seen together/)]);
    } finally {
      await store.close();
    }
  });

  it.each([
    ['not JSON', '{', /first-seen\.json is not valid JSON \(.*\); fix or remove it/],
    ['not a time', JSON.stringify({ 'GuardAgent//zz-bot': 'yesterday' }), /first-seen\.json is not a map of ISO times \(GuardAgent\/\/zz-bot: .*\); fix or remove it/],
  ])('one that is %s stops the start, saying what to do', async (_what, text, message) => {
    await expect(open(await folders(text))).rejects.toThrow(message);
  });
});

describe('policyguard check (loadManifestDir)', () => {
  it('orders GuardAgents claiming one id as serve does at a start without history: by namespace/name, whatever creationTimestamp they carry', async () => {
    const { configDir } = await folders(undefined);
    await writeFile(join(configDir, 'zz-bot.yaml'), agent('zz-bot', 'low', ', creationTimestamp: "2000-01-01T00:00:00Z"'));
    await writeFile(join(configDir, 'a-bot.yaml'), agent('a-bot', 'admin', ', creationTimestamp: "2024-01-01T00:00:00Z"'));
    const { agents, policies } = await loadManifestDir(configDir);
    expect(PolicySnapshot.compile({ agents, policies }, ENGINE).agent('bot')).toMatchObject({ name: 'a-bot', trust: 'admin' });
  });
});
