/**
 * Kubernetes store: GuardAgents and GuardPolicies are custom resources, watched through
 * {@link Reflector}s and compiled into a snapshot after every change (a burst of changes at
 * most every 100 ms).
 *
 * Writes made by MCP tools have field manager `policyguard` and do exactly what the caller's
 * permission was checked for (store.ts, WriteIntent), though the watch cache that chose it may
 * be a moment behind:
 * - a create is a POST, which the API server refuses when the object exists by then; its fields
 *   are then relabelled as applied by `policyguard` ({@link KubernetesStore.ownAsApplied}), so
 *   later updates do not conflict with the create;
 * - an update is a server-side apply carrying the uid and resourceVersion of the version the
 *   caller's checks read (its trust level, its identities), which the API server refuses when
 *   the object was changed, deleted or created again since (a change to what no check reads,
 *   such as its status, is applied on instead). It is never forced: a field Argo CD,
 *   Flux or kubectl owns is theirs, and changing it is a {@link StoreConflictError} naming the
 *   field and its manager, not a takeover the GitOps tool would revert on its next sync.
 * Automatic suspensions are merge patches of the agent's status subresource, which GitOps tools
 * never own.
 */
import { isDeepStrictEqual } from 'node:util';
import { CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { GROUP, GuardAgentSchema, GuardPolicySchema, GuardUpstreamSchema, ObjectMetaSchema, VERSION, type AnyGuardObject, type GuardAgent, type GuardAgentSpec, type GuardObject, type GuardPolicy, type GuardUpstream, type Suspension } from '../api/schemas.js';
import { Reason } from '../api/conditions.js';
import { Reflector, type KubeObject, type WatchObserver } from '../controller/reflector.js';
import { agentIdOf } from '../engine/compile.js';
import { foldCase } from '../engine/glob.js';
import { formatProblem, PolicySnapshot, type ClaimMetadata, type CompileCache, type MissingObject } from '../engine/snapshot.js';
import type { EngineOptions, ObjectProblem } from '../engine/types.js';
import { jsonPatch, mergePatch, serverSideApply, statusOf } from '../kube/client.js';
import type { Logger } from '../log.js';
import { releaseMemory } from '../memory.js';
import { formatZodError, identityOf } from './manifests.js';
import { objectKey } from '../engine/types.js';
import { StoreChangedError, StoreConflictError, type ApplyResult, type FieldConflict, type PolicyStore, type WriteIntent } from './store.js';
import { upstreamProblem, upstreamRef } from './upstreams.js';

export const FIELD_MANAGER = 'policyguard';

/** At most one compile per this many ms while watch events keep arriving (docs/performance.md, "What the second pass changed"). */
const COMPILE_INTERVAL_MS = 100;

export const KINDS = {
  GuardAgent: { plural: 'guardagents', schema: GuardAgentSchema, optional: false },
  GuardPolicy: { plural: 'guardpolicies', schema: GuardPolicySchema, optional: false },
  // Added in a later release: a cluster whose CRDs were not upgraded yet still becomes ready.
  GuardUpstream: { plural: 'guardupstreams', schema: GuardUpstreamSchema, optional: true },
} as const;
type Kind = keyof typeof KINDS;

export interface KubernetesStoreOptions {
  kubeConfig: KubeConfig;
  engine: EngineOptions;
  log: Logger;
  /** Namespaces to watch; empty = all. */
  watchNamespaces: string[];
  /** Where MCP-created objects go. */
  writeNamespace: string;
  /** Leader check for background writes (auto-registration). */
  isLeader: () => boolean;
  /** Called after each new snapshot (the status writer listens). */
  onCompiled?: (snapshot: PolicySnapshot) => void;
  /** Called after an automatic suspension was written. */
  onSuspended?: (agent: GuardAgent, suspension: Suspension) => void;
  /** The observer of each reflector, by its resource (a plural): told of every list, watch event and connection (src/metrics.ts, WatchTiming). */
  watchObserver?: (resource: string) => WatchObserver;
  /**
   * After a burst of at least `changes` object changes (default 500: a GitOps sync, a first
   * list of a large installation), once no compile has followed for `settleMs` (default 3 s),
   * give back the memory the burst made V8 grow ({@link releaseMemory}).
   */
  releaseAfterBurst?: { changes: number; settleMs: number };
  /**
   * Problems with the installed CRDs (src/controller/crd-check.ts). Each holds every decision,
   * as a policy that cannot be loaded does, and keeps the store not ready; call
   * {@link KubernetesStore.refresh} when they change.
   */
  crdProblems?: () => readonly string[];
}

const RELEASE_AFTER_BURST = { changes: 500, settleMs: 3_000 };

/**
 * What a GuardAgent or GuardPolicy that fails the schema, with no valid version in force, leaves
 * missing: the decisions of the agent id it names, or of the agents its namespace's policies
 * govern (docs/decisions.md, "Objects that cannot be loaded"). A GuardAgent's metadata goes
 * with it: one that would lose its id to a valid GuardAgent holds nothing (PolicySnapshot.compile).
 */
function missingObject(problem: ObjectProblem, raw: KubeObject): MissingObject {
  const kind = problem.kind === 'GuardAgent' ? 'GuardAgent' : 'GuardPolicy';
  const agentId = identityOf(raw)?.agentId;
  const metadata = kind === 'GuardAgent' ? claimMetadata(raw) : undefined;
  return { kind, ...(problem.namespace ? { namespace: problem.namespace } : {}), ...(agentId !== undefined ? { agentId } : {}), ...(metadata ? { metadata } : {}), problem: formatProblem(problem) };
}

/** What the rule between GuardAgents claiming one id reads of an object's metadata; undefined when it cannot be read. */
function claimMetadata(raw: KubeObject): ClaimMetadata | undefined {
  const meta = ObjectMetaSchema.safeParse(raw.metadata);
  if (!meta.success) return undefined;
  const { name, namespace, creationTimestamp, labels } = meta.data;
  return { name, namespace, creationTimestamp, labels };
}

/** An object's identity, generation and status, without its spec (kept once, parsed, in the store). */
function statusView(obj: KubeObject): KubeObject {
  const { name, namespace, uid, resourceVersion, generation } = obj.metadata;
  return { metadata: { name, namespace, uid, resourceVersion, generation }, ...(obj.status !== undefined ? { status: obj.status } : {}) };
}

/** Keep only our own `policyguard.dev/…` keys: applying a key makes us its co-owner. */
function ours(map: Record<string, string> | undefined): Record<string, string> | undefined {
  const kept = Object.entries(map ?? {}).filter(([k]) => k.startsWith(`${GROUP}/`));
  return kept.length > 0 ? Object.fromEntries(kept) : undefined;
}

/**
 * What goes into a server-side apply: the spec (or only `specFields` of it) and our own labels
 * and annotations. Whatever else other managers set (kubectl, Argo CD, Flux) is left to them,
 * so removing it there still removes it.
 */
function applyBody(obj: GuardObject, specFields?: readonly string[]): Record<string, unknown> {
  const { name, namespace } = obj.metadata;
  const labels = ours(obj.metadata.labels);
  const annotations = ours(obj.metadata.annotations);
  const spec = specFields ? Object.fromEntries(Object.entries(obj.spec).filter(([k]) => specFields.includes(k))) : obj.spec;
  return {
    apiVersion: obj.apiVersion,
    kind: obj.kind,
    metadata: { name, namespace, ...(labels ? { labels } : {}), ...(annotations ? { annotations } : {}) },
    spec,
  };
}

/** The Status of a client-node ApiException, if its body is one. */
function statusBody(err: unknown): { message?: string; details?: { causes?: Array<{ reason?: string; message?: string; field?: string }> } } | undefined {
  const body = err && typeof err === 'object' && 'body' in err ? (err as { body: unknown }).body : undefined;
  try {
    const parsed: unknown = typeof body === 'string' ? JSON.parse(body) : body;
    return parsed && typeof parsed === 'object' ? parsed : undefined;
  } catch {
    return undefined;
  }
}

/** The manager name Go quoted (`%q`) in a conflict cause; the whole message if it has another shape. */
function managerOf(message: string): string {
  const quoted = /^conflict with ("(?:[^"\\]|\\.)*")/.exec(message)?.[1];
  if (!quoted) return message || 'another manager';
  try {
    return JSON.parse(quoted) as string;
  } catch {
    return quoted.slice(1, -1); // a Go escape JSON does not know (\x..): keep it as written
  }
}

