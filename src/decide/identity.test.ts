import { describe, expect, it } from 'vitest';
import { guardAgent, objectNameFor } from '../api/builders.js';
import type { Principal } from '../auth/authenticate.js';
import { identityAuthorizer, openAuthorizer, type Authorizer } from '../auth/authorize.js';
import { PolicySnapshot } from '../engine/snapshot.js';
import { DEFAULT_ENGINE_OPTIONS } from '../engine/types.js';
import { silentLogger } from '../log.js';
import { autoRegisteredAgent, autoRegisteredName, caseTwins, resolveIdentity } from './identity.js';

const snapshot = PolicySnapshot.compile(
  {
    agents: [
      guardAgent({ name: 'platform-admin' }, { trustLevel: 'admin', identities: [{ user: 'token:admin' }] }),
      guardAgent({ name: 'kube-bot' }, { trustLevel: 'medium', identities: [{ user: 'token:kube' }] }),
    ],
    policies: [],
  },
  DEFAULT_ENGINE_OPTIONS,
);
const who = (name: string): Principal => ({ subject: `token:${name}`, groups: [] });
const enforcing = identityAuthorizer({ log: silentLogger });
const resolve = (principal: Principal, agentId: string, authorizer = enforcing) =>
  resolveIdentity({ authorizer, snapshot, principal, agentId, unknownAgents: 'evaluate', writeNamespace: undefined });

describe('an id that differs only in case from a registered agent', () => {
  it.each([
    ['PLATFORM-ADMIN', 'platform-admin'],
    ['Platform-Admin', 'platform-admin'],
    // U+212A KELVIN SIGN lowercases to "k": agents: globs fold it as they fold "K".
    ['\u212Aube-bot', 'kube-bot'],
  ])('%s is refused by an unbound caller under --unknown-agents evaluate, naming %s', (claimed, registered) => {
    const id = resolve(who('stranger'), claimed);
    expect(id).toMatchObject({
      ok: false,
      agentId: claimed,
      refusal: {
        rule: 'identities',
        reason: `Agent '${claimed}' is not registered and differs only in case from registered agent '${registered}'; caller 'token:stranger' is not bound to it (identity mismatch)`,
        incident: { type: 'identity_mismatch', severity: 'high', agentId: claimed, evidence: { caller: 'token:stranger', claimed_agent: claimed, registered_agents: [registered] } },
      },
    });
  });

  it('is refused for the agent’s own caller too, and under --auth none, with the exact id to send', () => {
    const cases: [Principal, Authorizer][] = [[who('admin'), enforcing], [{ subject: 'anonymous', groups: [] }, openAuthorizer()]];
    for (const [principal, authorizer] of cases) {
      const id = resolve(principal, 'PLATFORM-ADMIN', authorizer);
      expect(id).toMatchObject({ ok: false, refusal: { reason: "Agent 'PLATFORM-ADMIN' is not registered and differs only in case from registered agent 'platform-admin'; send its exact id 'platform-admin'" } });
    }
  });

  it('the registered id itself, and ids that differ by more than case, are as before', () => {
    expect(resolve(who('admin'), 'platform-admin')).toEqual({ ok: true, agentId: 'platform-admin' });
    expect(resolve(who('stranger'), 'platform-admin-2')).toEqual({ ok: true, agentId: 'platform-admin-2' });
    expect(caseTwins(snapshot, 'platform-admin')).toEqual([]);
    expect(caseTwins(snapshot, 'platform_admin')).toEqual([]);
  });

  it(`a case variant of PolicyGuard's own id is refused like the id itself`, () => {
    expect(resolve(who('stranger'), 'PolicyGuard-System')).toMatchObject({
      ok: false,
      refusal: { reason: "'PolicyGuard-System' differs only in case from 'policyguard-system', PolicyGuard's own id (its administrative audit records); no caller acts as it" },
    });
  });
});

describe('auto-registered objects', () => {
  it('never carry the name a person would give the agent: the id’s name plus a hash, also for ids that are valid names', () => {
    expect(autoRegisteredName('deploy-bot')).toMatch(/^deploy-bot-[0-9a-f]{6}$/);
    expect(autoRegisteredName('Ops_Bot')).toBe(objectNameFor('Ops_Bot'));
    expect(autoRegisteredName('deploy-bot')).not.toBe(autoRegisteredName('deploy-bot.'));
    expect(autoRegisteredAgent('deploy-bot', 'team-a', 'low', [{ user: 'token:x' }])!.metadata).toMatchObject({
      name: autoRegisteredName('deploy-bot'),
      namespace: 'team-a',
      labels: { 'policyguard.dev/auto-registered': 'true' },
    });
  });
});
