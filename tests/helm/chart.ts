// Helpers for tests of the Helm chart (helm/policyguard) and the config samples against the
// test control plane: render the chart, split YAML into objects, install third-party CRDs.

import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

import { CoreV1Api, type KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';

import { REPO_ROOT, runProgram, waitForCrdEstablished, type ExecResult } from '../controlplane/index.js';
import { sharedKubectl } from '../controlplane/test-context.js';
import { ensureHelm } from './binary.js';

export { REPO_ROOT };
export const CHART_DIR = join(REPO_ROOT, 'helm', 'policyguard');
/** Values with every optional feature on. */
export const ALL_FEATURES_VALUES = join(CHART_DIR, 'ci', 'all-features-values.yaml');
/** Third-party CRDs (kagent, Argo CD, Flux), beside the repository as on CI. */
/** Third-party CRDs (kagent, Argo CD, Flux, the two policy-report APIs), copied unchanged with their provenance in its README. */
export const VENDOR_CRDS_DIR = join(REPO_ROOT, 'tests', 'fixtures', 'vendor-crds');
export const FIXTURES_DIR = join(REPO_ROOT, 'tests', 'helm', 'fixtures');
/** The Kubernetes version of the test control plane: render for it, not Helm's default. */
export const KUBE_VERSION = '1.35.4';

/** Runs helm (built on first use, see ./binary.ts). */
export async function helm(args: string[]): Promise<ExecResult> {
  return runProgram({ command: await ensureHelm(), args: [] }, args, { cwd: REPO_ROOT });
}

export interface RenderOptions {
  release?: string;
  namespace?: string;
  valuesFiles?: string[];
  /** `--set` expressions. */
  set?: string[];
  includeCrds?: boolean;
  /** Render for this Kubernetes version instead of the test control plane's. */
  kubeVersion?: string;
}

function templateArgs(o: RenderOptions): string[] {
  return [
    'template', o.release ?? 'pg', CHART_DIR, '--namespace', o.namespace ?? 'policyguard', '--kube-version', o.kubeVersion ?? KUBE_VERSION,
    ...(o.includeCrds ? ['--include-crds'] : []),
    ...(o.valuesFiles ?? []).flatMap((f) => ['--values', f]),
    ...(o.set ?? []).flatMap((s) => ['--set', s]),
  ];
}

/** `helm template`; resolves with the rendered YAML, rejects with helm's message. */
export async function renderChart(o: RenderOptions = {}): Promise<string> {
  const r = await helm(templateArgs(o));
  if (r.code !== 0) throw new Error(`helm ${templateArgs(o).join(' ')} failed (exit ${r.code}):\n${r.stderr}`);
  return r.stdout;
}

/** `helm template` that is expected to fail: resolves with its error output. */
export async function renderError(o: RenderOptions): Promise<string> {
  const r = await helm(templateArgs(o));
  if (r.code === 0) throw new Error(`helm ${templateArgs(o).join(' ')} succeeded, but should have failed`);
  return r.stderr;
}

/** Objects of a multi-document YAML stream (empty documents dropped). */
export function parseObjects(yaml: string): KubernetesObject[] {
  return parseAllDocuments(yaml).flatMap((d) => {
    if (d.errors.length) throw new Error(`invalid YAML: ${d.errors[0]!.message}`);
    const o = d.toJS() as KubernetesObject | null;
    return o && typeof o === 'object' ? [o] : [];
  });
}

export const findObject = (objs: KubernetesObject[], kind: string, name?: string): any =>
  objs.find((o) => o.kind === kind && (name === undefined || o.metadata?.name === name));

/** Creates the namespaces that do not exist yet. */
export async function ensureNamespaces(kc: KubeConfig, names: string[]): Promise<void> {
  const core = kc.makeApiClient(CoreV1Api);
  for (const name of new Set(names)) {
    try {
      await core.createNamespace({ body: { metadata: { name } } });
    } catch (e) {
      if ((e as { code?: number }).code !== 409) throw e;
    }
  }
}

/**
 * Installs the CRDs in `dir` with `kubectl apply --server-side`, as a user would (client-node's
 * typed serializer would drop their `default`s), and waits until they are Established. Test
 * files run in parallel and may install the same CRDs: a lost create race is retried.
 */
export async function installCrds(kc: KubeConfig, dir: string): Promise<void> {
  if (!existsSync(dir) || readdirSync(dir).length === 0) {
    throw new Error(`no CRDs in ${dir}: the third-party CRDs live in tests/fixtures/vendor-crds`);
  }
  for (let attempt = 1; ; attempt++) {
    const r = await sharedKubectl(['apply', '--server-side', '--field-manager', 'policyguard-tests', '-f', dir]);
    if (r.code === 0) {
      const names = [...r.stdout.matchAll(/customresourcedefinition\.apiextensions\.k8s\.io\/(\S+)/g)].map((m) => m[1]!);
      await Promise.all(names.map((n) => waitForCrdEstablished(kc, n)));
      return;
    }
    if (attempt >= 3 || !/conflict|already exists/i.test(r.stderr)) throw new Error(`kubectl apply --server-side -f ${dir} failed: ${r.stderr || r.stdout}`);
  }
}

/** `kubectl apply --server-side --dry-run=server` of a YAML stream, with strict field validation. */
export function serverDryRun(yaml: string): Promise<ExecResult> {
  return sharedKubectl(['apply', '--server-side', '--dry-run=server', '--validate=strict', '--field-manager', 'policyguard-tests', '-f', '-'], yaml);
}
