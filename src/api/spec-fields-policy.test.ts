import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { SPEC_FIELDS_TEMPLATE, specFieldsPolicyTemplate } from './spec-fields-policy.js';

describe('the spec-fields admission policy', () => {
  it(`${SPEC_FIELDS_TEMPLATE} matches src/api/schemas.ts (run \`npm run crds\` after editing the schemas)`, async () => {
    expect(await readFile(new URL(`../../${SPEC_FIELDS_TEMPLATE}`, import.meta.url), 'utf8')).toBe(specFieldsPolicyTemplate());
  });

  it('has one validation per strict object of each spec, each for its own kind', () => {
    // The template without its Helm lines is YAML.
    const text = specFieldsPolicyTemplate().replace(/^.*\{\{.*$/gm, '');
    const policy = parse(text.split('\n---\n')[0]!);
    const paths = policy.spec.validations.map((v: { messageExpression: string }) => /^'(\w+ [^:']*)/.exec(v.messageExpression)?.[1]);
    expect(paths).toContain('GuardPolicy spec.rules[');
    expect(paths).toContain('GuardAgent spec');
    expect(paths.filter((p: string) => p.startsWith('GuardPolicy ')).length).toBe(7);
    for (const v of policy.spec.validations) expect(v.expression).toMatch(/^request\.resource\.resource != 'guard\w+' \|\| /);
  });
});
