/**
 * Standalone store: GuardAgents and GuardPolicies from a folder of YAML manifests, no cluster.
 *
 * - `configDir` is read (recursively) and watched; it is the user's source (e.g. config-samples/).
 * - `dataDir/manifests/` holds what MCP tools write (register_agent, create_policy, auto-registered
 *   agents). An object there overrides one of the same kind and name in `configDir`.
 * - `dataDir/status.json` holds agent status (automatic suspensions), so a restart keeps them.
 *
 * A file that fails to parse is reported with its path and line, and the last good version of
 * that file stays in force.
 */
import { watch, type FSWatcher } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import type { GuardAgent, GuardAgentStatus, GuardObject, GuardPolicy, Suspension } from '../api/schemas.js';
import { PolicySnapshot, type CompileCache } from '../engine/snapshot.js';
import type { EngineOptions } from '../engine/types.js';
import type { Logger } from '../log.js';
import { formatManifestError, parseManifests, toManifest, type ManifestError } from './manifests.js';
import type { ApplyResult, PolicyStore } from './store.js';

export interface StandaloneStoreOptions {
  configDir: string;
  dataDir: string;
  engine: EngineOptions;
  log: Logger;
  /** Watch both folders and reload on change (default true). */
  watch?: boolean;
  /** Quiet period before a reload, so an editor's save-rename-chmod is one reload (default 100 ms). */
  debounceMs?: number;
}

interface LoadedFile {
  text: string;
  /** Objects of the last version of this file that parsed cleanly. */
  objects: GuardObject[];
  /** Errors of the current text; empty when it parsed cleanly. */
  errors: ManifestError[];
}

const MANIFEST_FILE = /\.(ya?ml|json)$/i;