/**
 * The 409 of a server-side apply as a {@link StoreConflictError}. The API server lists each
 * conflict as a cause `{reason: FieldManagerConflict, field: ".spec.trustLevel", message:
 * 'conflict with "argocd-controller"'}` (an Update manager adds ` using <apiVersion> at <time>`).
 */
function applyConflict(kind: string, namespace: string, name: string, err: unknown): StoreConflictError {
  const status = statusBody(err);
  const conflicts: FieldConflict[] = (status?.details?.causes ?? [])
    .filter((c) => c.reason === 'FieldManagerConflict')
    .map((c) => ({ field: c.field ?? '(unknown field)', manager: managerOf(c.message ?? '') }));
  const object = `${kind} ${namespace}/${name}`;
  const owned = conflicts.length > 0
    ? conflicts.map((c) => `${c.field} is managed by ${JSON.stringify(c.manager)}`).join(', ')
    : `the API server reports a conflict (${status?.message ?? 'HTTP 409'})`;
  const message = `${object}: ${owned}; PolicyGuard never takes fields from another manager — change it where that manager's source lives (Git), or remove the field there first`;
  return new StoreConflictError(object, conflicts, message, { cause: err });
}

/** A 409 whose field conflicts are all with `policyguard` itself: fields our own create recorded (see KubernetesStore.ownAsApplied). */
function conflictsOnlyWithOurCreate(err: unknown): boolean {
  if (statusOf(err) !== 409) return false;
  const causes = (statusBody(err)?.details?.causes ?? []).filter((c) => c.reason === 'FieldManagerConflict');
  return causes.length > 0 && causes.every((c) => managerOf(c.message ?? '') === FIELD_MANAGER);
}

