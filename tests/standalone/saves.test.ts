/**
 * Every way of saving a manifest takes effect, on real files, with the periodic rescan OFF so
 * each test proves the folder watch did it; one test proves the rescan does it without a watch.
 * Each waits with a generous bound and prints the latency it saw (docs/decisions.md).
 */
import { execFileSync } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { TrustLevel } from '../../src/api/schemas.js';
import { createLogger } from '../../src/log.js';
import { StandaloneStore } from '../../src/store/standalone.js';
import { ConfigMapVolume } from './configmap-volume.js';
import { eventually } from './eventually.js';

const agent = (name: string, trust: TrustLevel) => `apiVersion: policyguard.dev/v1alpha1
kind: GuardAgent
metadata: {name: ${name}}
spec:
  trustLevel: ${trust}
`;

interface Fixture {
  store: StandaloneStore;
  configDir: string;
  dataDir: string;
  /** Log lines written so far. */
  lines: string[];
}

let fixture: Fixture | undefined;
const roots: string[] = [];
afterEach(async () => {
  await fixture?.store.close();
  fixture = undefined;
  for (const root of roots.splice(0)) await rm(root, { recursive: true, force: true });
});

/** A store over a config dir holding `files`; rescan OFF unless asked for. */
async function open(files: Record<string, string>, opts: { watch?: boolean; rescanIntervalMs?: number; debounceMs?: number } = {}): Promise<Fixture> {
  const root = await mkdtemp(join(tmpdir(), 'policyguard-saves-'));
  roots.push(root);
  const configDir = join(root, 'config');
  const dataDir = join(root, 'data');
  for (const [rel, text] of Object.entries(files)) {
    await mkdir(join(configDir, rel, '..'), { recursive: true });
    await writeFile(join(configDir, rel), text);
  }
  await mkdir(configDir, { recursive: true });
  const lines: string[] = [];
  const store = await StandaloneStore.open({
    configDir,
    dataDir,
    engine: { defaultDecision: 'allow', unknownAgentTrust: 'low', clusterPolicyNamespace: null },
    log: createLogger('info', (l) => lines.push(l)),
    rescanIntervalMs: opts.rescanIntervalMs ?? 0,
    ...(opts.watch === undefined ? {} : { watch: opts.watch }),
    ...(opts.debounceMs === undefined ? {} : { debounceMs: opts.debounceMs }),
  });
  fixture = { store, configDir, dataDir, lines };
  return fixture;
}

/** Wait until agent `id` has `trust` (undefined: no GuardAgent claims it) and print how long it took. */
async function trustBecomes(f: Fixture, id: string, trust: TrustLevel | undefined, what: string): Promise<void> {
  const t0 = performance.now();
  await eventually(async () => f.store.snapshot().agent(id)?.trust, (t) => t === trust, what);
  console.log(`${what}: took effect after ${Math.round(performance.now() - t0)} ms`);
}

const sed = (expr: string, file: string) => execFileSync('sed', ['-i', expr, file]);

