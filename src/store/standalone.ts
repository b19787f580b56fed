/**
 * Standalone store: GuardAgents and GuardPolicies from a folder of YAML manifests, no cluster.
 *
 * - `configDir` is read (recursively, see {@link listManifestTree}) and watched; it is the
 *   user's source (e.g. config-samples/, or a ConfigMap volume).
 * - `dataDir/manifests/` holds what MCP tools write (register_agent, create_policy, auto-registered
 *   agents). An object there overrides one of the same kind and name in `configDir`.
 * - `dataDir/status.json` holds agent status (automatic suspensions), so a restart keeps them.
 *
 * Every folder is watched on its own (see folder-watcher.ts), so every way of saving takes
 * effect within the debounce; a periodic full rescan is the safety net. Each change that takes
 * effect is logged with its file. A file that fails to parse is reported with its path and
 * line, and the last good version of that file stays in force.
 */
import { mkdir, readFile, stat } from 'node:fs/promises';
import { isAbsolute, join, relative } from 'node:path';
import type { AnyGuardObject, GuardAgent, GuardAgentStatus, GuardObject, GuardPolicy, GuardUpstream, Suspension } from '../api/schemas.js';
import { PolicySnapshot, type CompileCache } from '../engine/snapshot.js';
import type { EngineOptions, ObjectProblem } from '../engine/types.js';
import type { Logger } from '../log.js';
import { writeFileAtomic } from './atomic-file.js';
import { FolderWatcher } from './folder-watcher.js';
import { listManifestTree } from './manifest-tree.js';
import { upstreamProblem, upstreamRef } from './upstreams.js';
import { formatManifestError, lineOfProblem, parseManifests, toManifest, type ManifestError } from './manifests.js';
import type { ApplyResult, PolicyStore } from './store.js';

export interface StandaloneStoreOptions {
  configDir: string;
  dataDir: string;
  engine: EngineOptions;
  log: Logger;
  /** Watch both folders and reload on change (default true). */
  watch?: boolean;
  /** Delay from the first change to the reload, so an editor's save-rename-chmod is one reload (default 100 ms). */
  debounceMs?: number;
  /** Re-read both folders this often in case a change was missed; 0 = never (default 10 s, `--rescan-interval`). */
  rescanIntervalMs?: number;
}

interface LoadedFile {
  text: string;
  /** Objects of the last version of this file that parsed cleanly. */
  objects: AnyGuardObject[];
  /** The text those objects came from, to point problems at their lines. */
  goodText: string;
  /** Errors of the current text; empty when it parsed cleanly. */
  errors: ManifestError[];
}

