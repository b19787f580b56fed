/**
 * A save that touches several files takes effect as one (docs/decisions.md §9, "Objects that
 * cannot be loaded"), through the real server over HTTP on real files: a policy moved from one
 * file to another, by hand, by a ConfigMap volume's `..data` swap or split into a file of its
 * own, is in force at every moment, while its decisions are asked again and again. No timing is
 * asserted: each test waits (with a generous bound) for the save to take effect and counts the
 * wrong answers seen on the way.
 */
import { rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigMapVolume } from './configmap-volume.js';
import { eventually } from './eventually.js';
import { folderServers, type TestServer } from './harness.js';

const servers = folderServers('policyguard-moves-');
afterEach(() => servers.closeAll());
const serve = (files: Record<string, string>) => servers.serve(files);

const policy = (name: string, rule: string) => `apiVersion: policyguard.dev/v1alpha1
kind: GuardPolicy
metadata: {name: ${name}}
spec:
  rules:
    - ${rule}
`;
const denyDrops = (message: string) => policy('deny-drops', `{match: {tools: ["drop_*"]}, action: deny, message: "${message}"}`);
const READS = policy('reads', '{match: {tools: ["read_*"]}, action: allow}');
const INCOMPLETE = /^The policy set is incomplete, so this call is denied until it is fixed: /;

interface Answer {
  target: string;
  allowed: boolean;
  reason: string;
}

const decide = (srv: TestServer, target: string): Promise<Answer> =>
  srv.call('validate_action', { action_type: 'tool_call', target, agent_id: 'x' }).then(({ json }) => ({ target, allowed: json.allowed, reason: json.reason }));
const problems = (srv: TestServer) => srv.call('get_compliance_status').then((r) => r.json.policies.problems as string[]);
const atomically = async (file: string, text: string) => {
  await writeFile(`${file}.tmp~`, text);
  await rename(`${file}.tmp~`, file);
};

/**
 * Ask the server about `drop_table` and `read_x`, one call after another, while `act` saves
 * files and until `done` holds; return every answer that is not `expected` of its target.
 */
async function wrongAnswersWhile(srv: TestServer, expected: (a: Answer) => boolean, act: () => Promise<void>, done: (a: Answer) => boolean, what: string): Promise<Answer[]> {
  const wrong: Answer[] = [];
  let asked = 0;
  let stop = false;
  const poller = (async () => {
    while (!stop) {
      for (const target of ['drop_table', 'read_x']) {
        const a = await decide(srv, target);
        asked++;
        if (!expected(a)) wrong.push(a);
      }
    }
  })();
  try {
    await act();
    await eventually(() => decide(srv, 'drop_table'), done, what);
  } finally {
    stop = true;
    await poller;
  }
  console.log(`${what}: ${asked} answers while the files changed, ${wrong.length} wrong`);
  return wrong;
}

/** drop_table denied by deny-drops (whatever its message), read_x allowed. */
const deniesDropsAllowsReads = (a: Answer) => (a.target === 'drop_table' ? !a.allowed && /^no drops/.test(a.reason) : a.allowed);

describe("a policy moved from one file to another is in force at every moment (a reload's changes are applied together)", () => {
  it('moved by hand: the old file removed, the one it moves into saved beside it', async () => {
    const srv = await serve({ 'deny.yaml': denyDrops('no drops'), 'policies.yaml': READS });
    expect(await decide(srv, 'drop_table')).toMatchObject({ allowed: false, reason: 'no drops' });
    const wrong = await wrongAnswersWhile(
      srv,
      deniesDropsAllowsReads,
      async () => {
        await atomically(join(srv.configDir, 'policies.yaml'), `${READS}---\n${denyDrops('no drops, moved')}`);
        await rm(join(srv.configDir, 'deny.yaml'));
      },
      (a) => a.reason === 'no drops, moved',
      'a policy moved into another file',
    );
    expect(wrong).toEqual([]);
    expect(await problems(srv)).toEqual([]);
  });

  it('rewritten in place by a slow writer: the file is empty for longer than a debounce, then written', async () => {
    const srv = await serve({ 'deny.yaml': denyDrops('no drops'), 'policies.yaml': READS });
    const file = join(srv.configDir, 'deny.yaml');
    const wrong = await wrongAnswersWhile(
      srv,
      deniesDropsAllowsReads,
      async () => {
        await writeFile(file, ''); // what `>` or writeFile's truncation leaves while the writer stalls
        // Several debounces (100 ms each) with the file empty: long enough to be read, and settle, as empty.
        await eventually(async () => decide(srv, 'read_x'), () => true, 'a few answers');
        await new Promise((r) => setTimeout(r, 500));
        await writeFile(file, denyDrops('no drops, rewritten'));
      },
      (a) => a.reason === 'no drops, rewritten',
      'a policy file truncated and written again',
    );
    expect(wrong).toEqual([]);
  });

  it("moved by a ConfigMap volume's ..data swap (a key removed, another changed)", async () => {
    const srv = await serve({});
    const volume = new ConfigMapVolume(join(srv.configDir, 'policies-cm'));
    await volume.write({ 'destructive.yaml': denyDrops('no drops'), 'policies.yaml': READS });
    await eventually(() => decide(srv, 'drop_table'), (a) => a.reason === 'no drops', 'the ConfigMap volume to be mounted');
    const wrong = await wrongAnswersWhile(
      srv,
      deniesDropsAllowsReads,
      () => volume.write({ 'policies.yaml': `${READS}---\n${denyDrops('no drops, moved')}` }),
      (a) => a.reason === 'no drops, moved',
      'a policy moved into another key of a ConfigMap',
    );
    expect(wrong).toEqual([]);
    expect(await problems(srv)).toEqual([]);
  });
});

