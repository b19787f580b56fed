import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { specSchemas } from './crd.js';
import { SPEC_FIELDS_TEMPLATE, specFieldChecks, specFieldsPolicyTemplate, specFieldsPolicyYaml } from './spec-fields-policy.js';

describe('the spec-fields admission policy', () => {
  it(`${SPEC_FIELDS_TEMPLATE} matches src/api/schemas.ts (run \`npm run crds\` after editing the schemas)`, async () => {
    expect(await readFile(new URL(`../../${SPEC_FIELDS_TEMPLATE}`, import.meta.url), 'utf8')).toBe(specFieldsPolicyTemplate());
  });

  it('checks every strict object of every spec, each for its own kind', () => {
    const { variables, validations } = specFieldChecks(specSchemas());
    expect(validations.map((v) => v.message.split(' has a field')[0])).toEqual([
      'a field beside spec that the CRD does not declare; the fields there are apiVersion, kind, metadata, spec, status',
      'GuardAgent spec',
      'GuardAgent spec.identities[]',
      'GuardAgent spec.identities[].serviceAccount',
      'GuardAgent spec.rateLimit',
      'GuardPolicy spec',
      'GuardPolicy spec.agentSelector',
      'GuardPolicy spec.agentSelector.matchExpressions[]',
      'GuardPolicy spec.rules[]',
      'GuardPolicy spec.rules[].match',
      'GuardPolicy spec.rules[].match.arguments[]',
      'GuardPolicy spec.rules[].approval',
      'GuardUpstream spec',
      'GuardUpstream spec.headers[]',
      'GuardUpstream spec.headers[].valueFrom',
      'GuardUpstream spec.headers[].valueFrom.secretKeyRef',
      'GuardApproval spec',
      'GuardApproval spec.rules[]',
    ]);
    const plurals: Record<string, string> = { GuardAgent: 'guardagents', GuardPolicy: 'guardpolicies', GuardUpstream: 'guardupstreams', GuardApproval: 'guardapprovals' };
    expect(variables[0]).toEqual({ name: 'top_level', expression: "dyn(object).all(k, k in ['apiVersion', 'kind', 'metadata', 'spec', 'status'])" });
    validations.forEach((v, i) => {
      const variable = variables[i]!;
      if (i === 0) return expect(v.expression).toBe('variables.top_level');
      expect(variable.expression.startsWith(`request.resource.resource != '${plurals[v.message.split(' ')[0]!]}' || `)).toBe(true);
      expect(v.expression).toBe(`variables.${variable.name}`);
      // The message costs nothing more on a clean object: it reads the variable first.
      expect(v.messageExpression.startsWith(`variables.${variable.name} ? '' : `)).toBe(true);
    });
    expect(new Set(variables.map((v) => v.name)).size).toBe(variables.length);
  });

  it('refuses to generate what it cannot express: a map of strict objects, a field name CEL would need escaped', () => {
    const strict = (properties: Record<string, unknown>) => ({ type: 'object', properties, 'x-kubernetes-preserve-unknown-fields': true });
    const kind = (spec: Record<string, unknown>) => [{ kind: 'GuardThing', plural: 'guardthings', spec }];
    expect(() => specFieldChecks(kind(strict({ byName: { type: 'object', additionalProperties: strict({ a: { type: 'string' } }) } })))).toThrow(/a map of strict objects is not supported/);
    expect(() => specFieldChecks(kind(strict({ "it's": { type: 'string' } })))).toThrow(/field name "it's" cannot go into CEL unescaped/);
    expect(() => specFieldChecks(kind(strict({ 'a-b': strict({ c: { type: 'string' } }) })))).toThrow(/field name "a-b"/);
  });

  it('`policyguard crds --admission` prints the policy and its binding, named policyguard-spec-fields', () => {
    const docs = parseAllDocuments(specFieldsPolicyYaml()).map((d) => d.toJS());
    expect(docs.map((d) => `${d.kind} ${d.metadata.name}`)).toEqual(['ValidatingAdmissionPolicy policyguard-spec-fields', 'ValidatingAdmissionPolicyBinding policyguard-spec-fields']);
    expect(docs[1].spec).toEqual({ policyName: 'policyguard-spec-fields', validationActions: ['Deny'] });
    expect(docs[0].spec.validations).toEqual(specFieldChecks(specSchemas()).validations);
  });
});
