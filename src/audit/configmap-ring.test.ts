import { describe, expect, it } from 'vitest';
import { configMapDataBytes, recordLines, replicaLabel, ringConfigMapName, toRingSegment } from './configmap-ring.js';

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

describe('replicaLabel', () => {
  it.each(['policyguard-0', 'policyguard-7d9f8c6b5-x2x4q', 'a', '0abc', 'a'.repeat(63)])('keeps %s, already a DNS-1123 label', (name) => {
    expect(replicaLabel(name)).toBe(name);
  });

  it.each(['My_Replica', 'pod.example', '-lead', 'trail-', 'ünïcode', '___', 'a'.repeat(64), `${'x'.repeat(200)}.Y`])(
    'turns %s into a label with a hash of the original',
    (name) => {
      const label = replicaLabel(name);
      expect(label).toMatch(DNS1123_LABEL);
      expect(label.length).toBeLessThanOrEqual(63);
      expect(label).toMatch(/-[0-9a-f]{8}$/);
      expect(replicaLabel(name)).toBe(label);
    },
  );

  it('keeps names apart that differ only in what sanitising removes', () => {
    const labels = ['Pod_A', 'pod-a', 'POD-A', 'pod_a'].map(replicaLabel);
    expect(new Set(labels).size).toBe(4);
  });

  it('rejects an empty name', () => {
    expect(() => replicaLabel('')).toThrow(/must not be empty/);
  });
});

describe('ring helpers', () => {
  it('names ConfigMaps and reads them back into segments', () => {
    expect(ringConfigMapName('pod-0', 12)).toBe('policyguard-audit-pod-0-12');
    const segment = toRingSegment({
      metadata: {
        name: 'policyguard-audit-pod-0-12',
        resourceVersion: '42',
        labels: { 'policyguard.dev/replica': 'pod-0' },
        annotations: { 'policyguard.dev/audit-sequence': '29', 'policyguard.dev/audit-chain-head': 'ab' },
      },
      data: { 'records.jsonl': '{}\n' },
    });
    expect(segment).toMatchObject({ replica: 'pod-0', index: 12, seq: 29, chainHead: 'ab', resourceVersion: '42', text: '{}\n' });
    expect(toRingSegment({ metadata: { name: 'x', annotations: { 'policyguard.dev/audit-sequence': '-3' } } })).toMatchObject({
      index: -1, seq: 0, text: '', chainHead: undefined,
    });
  });

  it('splits records.jsonl into lines and counts data bytes as the API server does', () => {
    expect(recordLines('')).toEqual([]);
    expect(recordLines('a\nb\n')).toEqual(['a', 'b']);
    expect(recordLines('a\n\nb')).toEqual(['a', '', 'b']);
    expect(configMapDataBytes({ 'records.jsonl': 'é\n', k: '' })).toBe(13 + 3 + 1);
  });
});