/** The API server's refusal of an apply whose `metadata.resourceVersion` is not the object's (409, "has been modified"). */
function isModified(err: unknown): boolean {
  const status = statusBody(err);
  return statusOf(err) === 409 && (status?.details?.causes ?? []).length === 0 && /\bhas been modified\b/.test(status?.message ?? '');
}

/**
 * The API server's refusal of an apply whose preconditions fail: {@link isModified}, or
 * `metadata.uid` not the object's because it was deleted (409, "uid mismatch") or created
 * again (422, uid immutable).
 */
function isPreconditionFailure(err: unknown): boolean {
  const status = statusBody(err);
  if (isModified(err)) return true;
  if (statusOf(err) === 409) return (status?.details?.causes ?? []).length === 0 && /\buid mismatch\b/.test(status?.message ?? '');
  return statusOf(err) === 422 && (status?.details?.causes ?? []).some((c) => c.field === 'metadata.uid');
}

interface ManagedFieldsEntry {
  manager?: string;
  operation?: string;
  subresource?: string;
  fieldsV1?: Record<string, unknown>;
  [key: string]: unknown;
}

/** The union of two FieldsV1 sets: nested objects whose keys name fields. */
function unionFields(a: Record<string, unknown> = {}, b: Record<string, unknown> = {}): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [key, value] of Object.entries(b)) out[key] = unionFields(out[key] as Record<string, unknown> | undefined, value as Record<string, unknown>);
  return out;
}

