/**
 * The Helm chart (helm/policyguard): its CRDs match the generated ones, `helm lint` passes,
 * `helm template` renders with defaults and with every optional feature on, bad values fail at
 * install, and the real kube-apiserver accepts everything it renders (server-side dry run).
 * helm comes from tests/helm/binary.ts (PATH, or built once from the Go module).
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateCrds } from '../../src/api/crd.js';
import { parseServeConfig } from '../../src/config.js';
import { AppsV1Api, CoreV1Api } from '@kubernetes/client-node';
import { sharedKubeConfig, sharedKubeconfigPath, sharedKubectl } from '../controlplane/test-context.js';
import { ensureHelm } from '../helm/binary.js';
import {
  ALL_FEATURES_VALUES, CHART_DIR, FIXTURES_DIR, REPO_ROOT, VENDOR_CRDS_DIR, ensureNamespaces, findObject, helm, installCrds, parseObjects,
  renderChart, renderError, serverDryRun,
} from '../helm/chart.js';
import { createNamespace } from './harness.js';

const COLD_HELM_BUILD_MS = 20 * 60_000;

beforeAll(async () => {
  await ensureHelm();
}, COLD_HELM_BUILD_MS);

describe('chart CRDs', () => {
  const chartCrds = join(CHART_DIR, 'crds');
  it('are the generated CRDs, byte for byte, as are crds/ (sync both: npm run crds)', () => {
    const generated = generateCrds();
    expect(readdirSync(chartCrds).sort()).toEqual(generated.map((c) => c.fileName).sort());
    for (const c of generated) {
      expect(readFileSync(join(chartCrds, c.fileName), 'utf8'), c.fileName).toBe(c.yaml);
      expect(readFileSync(join(chartCrds, c.fileName), 'utf8'), `${c.fileName} vs crds/`).toBe(readFileSync(join(REPO_ROOT, 'crds', c.fileName), 'utf8'));
    }
  });
});

describe('helm lint and template', () => {
  it.each([
    ['default values', []],
    ['every optional feature on', ['--values', ALL_FEATURES_VALUES]],
  ])('helm lint --strict passes with %s', async (_what, args) => {
    const r = await helm(['lint', '--strict', CHART_DIR, ...args]);
    expect(r.stdout + r.stderr).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
    expect(r.code).toBe(0);
  });

  it('renders the secure defaults: 2 replicas, non-root, read-only root, no capabilities, seccomp, probes, resources', async () => {
    const objs = parseObjects(await renderChart());
    expect(objs.map((o) => o.kind).sort()).toEqual([
      'ClusterRole', 'ClusterRole', 'ClusterRole', 'ClusterRole', 'ClusterRole', 'ClusterRole', 'ClusterRole', 'ClusterRoleBinding', 'ClusterRoleBinding', 'ClusterRoleBinding', 'ClusterRoleBinding', 'ClusterRoleBinding', 'Deployment',
      'PodDisruptionBudget', 'Role', 'RoleBinding', 'Secret', 'Service', 'ServiceAccount',
      'ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding', 'ValidatingAdmissionPolicyBinding', 'ValidatingAdmissionPolicyBinding',
    ]);
    const deploy = findObject(objs, 'Deployment');
    const pod = deploy.spec.template.spec;
    const c = pod.containers[0];
    expect(deploy.spec.replicas).toBe(2);
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 1000, seccompProfile: { type: 'RuntimeDefault' } });
    expect(c.securityContext).toEqual({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, runAsNonRoot: true, capabilities: { drop: ['ALL'] } });
    expect(c.livenessProbe.httpGet.path).toBe('/healthz');
    expect(c.readinessProbe.httpGet.path).toBe('/readyz');
    expect(c.resources.requests).toEqual({ cpu: '100m', memory: '128Mi' });
    expect(c.resources.limits.memory).toBe('512Mi');
    expect(c.args).toEqual(['serve']);
    const env = Object.fromEntries(c.env.map((e: any) => [e.name, e.value ?? e.valueFrom.fieldRef.fieldPath]));
    expect(env).toMatchObject({
      POLICYGUARD_NAMESPACE: 'metadata.namespace', POLICYGUARD_REPLICA_ID: 'metadata.name', POLICYGUARD_HOST: '0.0.0.0',
      POLICYGUARD_PORT: '8000', POLICYGUARD_AUDIT_SINK: 'configmap', POLICYGUARD_CLUSTER_POLICY_NAMESPACE: 'policyguard',
      // Callers authenticate with ServiceAccount tokens for audience policyguard.
      POLICYGUARD_AUTH: 'kubernetes', POLICYGUARD_TOKEN_AUDIENCES: 'policyguard', POLICYGUARD_ACCEPT_API_SERVER_AUDIENCE: 'false',
      // DNS rebinding: only the Service's names, and loopback for kubectl port-forward.
      POLICYGUARD_ALLOWED_HOSTS: 'pg-policyguard,pg-policyguard.policyguard,pg-policyguard.policyguard.svc,pg-policyguard.policyguard.svc.cluster.local,localhost,127.0.0.1,[::1]',
      // Fail closed: unknown agent ids refused, a decision that cannot be audited refused, guessing tokens throttled.
      POLICYGUARD_UNKNOWN_AGENTS: 'deny', POLICYGUARD_AUDIT_FAILURE_MODE: 'closed', POLICYGUARD_AUTH_FAILURE_LIMIT: '20/1s', POLICYGUARD_AUTO_REGISTER_PER_CALLER: '1',
      // The audit chain is keyed (a generated Secret) and anchored every 30s.
      POLICYGUARD_AUDIT_KEY_FILE: '/etc/policyguard/audit-key/audit.key', POLICYGUARD_AUDIT_ANCHOR_INTERVAL: '30s',
    });
    expect(env).not.toHaveProperty('POLICYGUARD_WATCH_NAMESPACES'); // all namespaces
    expect(env).not.toHaveProperty('POLICYGUARD_DATA_DIR'); // the configmap sink needs no volume
    expect(pod.volumes).toEqual([
      { name: 'tmp', emptyDir: { sizeLimit: '64Mi' } },
      { name: 'audit-key', secret: { secretName: 'pg-policyguard-audit-key', defaultMode: 0o440, items: [{ key: 'audit.key', path: 'audit.key' }] } },
    ]);
    expect(c.volumeMounts).toContainEqual({ name: 'audit-key', mountPath: '/etc/policyguard/audit-key', readOnly: true });
    expect(findObject(objs, 'PodDisruptionBudget').spec.maxUnavailable).toBe(1);
    expect(findObject(objs, 'Service').spec.ports[0]).toMatchObject({ port: 8000, targetPort: 'http' });
  });

  it('grants only the verbs the server uses (the list in docs/deploy.md)', async () => {
    const objs = parseObjects(await renderChart());
    expect(findObject(objs, 'ClusterRole', 'pg-policyguard').rules).toEqual([
      { apiGroups: ['policyguard.dev'], resources: ['guardagents', 'guardpolicies'], verbs: ['get', 'list', 'watch', 'create', 'patch'] },
      { apiGroups: ['policyguard.dev'], resources: ['guardupstreams'], verbs: ['list', 'watch'] },
      { apiGroups: ['policyguard.dev'], resources: ['guardagents/status', 'guardpolicies/status', 'guardupstreams/status'], verbs: ['patch'] },
      { apiGroups: ['policyguard.dev'], resources: ['guardapprovals'], verbs: ['get', 'list', 'watch', 'create', 'delete'] },
      { apiGroups: ['policyguard.dev'], resources: ['guardapprovals/status'], verbs: ['get', 'update', 'patch'] }, // Pending, Used, Expired
      { apiGroups: ['events.k8s.io'], resources: ['events'], verbs: ['create', 'patch'] },
    ]);
    // Secrets only when asked for: RBAC cannot grant them by label (the gateway's upstream credentials).
    expect(findObject(parseObjects(await renderChart({ set: ['gateway.readSecrets=true'] })), 'ClusterRole', 'pg-policyguard').rules).toContainEqual({ apiGroups: [''], resources: ['secrets'], verbs: ['get'] });
    // Policy reports (reports.api=auto): create and patch of both report kinds, nothing else.
    expect(findObject(objs, 'ClusterRole', 'pg-policyguard-reports').rules).toEqual([
      { apiGroups: ['openreports.io'], resources: ['reports'], verbs: ['create', 'patch'] },
      { apiGroups: ['wgpolicyk8s.io'], resources: ['policyreports'], verbs: ['create', 'patch'] },
    ]);
    // Its own CRDs, read by name to check they are the ones it ships; bound cluster-wide (CRDs are cluster-scoped).
    expect(findObject(objs, 'ClusterRole', 'pg-policyguard-crds').rules).toEqual([
      { apiGroups: ['apiextensions.k8s.io'], resources: ['customresourcedefinitions'], resourceNames: ['guardagents.policyguard.dev', 'guardpolicies.policyguard.dev', 'guardupstreams.policyguard.dev', 'guardapprovals.policyguard.dev'], verbs: ['get'] },
    ]);
    expect(findObject(objs, 'ClusterRoleBinding', 'pg-policyguard-crds').roleRef).toMatchObject({ kind: 'ClusterRole', name: 'pg-policyguard-crds' });
    expect(findObject(objs, 'Role').rules).toEqual([
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'] },
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], resourceNames: ['policyguard-leader'], verbs: ['get', 'update'] },
      { apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'list', 'create', 'update', 'delete'] }, // the ring, and the audit anchor
    ]);
    // register_agent and auto-registration may set any trust level (the server checks its callers itself).
    expect(findObject(objs, 'ClusterRoleBinding', 'pg-policyguard-trust-granter')).toMatchObject({
      roleRef: { kind: 'ClusterRole', name: 'pg-policyguard-trust-granter-admin' },
      subjects: [{ kind: 'ServiceAccount', name: 'pg-policyguard', namespace: 'policyguard' }],
    });
    expect(findObject(objs, 'ClusterRole', 'pg-policyguard-trust-granter-admin').rules).toEqual([
      { apiGroups: ['policyguard.dev'], resources: ['trustlevels'], resourceNames: ['high', 'admin'], verbs: ['grant'] },
    ]);
    // Trust labels (docs/deploy.md): the role to bind cluster-wide; the server itself sets none.
    expect(findObject(objs, 'ClusterRole', 'pg-policyguard-trust-labeler').rules).toEqual([{ apiGroups: ['policyguard.dev'], resources: ['trustlabels'], verbs: ['grant'] }]);
    expect(findObject(objs, 'ClusterRole', 'pg-policyguard-trust-granter-high').rules).toEqual([
      { apiGroups: ['policyguard.dev'], resources: ['trustlevels'], resourceNames: ['high'], verbs: ['grant'] },
    ]);
    // For the people who decide GuardApprovals (docs/deploy.md, "Approvals").
    expect(findObject(objs, 'ClusterRole', 'pg-policyguard-approver').rules).toEqual([
      { apiGroups: ['policyguard.dev'], resources: ['guardapprovals'], verbs: ['get', 'list', 'watch', 'approve'] },
      { apiGroups: ['policyguard.dev'], resources: ['guardapprovals/status'], verbs: ['get', 'update', 'patch'] },
    ]);
    expect(findObject(objs, 'Role').metadata.namespace).toBe('policyguard');
    expect(findObject(objs, 'ClusterRoleBinding', 'pg-policyguard').subjects).toEqual([{ kind: 'ServiceAccount', name: 'pg-policyguard', namespace: 'policyguard' }]);
    // --auth kubernetes (the default): TokenReview and SubjectAccessReview, nothing else.
    expect(findObject(objs, 'ClusterRoleBinding', 'pg-policyguard-auth-delegator').roleRef).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'system:auth-delegator' });
  });

  it('renders every optional feature: PVC, ServiceMonitor, RemoteMCPServer, NetworkPolicy, per-namespace RBAC, token auth, TLS', async () => {
    const objs = parseObjects(await renderChart({ valuesFiles: [ALL_FEATURES_VALUES] }));
    const pod = findObject(objs, 'Deployment').spec.template.spec;
    const env = Object.fromEntries(pod.containers[0].env.map((e: any) => [e.name, e.value]));
    // The release namespace (MCP writes) and the cluster policy namespace are always watched.
    expect(env.POLICYGUARD_WATCH_NAMESPACES).toBe('policyguard,policyguard-global,team-a,team-b');
    expect(env.POLICYGUARD_DATA_DIR).toBe('/var/lib/policyguard/$(POLICYGUARD_REPLICA_ID)');
    expect(pod.volumes).toContainEqual({ name: 'data', persistentVolumeClaim: { claimName: 'pg-policyguard-audit' } });
    expect(findObject(objs, 'PersistentVolumeClaim').spec).toMatchObject({ accessModes: ['ReadWriteMany'], storageClassName: 'shared-rwx' });
    expect(findObject(objs, 'ServiceMonitor').spec.endpoints).toEqual([{
      port: 'http', path: '/metrics', scheme: 'https', interval: '30s', scrapeTimeout: '10s',
      tlsConfig: { ca: { secret: { name: 'policyguard-tls', key: 'ca.crt' } }, serverName: 'pg-policyguard.policyguard.svc' },
    }]);
    expect(findObject(objs, 'RemoteMCPServer')).toMatchObject({
      apiVersion: 'kagent.dev/v1alpha2',
      metadata: { name: 'pg-policyguard', namespace: 'kagent' },
      spec: { protocol: 'STREAMABLE_HTTP' },
    });
    expect(findObject(objs, 'NetworkPolicy').spec.ingress[0].from).toHaveLength(2);
    expect(findObject(objs, 'ClusterRoleBinding', 'pg-policyguard')).toBeUndefined(); // no cluster-wide grant
    expect(objs.filter((o) => o.kind === 'RoleBinding' && o.metadata?.name === 'pg-policyguard').map((o) => o.metadata?.namespace).sort())
      .toEqual(['policyguard', 'policyguard-global', 'team-a', 'team-b']);
    expect(findObject(objs, 'ClusterRoleBinding', 'pg-policyguard-auth-delegator')).toBeUndefined(); // auth token: no TokenReview
    expect(env).toMatchObject({ POLICYGUARD_AUTH: 'token', POLICYGUARD_TOKEN_FILE: '/etc/policyguard/tokens/tokens', POLICYGUARD_ALLOWED_HOSTS: 'policyguard.example.com,localhost' });
    expect(pod.volumes).toContainEqual({ name: 'tokens', secret: { secretName: 'policyguard-tokens', items: [{ key: 'tokens', path: 'tokens' }] } });
    // TLS: the server gets the Secret's certificate; probes, Service, scrape and kagent speak HTTPS.
    expect(env).toMatchObject({ POLICYGUARD_TLS_CERT: '/etc/policyguard/tls/tls.crt', POLICYGUARD_TLS_KEY: '/etc/policyguard/tls/tls.key' });
    expect(pod.volumes).toContainEqual({ name: 'tls', secret: { secretName: 'policyguard-tls', items: [{ key: 'tls.crt', path: 'tls.crt' }, { key: 'tls.key', path: 'tls.key' }] } });
    for (const probe of ['startupProbe', 'livenessProbe', 'readinessProbe']) expect(pod.containers[0][probe].httpGet.scheme, probe).toBe('HTTPS');
    expect(findObject(objs, 'Service').spec.ports[0].appProtocol).toBe('https');
    expect(findObject(objs, 'RemoteMCPServer').spec).toMatchObject({ url: 'https://pg-policyguard.policyguard:8000/mcp', tls: { caCertSecretRef: 'policyguard-ca' } });
    // No ConfigMap sink: ConfigMaps only for the audit anchor.
    expect(findObject(objs, 'Role').rules.at(-1)).toEqual({ apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'create', 'update'] });
    // The audit key from an existing Secret, under its own data key; no generated Secret.
    expect(env).toMatchObject({ POLICYGUARD_AUDIT_KEY_FILE: '/etc/policyguard/audit-key/hmac', POLICYGUARD_AUDIT_ANCHOR_INTERVAL: '1m', POLICYGUARD_AUTH_FAILURE_LIMIT: '50/1m', POLICYGUARD_AUTO_REGISTER_PER_CALLER: '3' });
    expect(pod.volumes).toContainEqual({ name: 'audit-key', secret: { secretName: 'policyguard-audit-key', defaultMode: 0o440, items: [{ key: 'hmac', path: 'hmac' }] } });
    expect(findObject(objs, 'Secret')).toBeUndefined();
  });

  it('rolls one replica on a ReadWriteOnce audit volume old-Pod-first (the successor could not attach it on another node); otherwise surge-first', async () => {
    const strategy = async (set: string[]) => findObject(parseObjects(await renderChart({ set })), 'Deployment').spec.strategy;
    expect(await strategy(['audit.sink=file', 'replicaCount=1'])).toEqual({ type: 'RollingUpdate', rollingUpdate: { maxSurge: 0, maxUnavailable: 1 } });
    expect(await strategy([])).toEqual({ type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } });
    expect((await strategy(['audit.sink=file', 'replicaCount=2', 'audit.persistence.accessModes={ReadWriteMany}'])).rollingUpdate).toEqual({ maxSurge: 1, maxUnavailable: 0 });
  });

  it('large numbers from a values file reach the server as digits (a values file gives floats, which quote renders as 1e+06)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pg-helm-values-'));
    try {
      const file = join(dir, 'values.yaml');
      writeFileSync(file, 'containerPort: 8000\nconfig: {autoRegisterLimit: 1000000, autoRegisterPerCaller: 2000000}\n');
      const env = findObject(parseObjects(await renderChart({ valuesFiles: [file] })), 'Deployment').spec.template.spec.containers[0].env as Array<{ name: string; value?: string }>;
      const value = (name: string) => env.find((e) => e.name === name)?.value;
      expect([value('POLICYGUARD_PORT'), value('POLICYGUARD_AUTO_REGISTER_LIMIT'), value('POLICYGUARD_AUTO_REGISTER_PER_CALLER')]).toEqual(['8000', '1000000', '2000000']);
      // And the server takes them.
      expect(parseServeConfig(['--standalone', '--config-dir', 'c', '--data-dir', 'd'], { POLICYGUARD_AUTO_REGISTER_LIMIT: value('POLICYGUARD_AUTO_REGISTER_LIMIT') }).autoRegisterLimit).toBe(1_000_000);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('config.otelSampleRatio goes with otelEndpoint, and the server takes it as the chart renders it (a small one as 1e-05)', async () => {
    const env = async (o: { set?: string[]; valuesFiles?: string[] }) =>
      Object.fromEntries(findObject(parseObjects(await renderChart(o)), 'Deployment').spec.template.spec.containers[0].env.map((e: any) => [e.name, e.value]));
    expect(await env({})).not.toHaveProperty('POLICYGUARD_OTEL_SAMPLE_RATIO');
    expect(await env({ set: ['config.otelEndpoint=http://otel-collector:4318'] })).toMatchObject({ POLICYGUARD_OTEL_SAMPLE_RATIO: '1' });
    // A number, so from a values file (or --set-json): --set gives Helm a string.
    const dir = mkdtempSync(join(tmpdir(), 'pg-helm-values-'));
    try {
      const file = join(dir, 'values.yaml');
      writeFileSync(file, 'config: {otelEndpoint: "http://otel-collector:4318", otelSampleRatio: 0.00001}\n');
      const small = await env({ valuesFiles: [file] });
      expect(small.POLICYGUARD_OTEL_SAMPLE_RATIO).toBe('1e-05');
      expect(parseServeConfig(['--standalone', '--config-dir', 'c', '--data-dir', 'd'], { POLICYGUARD_OTEL_SAMPLE_RATIO: small.POLICYGUARD_OTEL_SAMPLE_RATIO }).otelSampleRatio).toBe(0.00001);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('audit.key.create=true (the default) generates a 64-character key; create=false mounts no key', async () => {
    const secret = findObject(parseObjects(await renderChart()), 'Secret', 'pg-policyguard-audit-key');
    expect(secret.metadata.annotations).toEqual({ 'helm.sh/resource-policy': 'keep' }); // records signed with it stay verifiable
    expect(Buffer.from(secret.data['audit.key'], 'base64').toString()).toMatch(/^[A-Za-z0-9]{64}$/);
    const pod = findObject(parseObjects(await renderChart({ set: ['audit.key.create=false'] })), 'Deployment').spec.template.spec;
    expect(pod.containers[0].env.map((e: any) => e.name)).not.toContain('POLICYGUARD_AUDIT_KEY_FILE');
    expect(pod.volumes.map((v: any) => v.name)).toEqual(['tmp']);
  });

  it('admission is on by default: the trust-grant, approvals and spec-fields ValidatingAdmissionPolicies fail closed and deny; admission.enabled=false removes them with the grants', async () => {
    const objs = parseObjects(await renderChart());
    const policy = findObject(objs, 'ValidatingAdmissionPolicy', 'pg-policyguard-trust-grant');
    expect(policy.spec.failurePolicy).toBe('Fail');
    expect(policy.spec.matchConstraints.resourceRules).toEqual([{ apiGroups: ['policyguard.dev'], apiVersions: ['*'], operations: ['CREATE', 'UPDATE'], resources: ['guardagents'] }]);
    expect(findObject(objs, 'ValidatingAdmissionPolicyBinding', 'pg-policyguard-trust-grant').spec).toEqual({ policyName: 'pg-policyguard-trust-grant', validationActions: ['Deny'] });
    const approvals = findObject(objs, 'ValidatingAdmissionPolicy', 'pg-policyguard-approvals');
    expect(approvals.spec.failurePolicy).toBe('Fail');
    expect(approvals.spec.matchConstraints.resourceRules).toEqual([
      { apiGroups: ['policyguard.dev'], apiVersions: ['*'], operations: ['CREATE', 'UPDATE'], resources: ['guardapprovals', 'guardapprovals/status'] },
    ]);
    expect(approvals.spec.variables[0]).toEqual({ name: 'operator', expression: "'system:serviceaccount:policyguard:pg-policyguard'" });
    expect(findObject(objs, 'ValidatingAdmissionPolicyBinding', 'pg-policyguard-approvals').spec).toEqual({ policyName: 'pg-policyguard-approvals', validationActions: ['Deny'] });
    const fields = findObject(objs, 'ValidatingAdmissionPolicy', 'pg-policyguard-spec-fields');
    expect(fields.spec.failurePolicy).toBe('Fail');
    expect(fields.spec.matchConstraints.resourceRules).toEqual([
      { apiGroups: ['policyguard.dev'], apiVersions: ['v1alpha1'], operations: ['CREATE', 'UPDATE'], resources: ['guardagents', 'guardpolicies', 'guardupstreams', 'guardapprovals'] },
    ]);
    expect(findObject(objs, 'ValidatingAdmissionPolicyBinding', 'pg-policyguard-spec-fields').spec).toEqual({ policyName: 'pg-policyguard-spec-fields', validationActions: ['Deny'] });
    const off = parseObjects(await renderChart({ set: ['admission.enabled=false'] }));
    expect(off.filter((o) => /trust-gran|-approvals$|-spec-fields$/.test(o.metadata?.name ?? '')).map((o) => `${o.kind} ${o.metadata?.name}`)).toEqual([]);
    // People still need the role to decide; then nothing asks for its approve verb (NOTES warns).
    expect(findObject(off, 'ClusterRole', 'pg-policyguard-approver')).toBeDefined();
  });

  it.each([
    ['default values', [] as string[]],
    ['every optional feature on', [ALL_FEATURES_VALUES]],
  ])('with %s, every POLICYGUARD_* variable the pod gets is a server flag, and the server accepts them together', async (_what, valuesFiles) => {
    const pod = findObject(parseObjects(await renderChart({ valuesFiles })), 'Deployment').spec.template.spec;
    const c = pod.containers[0];
    // What the kubelet would pass: downward API values, then $(VAR) references expanded.
    const env: Record<string, string> = {};
    for (const e of c.env) {
      const raw: string = e.value ?? { 'metadata.namespace': 'policyguard', 'metadata.name': 'pg-policyguard-7d9f8-x2x4q' }[e.valueFrom.fieldRef.fieldPath as string];
      env[e.name] = raw.replace(/\$\((\w+)\)/g, (_m: string, v: string) => env[v] ?? '');
    }
    const config = parseServeConfig(c.args.slice(1), env) as Record<string, unknown>;
    for (const name of Object.keys(env).filter((n) => n.startsWith('POLICYGUARD_'))) {
      const key = name.slice('POLICYGUARD_'.length).toLowerCase().replace(/_([a-z])/g, (_m, ch: string) => ch.toUpperCase());
      expect(config[key], `${name} is not a flag the server knows (no config.${key})`).not.toBeUndefined();
    }
    expect(config).toMatchObject({ host: '0.0.0.0', namespace: 'policyguard', replicaId: 'pg-policyguard-7d9f8-x2x4q', standalone: false });
  });

  it.each([
    ['replicaCount=0', /at '\/replicaCount': minimum/],
    ['replicas=3', /additional properties 'replicas' not allowed/],
    ['audit.sink=s3', /at '\/audit\/sink': value must be one of 'configmap', 'file'/],
    ['config.auth=oauth', /at '\/config\/auth'/],
    ['config.auth=token', /at '\/config\/tokenSecret': minLength/],
    ['leaderElection.leaseDuration=15s0', /at '\/leaderElection\/leaseDuration'/],
    ['networkPolicy.enabled=true', /at '\/networkPolicy\/from': minItems/],
    ['image.repository=', /at '\/image\/repository'/],
    ['leaderElection.enabled=false', /every replica would write status/],
    ['leaderElection.renewDeadline=20s', /renewDeadline \(20s\) must be shorter than leaderElection.leaseDuration \(15s\)/],
    ['audit.sink=file', /must include ReadWriteMany/],
    ['shutdownDelaySeconds=40', /terminationGracePeriodSeconds \(30\) must be at least shutdownDelaySeconds \(40\) \+ 5/],
    ['terminationGracePeriodSeconds=3', /terminationGracePeriodSeconds \(3\) must be at least shutdownDelaySeconds \(5\) \+ 5/],
    ['config.unknownAgents=allow', /at '\/config\/unknownAgents': value must be one of 'deny', 'evaluate'/],
    ['config.otelSampleRatio=2', /at '\/config\/otelSampleRatio': maximum: got 2, want 1/],
    ['config.auditFailureMode=ignore', /at '\/config\/auditFailureMode': value must be one of 'closed', 'open'/],
    ['config.authFailureLimit=20', /at '\/config\/authFailureLimit'/],
    ['audit.anchorInterval=30', /at '\/audit\/anchorInterval'/],
    ['audit.key.key=a/b', /at '\/audit\/key\/key'/],
    // What the server would refuse at start, so the pod would crash-loop.
    ['config.rateLimit=0/1s', /at '\/config\/rateLimit'/],
    ['config.authFailureLimit=20/0s', /at '\/config\/authFailureLimit'/],
    ['config.bodyLimit=99999999999b', /at '\/config\/bodyLimit'/],
    ['kagent.remoteMCPServer.enabled=true', /kagent.remoteMCPServer.enabled=true with config.auth=kubernetes: kagent would call without a token and get 401 on every call/],
  ])('bad values fail at install: --set %s', async (set, message) => {
    expect(await renderError({ set: [set] })).toMatch(message);
  });

  it('the kagent RemoteMCPServer renders without headers only where no token is needed (config.auth=none)', async () => {
    const rendered = parseObjects(await renderChart({ set: ['kagent.remoteMCPServer.enabled=true', 'config.auth=none'] }));
    expect(findObject(rendered, 'RemoteMCPServer').spec.headersFrom).toBeUndefined();
  });

  it('admission needs ValidatingAdmissionPolicy v1 (Kubernetes 1.30): on 1.29 the install fails and says what to do, unless it is turned off', async () => {
    expect(await renderError({ kubeVersion: '1.29.9' })).toMatch(/admission.enabled=true needs Kubernetes >= 1.30 .*this cluster is v1.29.9. Upgrade, or set admission.enabled=false/);
    expect(findObject(parseObjects(await renderChart({ kubeVersion: '1.29.9', set: ['admission.enabled=false'] })), 'ValidatingAdmissionPolicy')).toBeUndefined();
  });
});

describe('the API server accepts everything the chart renders (kubectl apply --server-side --dry-run=server)', () => {
  let ns: string;
  beforeAll(async () => {
    const kc = sharedKubeConfig();
    ns = await createNamespace(kc, 'pg-helm');
    // Pod Security Admission warns about any pod template in this namespace that breaks the
    // "restricted" standard; the dry runs below require no warnings at all.
    const label = await sharedKubectl(['label', 'namespace', ns, 'pod-security.kubernetes.io/warn=restricted', 'pod-security.kubernetes.io/enforce=restricted']);
    expect(label.code, label.stderr).toBe(0);
    // Namespaces the all-features values reference, and the CRDs of the optional objects.
    await ensureNamespaces(kc, ['team-a', 'team-b', 'policyguard-global', 'kagent']);
    await installCrds(kc, join(VENDOR_CRDS_DIR, 'kagent'));
    await installCrds(kc, FIXTURES_DIR); // ServiceMonitor: a typed subset, see the fixture's header
  }, 120_000);
  afterAll(async () => {
    // The namespaces are left: other files may use kagent; cluster-scoped objects were dry runs.
  });

  it.each([
    ['default values', [] as string[]],
    ['every optional feature on', [ALL_FEATURES_VALUES]],
  ])('%s (CRDs included)', async (_what, valuesFiles) => {
    const yaml = await renderChart({ release: 'dry', namespace: ns, valuesFiles, includeCrds: true });
    const r = await serverDryRun(yaml);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    // One "serverside-applied (server dry run)" line per rendered object.
    const applied = r.stdout.split('\n').filter((l) => /serverside-applied \(server dry run\)$/.test(l));
    expect(applied).toHaveLength(parseObjects(yaml).length);
  });

  it('the pod meets the "restricted" Pod Security Standard: weaken it and the API server warns', async () => {
    const yaml = await renderChart({ release: 'dry', namespace: ns, set: ['securityContext.allowPrivilegeEscalation=true'] });
    const r = await serverDryRun(yaml);
    expect(r.stderr).toMatch(/would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false/);
  });

  it('the dry run is a real check: a misspelled field is rejected', async () => {
    const yaml = (await renderChart({ release: 'dry', namespace: ns })).replace('readOnlyRootFilesystem:', 'readOnlyRootFileSystem:');
    const r = await serverDryRun(yaml);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/readOnlyRootFileSystem: field not declared in schema/);
  });
});

describe('helm install and uninstall against the test API server', () => {
  it('installs (the CRDs exist already, so Helm skips them), prints NOTES that say how to reach /mcp, and uninstalls', async () => {
    const kc = sharedKubeConfig();
    const ns = await createNamespace(kc, 'pg-install');
    const release = `inst-${ns.slice(-6)}`;
    // Without the admission policies: installed for real they are bound cluster-wide, and the
    // approvals one would refuse GuardApprovals that other test files' operators (running as the
    // admin, not this release's ServiceAccount) create meanwhile.
    const common = ['--namespace', ns, '--kubeconfig', sharedKubeconfigPath()];
    const values = ['--set', 'admission.enabled=false'];
    const installed = await helm(['install', release, CHART_DIR, ...common, ...values]);
    expect(installed.stderr).toBe('');
    expect(installed.code).toBe(0);
    const notes = installed.stdout.slice(installed.stdout.indexOf('NOTES:'));
    expect(notes).toContain(`http://${release}-policyguard.${ns}:8000/mcp`);
    expect(notes).toContain(`kubectl -n ${ns} port-forward service/${release}-policyguard 8000:8000`);
    expect(notes).toContain('curl -s http://127.0.0.1:8000/readyz');
    expect(notes).toContain('--audience policyguard');
    const deploy = await kc.makeApiClient(AppsV1Api).readNamespacedDeployment({ name: `${release}-policyguard`, namespace: ns });
    expect(deploy.spec?.replicas).toBe(2);
    // The generated audit key survives upgrades (lookup) and uninstall (resource-policy keep).
    const key = async () => (await kc.makeApiClient(CoreV1Api).readNamespacedSecret({ name: `${release}-policyguard-audit-key`, namespace: ns })).data?.['audit.key'];
    const generated = await key();
    expect(generated).toBeTruthy();
    const upgraded = await helm(['upgrade', release, CHART_DIR, ...common, ...values]);
    expect(upgraded.code, upgraded.stderr).toBe(0);
    expect(await key()).toBe(generated);
    const uninstalled = await helm(['uninstall', release, ...common]);
    expect(uninstalled.code).toBe(0);
    await expect(kc.makeApiClient(AppsV1Api).readNamespacedDeployment({ name: `${release}-policyguard`, namespace: ns })).rejects.toMatchObject({ code: 404 });
    expect(await key()).toBe(generated);
  });

  it('values.schema.json is enforced at install time, before anything is created', async () => {
    const kc = sharedKubeConfig();
    const ns = await createNamespace(kc, 'pg-install');
    const r = await helm(['install', 'bad', CHART_DIR, '--namespace', ns, '--kubeconfig', sharedKubeconfigPath(), '--set', 'replicaCount=0']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/at '\/replicaCount': minimum/);
    expect((await kc.makeApiClient(AppsV1Api).listNamespacedDeployment({ namespace: ns })).items).toEqual([]);
  });
});