describe('every way of saving takes effect (periodic rescan off)', () => {
  it('write in place', async () => {
    const f = await open({ 'agents.yaml': agent('boss', 'admin') });
    expect(f.store.snapshot().agent('boss')?.trust).toBe('admin');
    await writeFile(join(f.configDir, 'agents.yaml'), agent('boss', 'low'));
    await trustBecomes(f, 'boss', 'low', 'write in place: admin revoked');
    expect(f.lines.some((l) => /INFO +manifest loaded file=\S*agents\.yaml objects=1/.test(l))).toBe(true);
  });

  it('rename over (write a temporary file, rename it), then rm', async () => {
    const f = await open({ 'agents.yaml': agent('boss', 'admin') });
    const file = join(f.configDir, 'agents.yaml');
    await writeFile(`${file}.tmp`, agent('boss', 'low'));
    await rename(`${file}.tmp`, file);
    await trustBecomes(f, 'boss', 'low', 'rename over: admin revoked');
    await rm(file);
    await trustBecomes(f, 'boss', undefined, 'rm after rename: agent gone');
    expect(f.lines.some((l) => /INFO +manifest removed file=\S*agents\.yaml objects=1/.test(l))).toBe(true);
  });

  it('sed -i again and again on the same file, then rm', async () => {
    const f = await open({ 'agents.yaml': agent('boss', 'admin') });
    const file = join(f.configDir, 'agents.yaml');
    sed('s/admin/high/', file);
    await trustBecomes(f, 'boss', 'high', 'first sed -i');
    sed('s/high/medium/', file);
    await trustBecomes(f, 'boss', 'medium', 'second sed -i');
    sed('s/medium/low/', file);
    await trustBecomes(f, 'boss', 'low', 'third sed -i');
    await rm(file);
    await trustBecomes(f, 'boss', undefined, 'rm after sed -i: agent gone');
  });

  it('a new subfolder with a manifest, and files added to it later', async () => {
    const f = await open({});
    const team = join(f.configDir, 'team');
    await mkdir(team);
    await writeFile(join(team, 'a.yaml'), agent('a', 'admin'));
    await trustBecomes(f, 'a', 'admin', 'a manifest in a new subfolder');
    await writeFile(join(team, 'b.yaml'), agent('b', 'admin'));
    await trustBecomes(f, 'b', 'admin', 'a file added later to the new subfolder');
    sed('s/admin/low/', join(team, 'b.yaml'));
    await trustBecomes(f, 'b', 'low', 'sed -i in the new subfolder');
  });

  it('a file in a subfolder', async () => {
    const f = await open({ 'teams/data/agents.yaml': agent('boss', 'admin') });
    const file = join(f.configDir, 'teams/data/agents.yaml');
    sed('s/admin/low/', file);
    await trustBecomes(f, 'boss', 'low', 'sed -i in a subfolder');
    await rm(file);
    await trustBecomes(f, 'boss', undefined, 'rm in a subfolder');
  });

  it("a Kubernetes ConfigMap volume's symlink swap, twice, then a key removed", async () => {
    const f = await open({});
    const volume = new ConfigMapVolume(join(f.configDir, 'agents-cm'));
    await volume.write({ 'agents.yaml': agent('boss', 'admin') });
    await trustBecomes(f, 'boss', 'admin', 'ConfigMap volume mounted');
    await volume.write({ 'agents.yaml': agent('boss', 'low') });
    await trustBecomes(f, 'boss', 'low', 'first ConfigMap swap');
    // The file the user knows (a symlink) is the one read and named in the log.
    const loaded = f.lines.filter((l) => /manifest loaded/.test(l));
    expect(loaded).toEqual(loaded.map(() => expect.stringMatching(/manifest loaded file=\S*\/agents-cm\/agents\.yaml objects=1$/)));
    expect(loaded).toHaveLength(2);
    await volume.write({ 'agents.yaml': agent('boss', 'medium') });
    await trustBecomes(f, 'boss', 'medium', 'second ConfigMap swap');
    await volume.write({ 'other.yaml': agent('other', 'low') });
    await trustBecomes(f, 'boss', undefined, 'key removed from the ConfigMap');
    // The hidden ..data and ..2026_… folders are not read: no object is ever seen twice.
    expect(f.lines.filter((l) => /defined twice|\.\.2026|\.\.data/.test(l))).toEqual([]);
    expect(f.store.problems()).toEqual([]);
  });

  it('a symlink to a file in another folder, and edits of that file', async () => {
    const f = await open({});
    const elsewhere = join(f.configDir, '..', 'elsewhere');
    await mkdir(elsewhere);
    await writeFile(join(elsewhere, 'agents.yaml'), agent('boss', 'admin'));
    await symlink(join(elsewhere, 'agents.yaml'), join(f.configDir, 'agents.yaml'));
    await trustBecomes(f, 'boss', 'admin', 'a symlink to a file elsewhere');
    sed('s/admin/low/', join(elsewhere, 'agents.yaml'));
    await trustBecomes(f, 'boss', 'low', 'sed -i on the target of the symlink');
  });

  it("the data dir's manifests/ folder", async () => {
    const f = await open({});
    const file = join(f.dataDir, 'manifests', 'guardagents', 'boss.yaml');
    await mkdir(join(file, '..'), { recursive: true });
    await writeFile(file, agent('boss', 'admin'));
    await trustBecomes(f, 'boss', 'admin', 'a manifest written into data/manifests');
    sed('s/admin/low/', file);
    await trustBecomes(f, 'boss', 'low', 'sed -i in data/manifests');
    await rm(file);
    await trustBecomes(f, 'boss', undefined, 'rm in data/manifests');
  });
});

