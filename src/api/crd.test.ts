import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { crdDigests, generateCrds, SCHEMA_DIGEST_ANNOTATION } from './crd.js';

const repoFile = (p: string) => new URL(`../../${p}`, import.meta.url);

describe('generated CRDs', () => {
  it.each(generateCrds().map((c) => [c.fileName, c.yaml]))('crds/%s matches src/api/schemas.ts (run `npm run crds` after editing the schemas)', async (fileName, yaml) => {
    expect(await readFile(repoFile(`crds/${fileName}`), 'utf8')).toBe(yaml);
  });

  it('are structural: every schema node has a type, and no zod-only keywords leak through', () => {
    const walk = (node: Record<string, unknown>, path: string) => {
      expect(node.type, path).toBeTypeOf('string');
      for (const k of ['$schema', 'anyOf', 'oneOf', 'allOf', 'const', '$ref']) expect(node, path).not.toHaveProperty(k);
      for (const [k, v] of Object.entries((node.properties as Record<string, Record<string, unknown>>) ?? {})) walk(v, `${path}.${k}`);
      if (node.items) walk(node.items as Record<string, unknown>, `${path}[]`);
      if (typeof node.additionalProperties === 'object') walk(node.additionalProperties as Record<string, unknown>, `${path}{}`);
    };
    for (const { yaml } of generateCrds()) {
      const crd = parse(yaml);
      walk(crd.spec.versions[0].schema.openAPIV3Schema, crd.metadata.name);
    }
  });

  it('keep unknown spec fields and nulls in optional spec fields, so PolicyGuard refuses what the API server would prune; the status prunes them', () => {
    const objects = (node: Record<string, any>, path: string): [string, Record<string, any>][] => [
      ...(node.properties ? [[path, node] as [string, Record<string, any>]] : []),
      ...Object.entries(node.properties ?? {}).flatMap(([k, v]) => objects(v as Record<string, any>, `${path}.${k}`)),
      ...(node.items ? objects(node.items, `${path}[]`) : []),
    ];
    for (const { yaml } of generateCrds()) {
      const root = parse(yaml).spec.versions[0].schema.openAPIV3Schema;
      const spec = objects(root.properties.spec, 'spec');
      expect(spec.length).toBeGreaterThan(0);
      expect(root['x-kubernetes-preserve-unknown-fields']).toBe(true);
      for (const [path, node] of spec) {
        expect(node['x-kubernetes-preserve-unknown-fields'], path).toBe(true);
        for (const [name, property] of Object.entries(node.properties as Record<string, any>)) {
          expect(property.nullable, `${path}.${name}`).toBe(node.required?.includes(name) ? undefined : true);
        }
      }
      for (const [path, node] of objects(root.properties.status, 'status')) {
        expect(node, path).not.toHaveProperty('x-kubernetes-preserve-unknown-fields');
        for (const [name, property] of Object.entries(node.properties as Record<string, any>)) expect(property, `${path}.${name}`).not.toHaveProperty('nullable');
      }
    }
  });

  it('carry the digest of their spec, which crdDigests gives the server to compare', () => {
    const digests = crdDigests();
    for (const { yaml } of generateCrds()) {
      const crd = parse(yaml);
      expect(crd.metadata.annotations[SCHEMA_DIGEST_ANNOTATION]).toBe(digests.get(crd.metadata.name));
      expect(crd.metadata.annotations[SCHEMA_DIGEST_ANNOTATION]).toMatch(/^sha256:[0-9a-f]{64}$/);
    }
    expect(new Set(digests.values()).size).toBe(4);
  });

  it('carry the CEL rule that trustLevelBelow must be above trustLevelAtLeast', () => {
    const policyCrd = generateCrds().find((c) => c.fileName.startsWith('guardpolicies'))!;
    expect(policyCrd.yaml).toContain('trustLevelBelow must be above trustLevelAtLeast');
  });
});