/** `managedFields` with our update records (not of a subresource) made one apply record; undefined when there are none. */
function appliedByUs(managedFields: unknown): ManagedFieldsEntry[] | undefined {
  const entries = Array.isArray(managedFields) ? (managedFields as ManagedFieldsEntry[]) : [];
  const ours = (e: ManagedFieldsEntry) => e.manager === FIELD_MANAGER && e.subresource === undefined && (e.operation === 'Update' || e.operation === 'Apply');
  const mine = entries.filter(ours);
  const first = mine.find((e) => e.operation === 'Update');
  if (first === undefined) return undefined;
  const merged = mine.reduce<Record<string, unknown>>((fields, e) => unionFields(fields, e.fieldsV1), {});
  return [...entries.filter((e) => !ours(e)), { ...first, operation: 'Apply', fieldsV1: merged }];
}

/** One write through MCP, as KubernetesStore.apply prepares it for a create or an update. */
interface Write {
  obj: GuardObject;
  namespace: string;
  /** `Kind namespace/name`, as errors and logs name it. */
  object: string;
  /** What is sent: the spec (or the fields given) and our own labels and annotations (applyBody). */
  body: Record<string, unknown>;
  target: { group: string; version: string; namespace: string; plural: string; fieldManager: string };
  changed: () => StoreChangedError;
}

export class KubernetesStore implements PolicyStore {
  readonly writeNamespace: string;
  private current: PolicySnapshot;
  private readonly cache: CompileCache = new Map();
  private readonly reflectors: { kind: Kind; reflector: Reflector; synced: boolean }[] = [];
  /**
   * Each object's identity, generation and status as last seen from the API server, by
   * {@link objectKey}: what the status writer compares and writes. The spec lives in `valid`.
   */
  private readonly raw = new Map<string, { kind: Kind; obj: KubeObject }>();
  /** Last version of each object that passed the schema; kept in force when a newer one fails. */
  private readonly valid = new Map<string, AnyGuardObject>();
  /** Usable GuardUpstreams by `namespace/name`, and the unusable ones' problems; rebuilt on every compile. */
  private upstreams = new Map<string, GuardUpstream>();
  private upstreamProblems = new Map<string, ObjectProblem>();
  /** Objects that fail the schema, and, when no valid version of one is in force, what it leaves missing. */
  private readonly invalid = new Map<string, { problem: ObjectProblem; missing: MissingObject | undefined }>();
  private compileScheduled = false;
  private compileTimer: NodeJS.Timeout | undefined;
  private settleTimer: NodeJS.Timeout | undefined;
  /** Object changes since memory was last released. */
  private changesSinceRelease = 0;
  /** Times memory was released after a burst (tests, docs/performance.md). */
  memoryReleases = 0;
  private lastCompileAt = -Infinity;
  /** Set by the first compile after every watch has listed once. */
  private compiledAfterSync = false;
  private readonly api: CustomObjectsApi;

  constructor(private readonly opts: KubernetesStoreOptions) {
    this.writeNamespace = opts.writeNamespace;
    this.current = PolicySnapshot.empty(opts.engine);
    this.api = opts.kubeConfig.makeApiClient(CustomObjectsApi);
  }

  /** Start watching. Readiness follows the first full list of every watch. */
  start(): void {
    const namespaces = this.opts.watchNamespaces.length > 0 ? this.opts.watchNamespaces : [undefined];
    for (const kind of Object.keys(KINDS) as Kind[]) {
      for (const namespace of namespaces) {
        const entry = { kind, synced: false, reflector: undefined as unknown as Reflector };
        entry.reflector = new Reflector({
          kubeConfig: this.opts.kubeConfig,
          group: GROUP,
          version: VERSION,
          plural: KINDS[kind].plural,
          optional: KINDS[kind].optional,
          ...(namespace ? { namespace } : {}),
          ...(this.opts.watchObserver ? { observer: this.opts.watchObserver(KINDS[kind].plural) } : {}),
          log: this.opts.log,
          onChange: (ref, obj) => this.onChange(kind, ref, obj),
          onSynced: () => {
            entry.synced = true;
            this.scheduleCompile();
          },
        });
        this.reflectors.push(entry);
      }
    }
  }

