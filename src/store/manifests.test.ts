import { describe, expect, it } from 'vitest';
import { Reason } from '../api/conditions.js';
import type { ObjectProblem } from '../engine/types.js';
import { identityOf, lineOfProblem, parseManifests, type ManifestObject } from './manifests.js';

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

  it('a name defined twice in one text: the copy whose document starts at fromLine', () => {
    const twice = `${TEXT}---\n${TEXT.slice(TEXT.indexOf('# the policy'))}`;
    const secondStart = twice.split('\n').lastIndexOf('# the policy') + 1;
    const p = problem({ message: 'pattern "delete_{a,b}" uses braces' });
    expect(lineOfProblem(twice, p)).toBe(16);
    expect(lineOfProblem(twice, p, secondStart)).toBe(secondStart + 9);
  });
});

const policy = (name: string, tools = '["drop_*"]', extra = '') => `apiVersion: policyguard.dev/v1alpha1
kind: GuardPolicy
metadata: {name: ${name}}
spec:
  rules: [{match: {tools: ${tools}}, action: deny}]${extra}
`;
const names = (objects: ManifestObject[]) => objects.map((o) => `${o.object.kind}/${o.object.metadata.name}@${o.line}`);

describe('parseManifests: each document stands on its own', () => {
  it('an invalid document drops only itself, and its error names the object and the line', () => {
    const text = `${policy('first')}---\n${policy('broken', '[]')}---\n${policy('last')}`;
    const parsed = parseManifests(text, 'p.yaml');
    expect(names(parsed.objects)).toEqual(['GuardPolicy/first@1', 'GuardPolicy/last@13']);
    expect(parsed.errors).toEqual([
      {
        file: 'p.yaml',
        line: 11,
        message: 'GuardPolicy broken: spec.rules[0].match.tools: an empty list matches no call, so the rule would never apply; list at least one value, or remove the condition',
        object: { kind: 'GuardPolicy', name: 'broken' },
      },
    ]);
  });

  it.each([
    // `before` takes lines 1-6; the bad part starts on line 7.
    ['an alias to an anchor of another document', 'apiVersion: v1\nkind: ConfigMap\ndata: &b {}\n---\ny: *b\n', 11, /^invalid YAML: Unresolved alias \(the anchor must be set before the alias\): b$/],
    ['more aliases than one document may expand', `a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [${'*a, '.repeat(9)}*a]\nc: &c [${'*b, '.repeat(9)}*b]\nd: [${'*c, '.repeat(9)}*c]\n`, 7, /^invalid YAML: Excessive alias count/],
  ])('%s is an error of that document, with its line; the documents around it load', (_what, bad, line, message) => {
    const text = `${policy('before')}---\n${bad}---\n${policy('after')}`;
    const parsed = parseManifests(text, 'p.yaml');
    expect(names(parsed.objects)).toEqual(['GuardPolicy/before@1', expect.stringMatching(/^GuardPolicy\/after@\d+$/)]);
    expect(parsed.errors).toEqual([{ file: 'p.yaml', line, message: expect.stringMatching(message) }]);
  });

  it.each([
    ['another group', 'apiVersion: policyguard.io/v1alpha1', 'GuardPolicy p: apiVersion is "policyguard.io/v1alpha1"; write apiVersion: policyguard.dev/v1alpha1'],
    ['no apiVersion', '', 'GuardPolicy p: apiVersion is missing; write apiVersion: policyguard.dev/v1alpha1'],
    ['a kind of ours in another case', 'apiVersion: example.com/v1\nkind: guardpolicy', 'guardpolicy p: apiVersion is "example.com/v1"; write apiVersion: policyguard.dev/v1alpha1'],
    ['a kind of ours with a space', 'kind: "GuardPolicy "', 'GuardPolicy  p: apiVersion is missing; write apiVersion: policyguard.dev/v1alpha1'],
    ['our group misspelt, with a kind that is not ours', 'apiVersion: policyguard/v1alpha1\nkind: GuardPolicies', 'GuardPolicies p: apiVersion is "policyguard/v1alpha1"; write apiVersion: policyguard.dev/v1alpha1'],
    ['our group in capitals', 'apiVersion: PolicyGuard.dev/v1alpha1\nkind: GuardPolicy', 'GuardPolicy p: apiVersion is "PolicyGuard.dev/v1alpha1"; write apiVersion: policyguard.dev/v1alpha1'],
  ])('one of our kinds under %s is an error naming file:line, not a skipped document', (_what, head, message) => {
    const doc = `${head}\n${head.includes('kind:') ? '' : 'kind: GuardPolicy\n'}metadata: {name: p}\nspec: {rules: [{action: deny}]}\n`;
    const parsed = parseManifests(`# a comment\n${doc.replace(/^\n/, '')}`, 'p.yaml');
    expect(parsed).toMatchObject({ objects: [], skipped: 0, errors: [{ file: 'p.yaml', line: 2, message, object: { name: 'p' } }] });
  });

  it.each([
    ['no apiVersion and no kind', 'metadata: {name: deny-drops}\nspec:\n  rules: [{match: {tools: ["drop_*"]}, action: deny}]\n', 'apiVersion and kind are'],
    ['the second half of a policy split off by a stray ---', 'rules: [{match: {tools: ["drop_*"]}, action: deny}]\n', 'apiVersion and kind are'],
    ['a kind but no apiVersion', 'kind: Guard-Policy\nmetadata: {name: p}\n', 'apiVersion is'],
    ['an apiVersion but no kind', 'apiVersion: policyguard.dev/v1alpha1\nmetadata: {name: p}\n', 'kind is'],
    ['a blank kind', 'apiVersion: v1\nkind: " "\n', 'kind is'],
    ['a kind that is not a string', 'apiVersion: v1\nkind: [GuardPolicy]\n', 'kind is'],
  ])('a document with %s is an error, not passed over: it may hold a policy', (_what, doc, missing) => {
    const parsed = parseManifests(`${policy('before')}---\n${doc}`, 'p.yaml');
    expect(names(parsed.objects)).toEqual(['GuardPolicy/before@1']);
    expect(parsed.skipped).toBe(0);
    expect(parsed.errors).toEqual([{ file: 'p.yaml', line: 7, message: expect.stringContaining(`not a Kubernetes object: ${missing} missing`) }]);
  });

  it('a GuardPolicyList item without apiVersion and kind is an error, as kubectl makes it', () => {
    const parsed = parseManifests('apiVersion: policyguard.dev/v1alpha1\nkind: GuardPolicyList\nitems:\n  - metadata: {name: p}\n    spec: {rules: [{action: deny}]}\n', 'p.yaml');
    expect(parsed).toMatchObject({ objects: [], skipped: 0, errors: [{ line: 4, message: expect.stringContaining('not a Kubernetes object') }] });
  });

  it('an unknown YAML tag is an error of its document, not a value taken without it', () => {
    const parsed = parseManifests(`${policy('before')}---\n${policy('tagged').replace('name: tagged', 'name: !secret tagged')}`, 'p.yaml');
    expect(names(parsed.objects)).toEqual(['GuardPolicy/before@1']);
    expect(parsed.errors).toEqual([{ file: 'p.yaml', line: 9, message: 'invalid YAML: Unresolved tag: !secret (PolicyGuard reads plain YAML: remove the tag)' }]);
  });

  it('documents of other projects are skipped, empty ones ignored', () => {
    const parsed = parseManifests('apiVersion: kagent.dev/v1alpha2\nkind: Agent\nmetadata: {name: a}\n---\n---\n# nothing\n', 'p.yaml');
    expect(parsed).toEqual({ objects: [], errors: [], skipped: 1 });
  });

  it('a List (kubectl get -o yaml) has its items read as documents, with their own lines', () => {
    const text = `apiVersion: v1
kind: List
items:
  - apiVersion: policyguard.dev/v1alpha1
    kind: GuardPolicy
    metadata: {name: q}
    spec:
      rules: [{match: {tools: ["drop_*"]}, action: deny}]
  - apiVersion: v1
    kind: ConfigMap
    metadata: {name: other}
  - apiVersion: policyguard.dev/v1alpha1
    kind: GuardAgent
    metadata: {name: bot}
    spec:
      deniedTools: ["send_*"]
      trustLevel: godlike
---
apiVersion: policyguard.dev/v1alpha1
kind: GuardPolicyList
items:
  - ${policy('r').trimEnd().replaceAll('\n', '\n    ')}
---
apiVersion: v1
kind: List
items: {}
`;
    const parsed = parseManifests(text, 'list.yaml');
    expect(names(parsed.objects)).toEqual(['GuardPolicy/q@4', 'GuardPolicy/r@22']);
    expect(parsed.skipped).toBe(1);
    expect(parsed.errors).toEqual([
      { file: 'list.yaml', line: 17, message: expect.stringMatching(/^GuardAgent bot: spec\.trustLevel: Invalid option/), object: { kind: 'GuardAgent', name: 'bot', agentId: 'bot' } },
      { file: 'list.yaml', line: 28, message: 'a List needs items: a list of objects' },
    ]);
    expect(lineOfProblem(text, problem({ name: 'q', namespace: undefined, message: 'pattern "drop_*" is bad' }))).toBe(8);
  });
});