function refOf(obj: Pick<GuardObject, 'kind' | 'metadata'>): string {
  return `${obj.kind}/${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
}

async function listManifestFiles(dir: string): Promise<string[]> {
  let entries;
  try {
    entries = await readdir(dir, { recursive: true, withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  return entries
    .filter((e) => e.isFile() && MANIFEST_FILE.test(e.name))
    .map((e) => join(e.parentPath, e.name))
    .sort();
}

/**
 * Read every manifest under `dir` once (no watching): what `policyguard check` uses.
 * Errors are `file:line: message` strings; a missing folder is an error too.
 */
export async function loadManifestDir(dir: string): Promise<{ agents: GuardAgent[]; policies: GuardPolicy[]; errors: string[] }> {
  const out = { agents: [] as GuardAgent[], policies: [] as GuardPolicy[], errors: [] as string[] };
  if (!(await isDirectory(dir))) return { ...out, errors: [`${dir}: not a folder of manifests`] };
  for (const path of await listManifestFiles(dir)) {
    const parsed = parseManifests(await readFile(path, 'utf8'), relative(process.cwd(), path) || path);
    out.errors.push(...parsed.errors.map(formatManifestError));
    for (const obj of parsed.objects) {
      if (obj.kind === 'GuardAgent') out.agents.push(obj);
      else out.policies.push(obj);
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

/** Write via a temporary file and rename, so readers never see half a file. */
export async function writeFileAtomic(path: string, data: string): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  const fh = await open(tmp, 'w');
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}

export class StandaloneStore implements PolicyStore {
  readonly writeNamespace = undefined;
  private current: PolicySnapshot;
  private readonly cache: CompileCache = new Map();
  private readonly files = new Map<string, LoadedFile>();
  private status = new Map<string, GuardAgentStatus>();
  private loaded = false;
  private watchers: FSWatcher[] = [];
  private debounce: NodeJS.Timeout | undefined;
  /** Serialises reloads and writes so they never interleave. */
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(private readonly opts: StandaloneStoreOptions) {
    this.current = PolicySnapshot.empty(opts.engine);
  }

  /** Load both folders, compile, and start watching. */
  static async open(opts: StandaloneStoreOptions): Promise<StandaloneStore> {
    if (!(await isDirectory(opts.configDir))) throw new Error(`--config-dir ${opts.configDir} is not a folder; point it at a folder of GuardAgent/GuardPolicy YAML (e.g. config-samples)`);
    const store = new StandaloneStore(opts);
    await mkdir(store.manifestsDir, { recursive: true });
    await store.loadStatus();
    await store.reload();
    if (opts.watch ?? true) store.startWatching();
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

  problems(): readonly string[] {
    return [
      ...[...this.files.values()].flatMap((f) => f.errors.map(formatManifestError)),
      ...this.current.problems.map((p) => `${p.kind} ${p.namespace ? `${p.namespace}/` : ''}${p.name}: ${p.reason}: ${p.message}`),
    ];
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private startWatching(): void {
    const onChange = () => {
      clearTimeout(this.debounce);
      this.debounce = setTimeout(() => void this.reload().catch((err) => this.opts.log.error('reload failed', { error: String(err) })), this.opts.debounceMs ?? 100);
    };
    for (const dir of [this.opts.configDir, this.manifestsDir]) {
      try {
        const w = watch(dir, { recursive: true }, onChange);
        w.on('error', (err) => this.opts.log.warn('watch failed; changes need a restart', { dir, error: String(err) }));
        this.watchers.push(w);
      } catch (err) {
        this.opts.log.warn('cannot watch folder; changes need a restart', { dir, error: String(err) });
      }
    }
  }

  /** Re-read both folders; files whose text did not change are not parsed again. */
  reload(): Promise<void> {
    return this.serial(async () => {
      const paths = [...(await listManifestFiles(this.opts.configDir)), ...(await listManifestFiles(this.manifestsDir))];
      const seen = new Set(paths);
      for (const p of [...this.files.keys()]) if (!seen.has(p)) this.files.delete(p);
      for (const path of paths) {
        let text: string;
        try {
          text = await readFile(path, 'utf8');
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // deleted while listing
          throw err;
        }
        const prev = this.files.get(path);
        if (prev?.text === text) continue;
        const shown = relative(process.cwd(), path) || path;
        const parsed = parseManifests(text, shown);
        if (parsed.errors.length === 0) {
          this.files.set(path, { text, objects: parsed.objects, errors: [] });
          if (this.loaded) this.opts.log.info('manifest loaded', { file: shown, objects: parsed.objects.length });
        } else {
          for (const e of parsed.errors) {
            this.opts.log.error(`${formatManifestError(e)}${prev?.objects.length ? ' (the last good version of this file stays in force)' : ''}`);
          }
          // Keep the last good objects; remember the bad text so it is not re-reported until it changes.
          this.files.set(path, { text, objects: prev?.objects ?? [], errors: parsed.errors });
        }
      }
      this.recompile();
      this.loaded = true;
    });
  }

  /** Objects in force: data dir over config dir, then first file (by path) wins. */
  private objects(): { agents: GuardAgent[]; policies: GuardPolicy[] } {
    const byRef = new Map<string, { obj: GuardObject; path: string }>();
    const ordered = [...this.files.entries()].sort(([a], [b]) => {
      const da = a.startsWith(this.manifestsDir) ? 0 : 1;
      const db = b.startsWith(this.manifestsDir) ? 0 : 1;
      return da - db || a.localeCompare(b);
    });
    for (const [path, file] of ordered) {
      for (const obj of file.objects) {
        const ref = refOf(obj);
        const first = byRef.get(ref);
        if (!first) byRef.set(ref, { obj, path });
        else if (!first.path.startsWith(this.manifestsDir)) {
          this.opts.log.warn(`${obj.kind} ${obj.metadata.name} is defined twice; using the first`, { used: first.path, ignored: path });
        }
      }
    }
    const agents: GuardAgent[] = [];
    const policies: GuardPolicy[] = [];
    for (const { obj } of byRef.values()) {
      if (obj.kind === 'GuardAgent') {
        const status = this.status.get(refOf(obj));
        agents.push(status ? { ...obj, status: { ...obj.status, ...status } } : obj);
      } else policies.push(obj);
    }
    return { agents, policies };
  }

  private recompile(): void {
    const next = PolicySnapshot.compile(this.objects(), this.opts.engine, { cache: this.cache, previous: this.current });
    if (next.revision !== this.current.revision) {
      for (const p of next.problems) this.opts.log.warn(`${p.kind} ${p.name} not fully in force`, { reason: p.reason, message: p.message });
      this.opts.log.info('policy snapshot compiled', { revision: next.revision, ...next.counts });
    }
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
      this.files.set(path, { text, objects: [obj], errors: [] });
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
    for (const w of this.watchers) w.close();
    this.watchers = [];
    await this.queue;
  }
}