  private onChange(kind: Kind, ref: string, raw: KubeObject | undefined): void {
    const key = `${kind}/${ref}`;
    if (raw) this.raw.set(key, { kind, obj: statusView(raw) });
    else this.raw.delete(key);
    this.changesSinceRelease++;
    if (!raw) {
      this.valid.delete(key);
      this.invalid.delete(key);
    } else {
      const parsed = KINDS[kind].schema.safeParse(raw);
      if (parsed.success) {
        this.valid.set(key, parsed.data);
        this.invalid.delete(key);
      } else {
        // A field the CRD does not declare (the CRD keeps unknown spec fields so that this
        // refusal sees them, see src/api/crd.ts), or a version skew or hand-edited CRD. The
        // newest generation is what counts, as it is for a replica that starts now: an older
        // valid one does not stay in force (docs/decisions.md §9).
        this.valid.delete(key);
        const problem: ObjectProblem = {
          kind,
          ...(raw.metadata.namespace ? { namespace: raw.metadata.namespace } : {}),
          name: raw.metadata.name,
          reason: Reason.InvalidSpec,
          message: formatZodError(parsed.error),
        };
        // A GuardUpstream decides nothing: the gateway refuses calls through one not in force.
        this.invalid.set(key, { problem, missing: kind === 'GuardUpstream' ? undefined : missingObject(problem, raw) });
      }
    }
    this.scheduleCompile();
  }

  /**
   * Coalesce a burst of watch events into one compile, and compile at most once every
   * {@link COMPILE_INTERVAL_MS}: a lone change is compiled at once, a stream of them (a GitOps
   * sync of a thousand objects) every interval instead of once per event, which would build
   * and discard a snapshot of everything for each one.
   */
  private scheduleCompile(): void {
    if (this.compileScheduled) return;
    this.compileScheduled = true;
    const run = () => {
      this.compileScheduled = false;
      this.compileTimer = undefined;
      this.lastCompileAt = performance.now();
      this.compile();
      this.releaseOnceSettled();
    };
    const wait = this.lastCompileAt + COMPILE_INTERVAL_MS - performance.now();
    if (wait <= 0) setImmediate(run);
    else this.compileTimer = setTimeout(run, wait);
  }

  /** After a burst of changes, (re)arms the release for when no compile has followed for a while. */
  private releaseOnceSettled(): void {
    const { changes, settleMs } = this.opts.releaseAfterBurst ?? RELEASE_AFTER_BURST;
    if (this.changesSinceRelease < changes) return;
    clearTimeout(this.settleTimer);
    this.settleTimer = setTimeout(() => {
      const burst = this.changesSinceRelease;
      this.changesSinceRelease = 0;
      const released = releaseMemory();
      if ('error' in released) return this.opts.log.warn('could not release memory after a burst of changes', { changes: burst, error: released.error });
      this.memoryReleases++;
      this.opts.log.info('released memory after a burst of changes', { changes: burst, gc_ms: released.ms });
    }, settleMs);
    this.settleTimer.unref();
  }