describe('a name defined twice keeps the version in force', () => {
  it('splitting a file by hand: copy a policy into a new file, then remove it from the old one', async () => {
    const srv = await serve({ 'policies.yaml': `${READS}---\n${denyDrops('no drops')}` });
    const wrong = await wrongAnswersWhile(
      srv,
      deniesDropsAllowsReads,
      async () => {
        // The copy is edited before the old one is removed: the version in force stays in force.
        await atomically(join(srv.configDir, 'deny.yaml'), denyDrops('no drops, split'));
        const listed = await eventually(() => problems(srv), (p) => p.length > 0, 'the duplicate to be seen');
        expect(listed).toEqual([expect.stringMatching(/deny\.yaml:1: GuardPolicy deny-drops is also defined at \S*policies\.yaml:8; one name, one object: rename or remove the others \(the last good version stays in force\)$/)]);
        expect(await decide(srv, 'drop_table')).toMatchObject({ allowed: false, reason: 'no drops' });
        await atomically(join(srv.configDir, 'policies.yaml'), READS);
      },
      (a) => a.reason === 'no drops, split',
      'a policy split into a file of its own',
    );
    expect(wrong).toEqual([]);
    expect(await problems(srv)).toEqual([]);
  });

  it('cp of a whole file: the identical copies are one version, in force, and the duplicate is listed', async () => {
    const text = `${READS}---\n${denyDrops('no drops')}`;
    const srv = await serve({ 'policies.yaml': text });
    const wrong = await wrongAnswersWhile(
      srv,
      deniesDropsAllowsReads,
      async () => {
        await writeFile(join(srv.configDir, 'copy.yaml'), text);
        const listed = await eventually(() => problems(srv), (p) => p.length === 2, 'both duplicates to be seen');
        expect(listed).toEqual([
          expect.stringMatching(/copy\.yaml:1: GuardPolicy reads is also defined at \S*policies\.yaml:1; .* \(the copies are identical, so that version is in force\)$/),
          expect.stringMatching(/copy\.yaml:8: GuardPolicy deny-drops is also defined at \S*policies\.yaml:8; .* \(the copies are identical, so that version is in force\)$/),
        ]);
        await rm(join(srv.configDir, 'copy.yaml'));
        await eventually(() => problems(srv), (p) => p.length === 0, 'the copy to go');
      },
      (a) => a.reason === 'no drops',
      'a whole file copied, then removed',
    );
    expect(wrong).toEqual([]);
  });

  it('at a cold start, with no version in force, two different copies deny every decision', async () => {
    const srv = await serve({ 'a.yaml': denyDrops('no drops'), 'b.yaml': denyDrops('no drops either'), 'reads.yaml': READS });
    for (const target of ['drop_table', 'read_x']) {
      const d = await decide(srv, target);
      expect(d.allowed).toBe(false);
      expect(d.reason).toMatch(INCOMPLETE);
      expect(d.reason).toMatch(/a\.yaml:1: GuardPolicy deny-drops is also defined at \S*b\.yaml:1; one name, one object: rename or remove the others$/);
    }
    expect(await problems(srv)).toEqual([expect.stringMatching(/a\.yaml:1: GuardPolicy deny-drops is also defined at .* \(not in force: every decision is denied until this is fixed\)$/)]);
    // Identical copies at a cold start are one version: nothing to tell apart.
    await writeFile(join(srv.configDir, 'b.yaml'), denyDrops('no drops'));
    await eventually(() => decide(srv, 'read_x'), (a) => a.allowed, 'decisions to resume with identical copies');
    expect(await decide(srv, 'drop_table')).toMatchObject({ allowed: false, reason: 'no drops' });
  });
});
