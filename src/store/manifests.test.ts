import { describe, expect, it } from 'vitest';
import { Reason } from '../api/conditions.js';
import type { ObjectProblem } from '../engine/types.js';
import { lineOfProblem } from './manifests.js';

const TEXT = `# two objects
apiVersion: policyguard.dev/v1alpha1
kind: GuardAgent
metadata: {name: etl}
spec: {trustLevel: low}
---
# the policy
apiVersion: policyguard.dev/v1alpha1
kind: GuardPolicy
metadata: {name: p, namespace: team}
spec:
  rules:
    - match: {tools: ["delete_*"]}
      action: deny
    - match:
        tools: ["a{b}", "delete_{a,b}"]
      action: deny
`;

const problem = (p: Partial<ObjectProblem>): ObjectProblem => ({ kind: 'GuardPolicy', name: 'p', namespace: 'team', reason: Reason.InvalidPattern, message: '', ...p });

describe('lineOfProblem', () => {
  it.each([
    ['the line of the pattern the message quotes', problem({ message: 'pattern "delete_{a,b}" uses braces' }), 16],
    ['the longest quoted value when several match', problem({ message: 'pattern "delete_*" and "delete_{a,b}"' }), 16],
    ["the document's first line when nothing quoted is in it", problem({ reason: Reason.InvalidSpec, message: 'something is wrong' }), 8],
    ['the right object among several documents', problem({ kind: 'GuardAgent', name: 'etl', namespace: undefined, message: 'pattern "delete_*" is bad' }), 2],
    ['line 1 when the object is not in the text', problem({ name: 'other' }), 1],
    ['an object with a namespace is told apart from one without', problem({ namespace: undefined }), 1],
  ])('%s', (_what, p, line) => {
    expect(lineOfProblem(TEXT, p)).toBe(line);
  });
});