  private compile(): void {
    const agents: GuardAgent[] = [];
    const policies: GuardPolicy[] = [];
    const upstreams = new Map<string, GuardUpstream>();
    const upstreamProblems = new Map<string, ObjectProblem>();
    for (const obj of this.valid.values()) {
      if (obj.kind === 'GuardAgent') agents.push(obj);
      else if (obj.kind === 'GuardPolicy') policies.push(obj);
      else {
        const problem = upstreamProblem(obj, 'kubernetes');
        if (problem) upstreamProblems.set(objectKey(obj.kind, obj.metadata.namespace, obj.metadata.name), problem);
        else upstreams.set(upstreamRef(obj), obj);
      }
    }
    this.upstreams = upstreams;
    this.upstreamProblems = upstreamProblems;
    const missing = [...this.invalid.values()].flatMap((i) => (i.missing ? [i.missing] : []));
    for (const problem of this.opts.crdProblems?.() ?? []) missing.push({ problem });
    // No `previous`: a generation that fails to compile is not replaced by the one before it,
    // which a replica started since never saw; every replica decides alike (docs/decisions.md §9).
    const next = PolicySnapshot.compile({ agents, policies, missing }, this.opts.engine, { cache: this.cache });
    if (next.revision !== this.current.revision) this.opts.log.debug('policy snapshot compiled', { revision: next.revision, ...next.counts });
    this.current = next;
    if (this.reflectors.length > 0 && this.reflectors.every((r) => r.synced)) this.compiledAfterSync = true;
    this.opts.onCompiled?.(next);
  }

  snapshot(): PolicySnapshot {
    return this.current;
  }

  /** Ready once the first full list of every watch has compiled, while the CRDs are the ones this version ships. */
  notReady(): string | undefined {
    if (!this.compiledAfterSync) return 'the first full list of every watch has not compiled yet';
    return this.opts.crdProblems?.()[0];
  }

  /** Compile again, for a change that is not an object's (the CRD check's verdict). */
  refresh(): void {
    this.scheduleCompile();
  }

  isLeader(): boolean {
    return this.opts.isLeader();
  }

  upstream(ref: string): GuardUpstream | undefined {
    return this.upstreams.get(ref);
  }

  /** Every problem, by `Kind/namespace/name`: schema failures and compile failures. */
  objectProblems(): Map<string, ObjectProblem> {
    const out = new Map<string, ObjectProblem>([...[...this.invalid].map(([key, i]) => [key, i.problem] as const), ...this.upstreamProblems]);
    for (const p of this.current.problems) out.set(objectKey(p.kind, p.namespace, p.name), p);
    return out;
  }

  problems(): readonly string[] {
    return [...(this.opts.crdProblems?.() ?? []), ...[...this.objectProblems().values()].map(formatProblem)];
  }

  /** List/watch counters summed over every watch (see Reflector.stats). */
  watchStats(): { lists: number; watches: number; errors: number; expired: number } {
    const sum = { lists: 0, watches: 0, errors: 0, expired: 0 };
    for (const { reflector } of this.reflectors) {
      sum.lists += reflector.stats.lists;
      sum.watches += reflector.stats.watches;
      sum.errors += reflector.stats.errors;
      sum.expired += reflector.stats.expired;
    }
    return sum;
  }

  /** The objects as last seen from the API server: metadata and status, not the spec. */
  rawObjects(): IterableIterator<{ kind: Kind; obj: KubeObject }> {
    return this.raw.values();
  }

  /** One of {@link rawObjects}, by {@link objectKey}. */
  rawObject(key: string): { kind: Kind; obj: KubeObject } | undefined {
    return this.raw.get(key);
  }

  holds(kind: 'GuardAgent' | 'GuardPolicy', namespace: string | undefined, name: string): boolean {
    return this.has(kind, namespace ?? this.writeNamespace, name);
  }

  agentHolders(agentId: string): Array<string | undefined> {
    const id = foldCase(agentId);
    const holders: Array<string | undefined> = [];
    // The raw cache keeps no spec: the schema-valid versions (in force or failing to compile), and
    // the ids read of those that fail the schema.
    for (const obj of this.valid.values()) if (obj.kind === 'GuardAgent' && foldCase(agentIdOf(obj)) === id) holders.push(obj.metadata.namespace);
    for (const { missing } of this.invalid.values()) if (missing?.kind === 'GuardAgent' && missing.agentId !== undefined && foldCase(missing.agentId) === id) holders.push(missing.namespace);
    return holders;
  }

  private has(kind: Kind, namespace: string, name: string): boolean {
    return this.raw.has(objectKey(kind, namespace, name));
  }