describe('parseManifests: metadata has only the fields of Kubernetes ObjectMeta', () => {
  const selected = (meta: string) => `apiVersion: policyguard.dev/v1alpha1
kind: GuardAgent
metadata:
  name: bot
${meta}spec: {trustLevel: low}
`;

  it.each([
    ['a misspelt labels, which would leave an agentSelector selecting no one', '  lables:\n    team: payments\n', 'lables', 6],
    ['a key in another case', '  Labels: {team: payments}\n', 'Labels', 6],
    ['a field of another kind', '  spec: {}\n', 'spec', 6],
    ['clusterName, a field Kubernetes has removed', '  clusterName: prod\n', 'clusterName', 6],
  ])('%s: the document is refused, naming the key and its line', (_what, meta, key, line) => {
    const parsed = parseManifests(`# an agent\n${selected(meta)}`, 'a.yaml');
    expect(parsed.objects).toEqual([]);
    expect(parsed.errors).toEqual([
      { file: 'a.yaml', line, message: `GuardAgent bot: metadata: Unrecognized key: "${key}" (not a field of Kubernetes ObjectMeta)`, object: { kind: 'GuardAgent', name: 'bot', agentId: 'bot' } },
    ]);
  });

  it('every unknown key is named, beside the errors of the spec, in a List item too', () => {
    const text = `apiVersion: v1
kind: List
items:
  - apiVersion: policyguard.dev/v1alpha1
    kind: GuardPolicy
    metadata: {name: p, lables: {team: payments}, annotation: {a: b}}
    spec:
      agentSelector: {matchLabels: {team: payments}}
      rules: [{match: {tools: ["drop_*"]}, action: deny}]
      prority: 5
`;
    expect(parseManifests(text, 'l.yaml').errors.map((e) => `${e.line}: ${e.message}`)).toEqual([
      '6: GuardPolicy p: metadata: Unrecognized key: "lables" (not a field of Kubernetes ObjectMeta)',
      '6: GuardPolicy p: metadata: Unrecognized key: "annotation" (not a field of Kubernetes ObjectMeta)',
      '10: GuardPolicy p: spec: Unrecognized key: "prority"',
    ]);
  });

  it('an unknown spec key whose value starts on the next line is pointed at the key', () => {
    const parsed = parseManifests(selected('').replace('spec: {trustLevel: low}', 'spec:\n  trustLevel: low\n  deniedtools:\n    - send_*'), 'a.yaml');
    expect(parsed.errors.map((e) => `${e.line}: ${e.message}`)).toEqual(['7: GuardAgent bot: spec: Unrecognized key: "deniedtools"']);
  });

  it('every field of ObjectMeta is accepted, as the API server returns them', () => {
    const meta = `  generateName: bot-
  namespace: team
  selfLink: /apis/policyguard.dev/v1alpha1/namespaces/team/guardagents/bot
  uid: 0b6f7c1e-3f0a-4b8e-9d51-2f1a7d3c9e10
  resourceVersion: "42"
  generation: 3
  creationTimestamp: "2025-01-01T00:00:00Z"
  deletionTimestamp: "2025-01-02T00:00:00Z"
  deletionGracePeriodSeconds: 0
  labels: {team: payments}
  annotations: {note: x}
  ownerReferences: []
  finalizers: []
  managedFields: []
`;
    const parsed = parseManifests(selected(meta), 'a.yaml');
    expect(parsed.errors).toEqual([]);
    expect(parsed.objects.map((o) => o.object.metadata.labels)).toEqual([{ team: 'payments' }]);
  });
});

describe('identityOf', () => {
  it.each([
    [{ kind: 'GuardAgent', metadata: { name: 'bot', namespace: 'n' }, spec: { agentId: 'Bot' } }, { kind: 'GuardAgent', name: 'bot', namespace: 'n', agentId: 'Bot' }],
    [{ kind: 'GuardAgent', metadata: { name: 'bot' }, spec: { trustLevel: 'x' } }, { kind: 'GuardAgent', name: 'bot', agentId: 'bot' }],
    [{ kind: 'GuardAgent', metadata: { name: 'bot' }, spec: { agentId: 7 } }, { kind: 'GuardAgent', name: 'bot' }],
    [{ kind: 'GuardPolicy', metadata: { name: 'p' } }, { kind: 'GuardPolicy', name: 'p' }],
    [{ kind: 'GuardPolicy', metadata: { name: '' } }, undefined],
    [{ kind: 'GuardPolicy' }, undefined],
    [['a'], undefined],
  ])('%j → %j', (value, identity) => {
    expect(identityOf(value)).toEqual(identity);
  });
});