describe('safety nets and broken files', () => {
  it('without a watch, the periodic rescan picks up the change', async () => {
    const f = await open({ 'agents.yaml': agent('boss', 'admin') }, { watch: false, rescanIntervalMs: 200 });
    sed('s/admin/low/', join(f.configDir, 'agents.yaml'));
    await trustBecomes(f, 'boss', 'low', 'periodic rescan (200 ms), no watch');
  });

  it('a file that stops parsing keeps its last good objects, logged at ERROR with file:line', async () => {
    const f = await open({ 'agents.yaml': agent('boss', 'admin') });
    const file = join(f.configDir, 'agents.yaml');
    sed('s/admin/godlike/', file);
    await eventually(async () => f.lines.filter((l) => /ERROR/.test(l)), (l) => l.length > 0, 'the parse error');
    expect(f.lines.filter((l) => /ERROR/.test(l))).toEqual([
      expect.stringMatching(/ERROR +\S*agents\.yaml:5: GuardAgent boss: spec\.trustLevel: .* \(the last good version stays in force\)$/),
    ]);
    expect(f.store.snapshot().agent('boss')?.trust).toBe('admin');
    sed('s/godlike/low/', file);
    await trustBecomes(f, 'boss', 'low', 'the fixed file');
    expect(f.store.problems()).toEqual([]);
  });

  it('a dangling symlink named like a manifest is refused, naming its target; the target created, it is read', async () => {
    const f = await open({});
    const target = join(f.configDir, '..', 'elsewhere', 'agents.yaml');
    await mkdir(join(target, '..'));
    await symlink(target, join(f.configDir, 'agents.yaml'));
    await eventually(async () => f.store.problems(), (p) => p.length > 0, 'the dangling symlink');
    expect(f.store.problems()).toEqual([`${join(f.configDir, 'agents.yaml')}:1: the file cannot be read: it is a symbolic link to ${target}, which does not exist (not in force: every decision is denied until this is fixed)`]);
    // The folder the target would be in is watched.
    await writeFile(target, agent('boss', 'admin'));
    await trustBecomes(f, 'boss', 'admin', 'the target of a dangling symlink created');
    expect(f.store.problems()).toEqual([]);
  });

  it('a pattern the engine rejects is one ERROR line with file:line of the pattern, not repeated on later reloads', async () => {
    const policy = `# rules for the data team
apiVersion: policyguard.dev/v1alpha1
kind: GuardPolicy
metadata: {name: no-braces}
spec:
  rules:
    - match: {tools: ["read_*"]}
      action: allow
    - match:
        tools: ["drop_*", "delete_{a,b}"]
      action: deny
`;
    const f = await open({ 'agents.yaml': agent('boss', 'admin'), 'policy.yaml': policy });
    const expected = /^\S*policy\.yaml:10: GuardPolicy no-braces: InvalidPattern: pattern "delete_\{a,b\}" uses braces/;
    expect(f.store.problems()).toEqual([expect.stringMatching(expected)]);
    const errors = () => f.lines.filter((l) => /ERROR/.test(l));
    expect(errors()).toEqual([expect.stringMatching(/ERROR +\S*policy\.yaml:10: GuardPolicy no-braces: InvalidPattern: pattern "delete_\{a,b\}"/)]);
    // Another file changes: the problem is still there, and not logged again.
    sed('s/admin/low/', join(f.configDir, 'agents.yaml'));
    await trustBecomes(f, 'boss', 'low', 'an unrelated change');
    expect(errors()).toHaveLength(1);
    expect(f.store.problems()).toEqual([expect.stringMatching(expected)]);
  });
});