  private async apply(obj: GuardObject, intent: WriteIntent, specFields?: readonly string[]): Promise<ApplyResult> {
    const namespace = obj.metadata.namespace ?? this.writeNamespace;
    const write: Write = {
      obj,
      namespace,
      object: `${obj.kind} ${namespace}/${obj.metadata.name}`,
      body: applyBody({ ...obj, metadata: { ...obj.metadata, namespace } } as GuardObject, specFields),
      target: { group: GROUP, version: VERSION, namespace, plural: KINDS[obj.kind].plural, fieldManager: FIELD_MANAGER },
      changed: () => new StoreChangedError(write.object, intent, true),
    };
    await (intent === 'create' ? this.create(write) : this.update(write));
    return { location: `${namespace}/${obj.metadata.name}` };
  }

  /** A create: a POST, refused (409) when the object exists by then; then our fields relabelled as applied. */
  private async create({ obj, namespace, object, body, target, changed }: Write): Promise<void> {
    let created: KubeObject;
    try {
      created = (await this.api.createNamespacedCustomObject({ ...target, body })) as KubeObject;
    } catch (err) {
      if (statusOf(err) === 409) throw changed();
      throw err;
    }
    await this.ownAsApplied(obj.kind, namespace, created, 3).catch((err: unknown) =>
      this.opts.log.warn('created, but its fields stay recorded as a create by policyguard; the next update through MCP records them as applied', { object, error: String(err) }),
    );
  }

  /** An update: a server-side apply conditional on the version the caller's checks read (see the file comment). */
  private async update({ obj, namespace, object, body, target, changed }: Write): Promise<void> {
    const { kind, metadata: { name } } = obj;
    // The version the caller's checks read (its trust level, its identities): the object as the
    // snapshot in force holds it; else, when none is in force (it fails to compile), as last seen.
    const key = objectKey(kind, namespace, name);
    const latest = this.raw.get(key)?.obj.metadata;
    const seen = obj.metadata.uid !== undefined && obj.metadata.resourceVersion !== undefined ? obj.metadata : latest;
    const { uid, resourceVersion } = seen ?? {};
    if (uid === undefined || resourceVersion === undefined) throw changed();
    // A newer version that is not in force (it fails the schema or to compile) would refuse every
    // such update, each saying to retry: say what is wrong instead.
    const problem = latest?.resourceVersion !== resourceVersion ? this.objectProblems().get(key) : undefined;
    if (problem) {
      throw new StoreConflictError(object, [], `${object}: its newest version is not in force (${formatProblem(problem)}), and this call was checked against the version that is; fix the newest version where it was written (kubectl, Git), then retry`);
    }
    // The uid and resourceVersion make the apply conditional on that version, not one created in
    // its place. A newer one that differs from it only in what no check reads (its status, such
    // as our own Ready condition, or metadata other than our `policyguard.dev/` keys: same uid,
    // generation, and `policyguard.dev/` labels and annotations) is applied on instead.
    const update = (version: string) => this.api.patchNamespacedCustomObject({ ...target, name, body: { ...body, metadata: { ...(body.metadata as object), uid, resourceVersion: version } } }, serverSideApply);
    const live = async () =>
      (await this.api.getNamespacedCustomObject({ ...target, name }).catch((e: unknown) => {
        throw statusOf(e) === 404 ? changed() : e;
      })) as KubeObject;
    const sameKeys = (a: Record<string, string> | undefined, b: Record<string, string> | undefined) => isDeepStrictEqual(ours(a) ?? {}, ours(b) ?? {});
    const asChecked = (now: KubeObject) =>
      now.metadata.uid === uid &&
      now.metadata.generation === seen!.generation &&
      // The watch cache keeps no labels or annotations: for an object not in force, no check read them.
      (seen !== obj.metadata || (sameKeys(now.metadata.labels as Record<string, string>, obj.metadata.labels) && sameKeys(now.metadata.annotations as Record<string, string>, obj.metadata.annotations)));
    let version = resourceVersion;
    let relabelled = false;
    for (let attempt = 1; ; attempt++) {
      try {
        // No `force`: see the file comment.
        await update(version);
        return;
      } catch (err) {
        if (attempt < 3 && !relabelled && conflictsOnlyWithOurCreate(err)) {
          // Our own create's fields, not yet relabelled (ownAsApplied failed then): relabel that
          // very version, then apply on the version the relabelling made.
          relabelled = true;
          const now = await live();
          if (now.metadata.uid !== uid || now.metadata.resourceVersion !== version) throw changed();
          // A change between the read and the relabel fails its resourceVersion test (422).
          const next = await this.ownAsApplied(kind, namespace, now, 1).catch((e: unknown) => {
            throw statusOf(e) === 422 ? changed() : e;
          });
          if (next === undefined) throw changed();
          version = next;
        } else if (attempt < 3 && isModified(err)) {
          const now = await live();
          if (!asChecked(now) || now.metadata.resourceVersion === undefined) throw changed();
          version = now.metadata.resourceVersion;
        } else if (isPreconditionFailure(err)) {
          throw changed();
        } else if (statusOf(err) === 409) {
          throw applyConflict(kind, namespace, name, err);
        } else {
          throw err;
        }
      }
    }
  }

