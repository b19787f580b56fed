/**
 * Which GuardAgent is in force when several claim one agent id (docs/decisions.md, "Identity"):
 * the tie-break of {@link PolicySnapshot.compile}.
 */
import { describe, expect, it } from 'vitest';
import { guardAgent } from '../api/builders.js';
import { LABEL_AUTO_REGISTERED, type GuardAgent } from '../api/schemas.js';
import { PolicySnapshot } from './snapshot.js';
import { DEFAULT_ENGINE_OPTIONS } from './types.js';

const compile = (agents: GuardAgent[]) => PolicySnapshot.compile({ agents, policies: [] }, DEFAULT_ENGINE_OPTIONS);
const auto = (name: string, agentId: string, creationTimestamp: string) =>
  guardAgent({ name, creationTimestamp, labels: { [LABEL_AUTO_REGISTERED]: 'true' } }, { agentId, trustLevel: 'low', identities: [{ user: 'token:squatter' }] });
const person = (name: string, namespace: string, agentId: string, creationTimestamp: string) =>
  guardAgent({ name, namespace, creationTimestamp }, { agentId, trustLevel: 'high', identities: [{ user: 'token:deployer' }] });

describe('an agent id claimed by several GuardAgents', () => {
  it('an object a person wrote wins over an older auto-registered one, whatever the order; the loser names the winner', () => {
    const squat = auto('deploy-bot-1a2b3c', 'deploy-bot', '2026-01-01T00:00:00Z');
    const real = person('deploy-bot', 'policyguard', 'deploy-bot', '2026-06-01T00:00:00Z');
    for (const list of [[squat, real], [real, squat]]) {
      const snap = compile(list);
      expect(snap.agent('deploy-bot')?.ref).toBe('policyguard/deploy-bot');
      expect(snap.problems).toEqual([
        {
          kind: 'GuardAgent',
          name: 'deploy-bot-1a2b3c',
          reason: 'Conflict',
          message: 'agentId "deploy-bot" is already claimed by GuardAgent policyguard/deploy-bot, which a person wrote: it wins over this auto-registered agent whatever their ages',
        },
      ]);
    }
  });

  it('an auto-registered agent whose id differs only in case from another agent’s loses to it', () => {
    const squat = auto('platform-admin-9f8e7d', 'PLATFORM-ADMIN', '2026-01-01T00:00:00Z');
    const real = person('platform-admin', 'policyguard', 'platform-admin', '2026-06-01T00:00:00Z');
    for (const list of [[squat, real], [real, squat]]) {
      const snap = compile(list);
      expect(snap.agent('PLATFORM-ADMIN')).toBeUndefined();
      expect(snap.agent('platform-admin')?.ref).toBe('policyguard/platform-admin');
      expect(snap.problems).toEqual([
        expect.objectContaining({
          name: 'platform-admin-9f8e7d',
          reason: 'Conflict',
          message:
            'agentId "PLATFORM-ADMIN" differs only in case from "platform-admin" of GuardAgent policyguard/platform-admin, which a person wrote: it wins over this auto-registered agent whatever their ages; agents: globs would match both',
        }),
      ]);
    }
    // Between two auto-registered ones, the older wins.
    const later = auto('platform-admin-0a0b0c', 'Platform-Admin', '2026-02-01T00:00:00Z');
    const snap = compile([later, squat]);
    expect(snap.agent('PLATFORM-ADMIN')).toBeDefined();
    expect(snap.problems.map((p) => p.name)).toEqual(['platform-admin-0a0b0c']);
  });

  it('between objects people wrote the oldest still wins, and ids that differ in case stay distinct agents', () => {
    const older = person('a', 'x', 'etl', '2026-01-01T00:00:00Z');
    const newer = person('b', 'y', 'etl', '2026-02-01T00:00:00Z');
    const upper = person('c', 'z', 'ETL', '2026-03-01T00:00:00Z');
    const snap = compile([newer, upper, older]);
    expect(snap.agent('etl')?.ref).toBe('x/a');
    expect(snap.agent('ETL')?.ref).toBe('z/c');
    expect(snap.problems).toEqual([expect.objectContaining({ name: 'b', message: 'agentId "etl" is already claimed by GuardAgent x/a' })]);
  });
});