function refOf(obj: Pick<AnyGuardObject, 'kind' | 'metadata'>): string {
  return `${obj.kind}/${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
}

/** A path as users typed it: relative to the working folder when inside it. */
function shown(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : path;
}

/**
 * Read every manifest under `dir` once (no watching): what `policyguard check` uses.
 * Errors are `file:line: message` strings; a missing folder is an error too.
 *
 * @example
 *   const { agents, policies, errors } = await loadManifestDir('config-samples');
 */
export async function loadManifestDir(dir: string): Promise<{ agents: GuardAgent[]; policies: GuardPolicy[]; errors: string[] }> {
  const out = { agents: [] as GuardAgent[], policies: [] as GuardPolicy[], errors: [] as string[] };
  if (!(await isDirectory(dir))) return { ...out, errors: [`${dir}: not a folder of manifests`] };
  for (const path of (await listManifestTree(dir)).files) {
    const parsed = parseManifests(await readFile(path, 'utf8'), shown(path));
    out.errors.push(...parsed.errors.map(formatManifestError));
    for (const obj of parsed.objects) {
      if (obj.kind === 'GuardAgent') out.agents.push(obj);
      else if (obj.kind === 'GuardPolicy') out.policies.push(obj);
    }
  }
  return out;
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

export class StandaloneStore implements PolicyStore {
  readonly writeNamespace = undefined;
  private current: PolicySnapshot;
  private readonly cache: CompileCache = new Map();
  private readonly files = new Map<string, LoadedFile>();
  private status = new Map<string, GuardAgentStatus>();
  private loaded = false;
  private watcher: FolderWatcher | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private rescan: NodeJS.Timeout | undefined;
  /** Object problems in force, as `file:line: …` lines. */
  private objectProblems: string[] = [];
  /** Usable GuardUpstreams by `namespace/name`. */
  private upstreams = new Map<string, GuardUpstream>();
  /** Problem and warning lines already logged, so each is logged once, when it appears. */
  private reported = new Set<string>();
  /** Serialises reloads and writes so they never interleave. */
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(private readonly opts: StandaloneStoreOptions) {
    this.current = PolicySnapshot.empty(opts.engine);
  }

  /** Load both folders, compile, and start watching and rescanning. */
  static async open(opts: StandaloneStoreOptions): Promise<StandaloneStore> {
    if (!(await isDirectory(opts.configDir))) throw new Error(`--config-dir ${opts.configDir} is not a folder; point it at a folder of GuardAgent/GuardPolicy YAML (e.g. config-samples)`);
    const store = new StandaloneStore(opts);
    await mkdir(store.manifestsDir, { recursive: true });
    await store.loadStatus();
    if (opts.watch ?? true) store.watcher = new FolderWatcher({ onChange: () => store.scheduleReload(), log: opts.log });
    await store.reload();
    const every = opts.rescanIntervalMs ?? 10_000;
    if (every > 0) store.rescan = setInterval(() => void store.reloadLogged(), every).unref();
    return store;
  }

  private get manifestsDir(): string {
    return join(this.opts.dataDir, 'manifests');
  }

  private get statusFile(): string {
    return join(this.opts.dataDir, 'status.json');
  }

  snapshot(): PolicySnapshot {
    return this.current;
  }

  ready(): boolean {
    return this.loaded;
  }

  isLeader(): boolean {
    return true;
  }

  upstream(ref: string): GuardUpstream | undefined {
    return this.upstreams.get(ref);
  }

  problems(): readonly string[] {
    return [...[...this.files.values()].flatMap((f) => f.errors.map(formatManifestError)), ...this.objectProblems];
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /**
   * Reload `debounceMs` after the first change of a burst. Later changes in the burst do not
   * push it back, so a folder that keeps changing cannot starve a revocation.
   */
  private scheduleReload(): void {
    if (this.debounce) return;
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      void this.reloadLogged();
    }, this.opts.debounceMs ?? 100);
  }

  private reloadLogged(): Promise<void> {
    return this.reload().catch((err) => this.opts.log.error('reload of the manifest folders failed; what was loaded stays in force', { error: String(err) }));
  }

  /** Re-list and re-read both folders; a file whose text did not change is not parsed again. */
  reload(): Promise<void> {
    return this.serial(async () => {
      const trees = [await listManifestTree(this.opts.configDir), await listManifestTree(this.manifestsDir)];
      // Files may have landed in a folder between its listing and the start of its watch.
      if (this.watcher && this.watcher.sync(trees.flatMap((t) => t.folders)) > 0) this.scheduleReload();
      const texts = new Map<string, string>();
      for (const path of new Set(trees.flatMap((t) => t.files))) {
        try {
          texts.set(path, await readFile(path, 'utf8'));
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err; // deleted since listing: gone
        }
      }
      let changed = !this.loaded;
      for (const [path, file] of this.files) {
        if (texts.has(path)) continue;
        this.files.delete(path);
        changed = true;
        this.opts.log.info('manifest removed', { file: shown(path), objects: file.objects.length });
      }
      for (const [path, text] of texts) changed = this.load(path, text) || changed;
      if (changed) this.recompile();
      this.loaded = true;
    });
  }

  /** Take in one file's text; true when the objects it contributes changed. */
  private load(path: string, text: string): boolean {
    const prev = this.files.get(path);
    if (prev?.text === text) return false;
    const parsed = parseManifests(text, shown(path));
    if (parsed.errors.length === 0) {
      this.files.set(path, { text, objects: parsed.objects, goodText: text, errors: [] });
      if (this.loaded) this.opts.log.info('manifest loaded', { file: shown(path), objects: parsed.objects.length });
      return true;
    }
    for (const e of parsed.errors) {
      this.opts.log.error(`${formatManifestError(e)}${prev?.objects.length ? ' (the last good version of this file stays in force)' : ''}`);
    }
    // Keep the last good objects; remember the bad text so it is not re-reported until it changes.
    this.files.set(path, { text, objects: prev?.objects ?? [], goodText: prev?.goodText ?? '', errors: parsed.errors });
    return false;
  }

  /** Objects in force: data dir over config dir, then first file (by path) wins. */
  private objects(): { agents: GuardAgent[]; policies: GuardPolicy[]; upstreams: GuardUpstream[]; fileOf: Map<string, string>; duplicates: string[] } {
    const byRef = new Map<string, { obj: AnyGuardObject; path: string }>();
    const duplicates: string[] = [];
    const inData = (path: string) => path.startsWith(this.manifestsDir);
    const ordered = [...this.files.entries()].sort(([a], [b]) => Number(inData(b)) - Number(inData(a)) || a.localeCompare(b));
    for (const [path, file] of ordered) {
      for (const obj of file.objects) {
        const ref = refOf(obj);
        const first = byRef.get(ref);
        if (!first) byRef.set(ref, { obj, path });
        else if (!inData(first.path)) duplicates.push(`${obj.kind} ${obj.metadata.name} is defined twice; using the one in ${shown(first.path)}, ignoring ${shown(path)}`);
      }
    }
    const agents: GuardAgent[] = [];
    const policies: GuardPolicy[] = [];
    const upstreams: GuardUpstream[] = [];
    const fileOf = new Map<string, string>();
    for (const [ref, { obj, path }] of byRef) {
      fileOf.set(ref, path);
      if (obj.kind === 'GuardAgent') {
        const status = this.status.get(ref);
        agents.push(status ? { ...obj, status: { ...obj.status, ...status } } : obj);
      } else if (obj.kind === 'GuardPolicy') policies.push(obj);
      else upstreams.push(obj);
    }
    return { agents, policies, upstreams, fileOf, duplicates };
  }

  /** `file:line: GuardPolicy name: Reason: message`, the line pointing at the offending value. */
  private locate(p: ObjectProblem, fileOf: Map<string, string>): string {
    const what = `${p.kind} ${p.namespace ? `${p.namespace}/` : ''}${p.name}: ${p.reason}: ${p.message}`;
    const path = fileOf.get(refOf({ kind: p.kind, metadata: { name: p.name, namespace: p.namespace } }));
    const file = path === undefined ? undefined : this.files.get(path);
    return path && file ? `${shown(path)}:${lineOfProblem(file.goodText, p)}: ${what}` : what;
  }

  private recompile(): void {
    const { fileOf, duplicates, upstreams, ...input } = this.objects();
    const next = PolicySnapshot.compile(input, this.opts.engine, { cache: this.cache, previous: this.current });
    const usable = new Map<string, GuardUpstream>();
    const upstreamProblems: ObjectProblem[] = [];
    for (const u of upstreams) {
      const problem = upstreamProblem(u, 'standalone');
      if (problem) upstreamProblems.push(problem);
      else usable.set(upstreamRef(u), u);
    }
    this.upstreams = usable;
    const decisionProblems = next.problems.map((p) => this.locate(p, fileOf));
    // An upstream the gateway cannot use here (e.g. a cluster sample with secretKeyRef) changes
    // no decision: a warning, where an agent or policy not in force is an error.
    const upstreamLines = upstreamProblems.map((p) => this.locate(p, fileOf));
    this.objectProblems = [...decisionProblems, ...upstreamLines];
    const reported = new Set([...this.objectProblems, ...duplicates]);
    for (const line of decisionProblems) if (!this.reported.has(line)) this.opts.log.error(line);
    for (const line of [...upstreamLines, ...duplicates]) if (!this.reported.has(line)) this.opts.log.warn(line);
    this.reported = reported;
    if (next.revision !== this.current.revision) this.opts.log.info('policy snapshot compiled', { revision: next.revision, ...next.counts });
    this.current = next;
  }

  private async write(obj: GuardObject, folder: string): Promise<ApplyResult> {
    return this.serial(async () => {
      const dir = join(this.manifestsDir, folder);
      await mkdir(dir, { recursive: true });
      const path = join(dir, `${obj.metadata.name}.yaml`);
      const ref = refOf(obj);
      const created = ![...this.files.values()].some((f) => f.objects.some((o) => refOf(o) === ref));
      const text = toManifest(obj);
      await writeFileAtomic(path, text);
      this.files.set(path, { text, objects: [obj], goodText: text, errors: [] });
      this.recompile();
      return { created, location: path };
    });
  }

  applyAgent(agent: GuardAgent): Promise<ApplyResult> {
    return this.write(agent, 'guardagents');
  }

  applyPolicy(policy: GuardPolicy): Promise<ApplyResult> {
    return this.write(policy, 'guardpolicies');
  }

  async suspendAgent(agentId: string, suspension: Suspension): Promise<boolean> {
    return this.serial(async () => {
      const agent = this.current.agent(agentId);
      if (!agent) return false;
      const ref = refOf(agent.source);
      this.status.set(ref, { ...this.status.get(ref), suspension });
      await writeFileAtomic(this.statusFile, JSON.stringify(Object.fromEntries(this.status), null, 2) + '\n');
      this.recompile();
      return true;
    });
  }

  private async loadStatus(): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.statusFile, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    try {
      this.status = new Map(Object.entries(JSON.parse(text) as Record<string, GuardAgentStatus>));
    } catch (err) {
      // Refuse to start rather than silently lift suspensions.
      throw new Error(`${this.statusFile} is not valid JSON (${(err as Error).message}); fix or remove it`, { cause: err });
    }
  }

  async close(): Promise<void> {
    clearTimeout(this.debounce);
    clearInterval(this.rescan);
    this.watcher?.close();
    await this.queue;
  }
}