  /**
   * A create (POST) records its fields as set by an update of manager `policyguard`, and a
   * server-side apply by `policyguard` that changes them would conflict with that record. This
   * relabels our own update record as an apply, merged with any apply record we already have
   * (as client-go's csaupgrade does for kubectl), guarded by the resourceVersion so that no
   * change made meanwhile is lost; on a change it reads the object again, up to `attempts`
   * times. Returns the resourceVersion the relabelling made (or found, with nothing to do).
   */
  private async ownAsApplied(kind: Kind, namespace: string, live: KubeObject, attempts: number): Promise<string | undefined> {
    const target = { group: GROUP, version: VERSION, namespace, plural: KINDS[kind].plural, name: live.metadata.name, fieldManager: FIELD_MANAGER };
    for (let attempt = 1; ; attempt++) {
      const relabelled = appliedByUs(live.metadata.managedFields);
      const version = live.metadata.resourceVersion;
      if (relabelled === undefined) return version;
      try {
        const patched = (await this.api.patchNamespacedCustomObject(
          { ...target, body: [{ op: 'test', path: '/metadata/resourceVersion', value: version }, { op: 'replace', path: '/metadata/managedFields', value: relabelled }] },
          jsonPatch,
        )) as KubeObject;
        return patched.metadata.resourceVersion;
      } catch (err) {
        if (statusOf(err) !== 422 || attempt >= attempts) throw err;
        live = (await this.api.getNamespacedCustomObject(target)) as KubeObject;
        if (live.metadata.resourceVersion === version) throw err; // not the test that failed
      }
    }
  }

  applyAgent(agent: GuardAgent, intent: WriteIntent, specFields?: readonly (keyof GuardAgentSpec)[]): Promise<ApplyResult> {
    return this.apply(agent, intent, specFields);
  }

  applyPolicy(policy: GuardPolicy, intent: WriteIntent): Promise<ApplyResult> {
    return this.apply(policy, intent);
  }

  async suspendAgent(agentId: string, suspension: Suspension): Promise<boolean> {
    const agent = this.current.agent(agentId)?.source;
    if (!agent?.metadata.namespace) return false;
    await this.api.patchNamespacedCustomObjectStatus(
      { group: GROUP, version: VERSION, namespace: agent.metadata.namespace, plural: KINDS.GuardAgent.plural, name: agent.metadata.name, body: { status: { suspension } }, fieldManager: FIELD_MANAGER },
      mergePatch,
    );
    this.opts.onSuspended?.(agent, suspension);
    return true;
  }

  async close(): Promise<void> {
    clearTimeout(this.compileTimer);
    clearTimeout(this.settleTimer);
    await Promise.all(this.reflectors.map((r) => r.reflector.stop()));
  }
}