describe('a folder that cannot be listed is an error, never an empty folder (periodic rescan off)', () => {
  const denyDrops = `apiVersion: policyguard.dev/v1alpha1\nkind: GuardPolicy\nmetadata: {name: deny-drops}\nspec:\n  rules: [{match: {tools: ["drop_*"]}, action: deny, message: no drops}]\n`;
  const decide = (f: Fixture) => f.store.snapshot().evaluate({ agentId: 'x', actionType: 'tool_call', target: 'drop_table', parameters: {} });
  const gone = (root: string) => `${root}: the folder cannot be listed: no such file or directory (ENOENT) (what was loaded from this folder stays in force)`;

  it.each([
    ['the config folder', (f: Fixture) => f.configDir],
    ["the data dir's manifests/ folder", (f: Fixture) => join(f.dataDir, 'manifests')],
  ])('%s removed (rm -rf): what was loaded from it stays in force, logged at ERROR; created again, it is read at once', async (_what, rootOf) => {
    const f = await open({});
    const root = rootOf(f);
    await writeFile(join(root, 'deny.yaml'), denyDrops);
    await writeFile(join(root, 'agents.yaml'), agent('boss', 'admin'));
    await trustBecomes(f, 'boss', 'admin', 'the files written');
    await rm(root, { recursive: true });
    await eventually(async () => f.store.problems(), (p) => p.length > 0, 'the folder to be missed');
    expect(f.store.problems()).toEqual([gone(root)]);
    expect(f.lines.filter((l) => / ERROR /.test(l))).toEqual([expect.stringContaining(`ERROR ${gone(root)}`)]);
    expect(f.lines.filter((l) => /manifest removed/.test(l))).toEqual([]);
    expect(decide(f)).toMatchObject({ decision: 'deny', reason: 'no drops' });
    expect(f.store.snapshot().agent('boss')?.trust).toBe('admin');
    await mkdir(root);
    await writeFile(join(root, 'agents.yaml'), agent('boss', 'low'));
    await trustBecomes(f, 'boss', 'low', 'the folder created again');
    expect(f.store.problems()).toEqual([]);
    expect(decide(f).decision).toBe('allow');
  });

  it('the config folder moved away and back (mv): what was loaded stays in force all along; back, it is watched again', async () => {
    const f = await open({ 'deny.yaml': denyDrops, 'agents.yaml': agent('boss', 'admin') });
    await rename(f.configDir, `${f.configDir}.old`);
    await eventually(async () => f.store.problems(), (p) => p.length > 0, 'the folder to be missed');
    expect(f.store.problems()).toEqual([gone(f.configDir)]);
    expect(decide(f)).toMatchObject({ decision: 'deny', reason: 'no drops' });
    await rename(`${f.configDir}.old`, f.configDir);
    await eventually(async () => f.store.problems(), (p) => p.length === 0, 'the folder to be back');
    expect(decide(f)).toMatchObject({ decision: 'deny', reason: 'no drops' });
    sed('s/admin/low/', join(f.configDir, 'agents.yaml'));
    await trustBecomes(f, 'boss', 'low', 'an edit in the folder moved back');
  });

  it('one never listed (here a symlink loop, which may be a folder of manifests) denies every decision until it can be', async () => {
    const f = await open({ 'deny.yaml': denyDrops });
    await symlink('team', join(f.configDir, 'team'));
    await eventually(async () => f.store.problems(), (p) => p.length > 0, 'the entry that cannot be examined');
    expect(f.store.problems()).toEqual([`${join(f.configDir, 'team')}: cannot be examined, and may be a folder of manifests: too many symbolic links encountered (ELOOP) (not in force: every decision is denied until this is fixed)`]);
    expect(decide(f)).toMatchObject({ decision: 'deny', reason: expect.stringMatching(/^The policy set is incomplete, so this call is denied until it is fixed: \S*team: cannot be examined/) });
    await rm(join(f.configDir, 'team'));
    await eventually(async () => decide(f).reason, (r) => r === 'no drops', 'the loop removed');
  });
});

describe('files being written, large files, names defined twice', () => {
  const policy = (name: string) => `apiVersion: policyguard.dev/v1alpha1\nkind: GuardPolicy\nmetadata: {name: ${name}}\nspec:\n  rules: [{match: {tools: ["drop_*"]}, action: deny}]\n---\n`;
  const decide = (f: Fixture, agentId = 'x') => f.store.snapshot().evaluate({ agentId, actionType: 'tool_call', target: 'read_x', parameters: {} });

  it('a file written in several steps is taken in once it stopped changing, never half-way', async () => {
    // The writer appends a document every 20 ms for about a second: far longer than the debounce,
    // with pauses 50 times shorter than it (a margin, not a measurement: nothing here is timed).
    // Synchronously, so each append lands before a reload whose timer falls due later (see below).
    const f = await open({ 'agents.yaml': agent('boss', 'admin') }, { debounceMs: 1000 });
    const file = join(f.configDir, 'growing.yaml');
    const t0 = performance.now();
    for (let i = 0; i < 50; i++) {
      appendFileSync(file, policy(`p${i}`));
      await new Promise((r) => setTimeout(r, 20));
    }
    await eventually(async () => f.store.snapshot().counts.policies, (n) => n === 50, 'the whole file');
    console.log(`growing file: written in ${Math.round(performance.now() - t0)} ms`);
    const loads = f.lines.filter((l) => /manifest loaded/.test(l) && /growing\.yaml/.test(l));
    expect(loads).toEqual([expect.stringMatching(/objects=50$/)]);
  });

  it('a file that never stops changing holds back the other changes of its reloads for a bounded time only, and says so', async () => {
    // At a 50 ms debounce the bound is 1 s; the writer appends every 10 ms until the revocation is in force.
    // Synchronously: its 10 ms timer always falls due before the next reload's 50 ms one, so however
    // slow the machine, every look finds the file changed (an append left to the thread pool could land late).
    const f = await open({ 'agents.yaml': agent('boss', 'admin') }, { debounceMs: 50 });
    const file = join(f.configDir, 'growing.yaml');
    let writing = true;
    const writer = (async () => {
      for (let i = 0; writing; i++) {
        appendFileSync(file, policy(`p${i}`));
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    try {
      sed('s/admin/low/', join(f.configDir, 'agents.yaml'));
      await trustBecomes(f, 'boss', 'low', 'a revocation beside a file that never stops changing');
    } finally {
      writing = false;
      await writer;
    }
    expect(f.lines).toContainEqual(expect.stringMatching(/WARN +manifests keep changing; applying the changes that settled, without these files waitedMs=\d+ files=\S*growing\.yaml$/));
  });

  it('a file over 4 MiB is refused with a clear error, and the policy set is incomplete until it goes', async () => {
    const big = `apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\ndata:\n${Array.from({ length: 5 * 1024 }, (_, i) => `  k${i}: ${'x'.repeat(1020)}\n`).join('')}`;
    const f = await open({ 'agents.yaml': agent('boss', 'admin'), 'big.yaml': big });
    const refused = /big\.yaml:1: the file has 5\.0 MiB; manifests over 4 MiB are refused: split it, and keep documents of other kinds out of this folder/;
    expect(f.store.problems()).toEqual([expect.stringMatching(new RegExp(`${refused.source} \\(not in force: every decision is denied until this is fixed\\)$`))]);
    expect(decide(f, 'boss')).toMatchObject({ decision: 'deny', reason: expect.stringMatching(refused) });
    await rm(join(f.configDir, 'big.yaml'));
    await eventually(async () => decide(f, 'boss').decision, (d) => d === 'allow', 'the big file to go');
  });

  it('a name defined twice is one ERROR line; an object written through MCP over one of the config folder is one WARN line', async () => {
    const f = await open({ 'a.yaml': policy('p'), 'b.yaml': policy('p').replace('drop_*', 'truncate_*') });
    expect(f.lines.filter((l) => / ERROR /.test(l))).toEqual([expect.stringMatching(/a\.yaml:1: GuardPolicy p is also defined at \S*b\.yaml:1; one name, one object: rename or remove the others \(not in force: every decision is denied until this is fixed\)$/)]);
    await rm(join(f.configDir, 'b.yaml'));
    await eventually(async () => decide(f).decision, (d) => d === 'allow', 'the duplicate to go');
    const p = f.store.snapshot().policies()[0]!;
    await f.store.applyPolicy({ ...p, spec: { ...p.spec, rules: [{ match: { tools: ['x'] }, action: 'allow' }] } }, 'update');
    await f.store.reload();
    expect(f.lines.filter((l) => / WARN /.test(l))).toEqual([expect.stringMatching(/a\.yaml:1: GuardPolicy p is overridden by \S*guardpolicies\/p\.yaml, written through MCP \(delete that file to use this one\)$/)]);
  });
});
