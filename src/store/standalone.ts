/**
 * Standalone store: GuardAgents and GuardPolicies from a folder of YAML manifests, no cluster.
 *
 * - `configDir` is read (recursively, see {@link listManifestTree}) and watched; it is the
 *   user's source (e.g. config-samples/, or a ConfigMap volume).
 * - `dataDir/manifests/` holds what MCP tools write (register_agent, create_policy, auto-registered
 *   agents). An object there overrides one of the same kind and name in `configDir`.
 * - `dataDir/status.json` holds agent status (automatic suspensions), so a restart keeps them.
 * - `dataDir/first-seen.json` holds when each GuardAgent was first seen: standalone's creation
 *   time, so of two GuardAgents claiming one id the one in force keeps it, across restarts too.
 *
 * Every folder is watched on its own (see folder-watcher.ts), so every way of saving takes
 * effect within the debounce; a periodic full rescan is the safety net. Each change that takes
 * effect is logged with its file. A file is taken in once it looked the same twice, a debounce
 * apart, so a file being written is not read half-way (saves should still be atomic); the
 * changes of a reload are applied together, so a policy moved between files never lapses
 * (docs/decisions.md §9).
 *
 * Each document stands on its own. One that cannot be read, validated or compiled is reported
 * with its file and line; its last good version stays in force, and when it has none (a new
 * object, or after a restart) the policy set is incomplete: every decision is denied, naming
 * the problem, until it is fixed (docs/decisions.md, "Objects that cannot be loaded"). A file
 * that cannot be read at all (no permission, a dangling symlink, not UTF-8) is one such
 * problem; a folder that cannot be listed (one of the two roots when it is gone) keeps what was
 * loaded from it in force, as a file keeps its last good version.
 */
import { mkdir, readFile, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, sep } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { z } from 'zod';
import type { AnyGuardObject, GuardAgent, GuardAgentStatus, GuardObject, GuardPolicy, GuardUpstream, Suspension } from '../api/schemas.js';
import { formatProblem, PolicySnapshot, type CompileCache, type MissingObject } from '../engine/snapshot.js';
import { agentIdOf } from '../engine/compile.js';
import { foldCase } from '../engine/glob.js';
import type { EngineOptions, ObjectProblem } from '../engine/types.js';
import type { Logger } from '../log.js';
import { writeFileAtomic } from './atomic-file.js';
import { FolderWatcher } from './folder-watcher.js';
import { listManifestTree, readManifest, type ManifestRead, type UnlistedFolder } from './manifest-tree.js';
import { upstreamProblem, upstreamRef } from './upstreams.js';
import { formatManifestError, formatZodError, identityOf, lineOfProblem, parseManifests, toManifest, type ManifestError, type ParsedManifests } from './manifests.js';
import { namespacedName, objectKey } from '../engine/types.js';
import { StoreChangedError, StoreConflictError, type ApplyResult, type PolicyStore, type WriteIntent } from './store.js';

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

/** One object as a file holds it: its version in the current text, or the last good one. */
interface Entry {
  object: AnyGuardObject;
  /** The line its document starts on in `text`. */
  line: number;
  /** The text this version came from, to point compile problems at their lines. */
  text: string;
}

/** An error of a file's current text, and what stays in force in its place. */
interface FileError {
  error: ManifestError;
  /**
   * `object`: the last good version of the object the error concerns; `file`: the last good
   * version of the whole file (an error that names no object, such as invalid YAML); `copy`: one
   * of the identical copies of a name defined twice; `folder`: what was loaded from a folder
   * that cannot be listed; undefined: nothing.
   */
  fallback: 'object' | 'file' | 'copy' | 'folder' | undefined;
}

interface LoadedFile {
  /** The current text; undefined when the file is refused (too large). */
  text: string | undefined;
  refused: string | undefined;
  /** What the file contributes: every valid object of the current text, and the last good version of each invalid one. */
  entries: Entry[];
  errors: FileError[];
  /** True when every object the current text defines is in force, in its current or last good version. */
  complete: boolean;
}

/** Where an object in force comes from. */
type Source = Entry & { path: string };

/** Kinds that decide nothing: a GuardUpstream not in force only makes the gateway refuse calls through it. */
const NOT_DECIDING = new Set(['GuardUpstream', 'GuardApproval']);

/** What `first-seen.json` holds: an ISO time by {@link refOf}. */
const FirstSeenSchema = z.record(z.string(), z.iso.datetime());

/** The look (see {@link readManifest}) of a path that is gone. */
const GONE = 'gone';

/**
 * How long a reload's changes may wait for every file to settle, in debounces (2 s at the
 * default 100 ms). Then what has settled is applied, so a folder that never stops changing
 * cannot starve a revocation.
 */
const SETTLE_LIMIT_DEBOUNCES = 20;

/** What a problem line adds, saying what is in force instead. */
const IN_FORCE = {
  missing: ' (not in force: every decision is denied until this is fixed)',
  object: ' (the last good version stays in force)',
  file: ' (the last good version of this file stays in force)',
  copy: ' (the copies are identical, so that version is in force)',
  folder: ' (what was loaded from this folder stays in force)',
  none: ' (not in force)',
} as const;

function refOf(obj: Pick<AnyGuardObject, 'kind' | 'metadata'>): string {
  return objectKey(obj.kind, obj.metadata.namespace, obj.metadata.name);
}

/** A path as users typed it: relative to the working folder when inside it. */
function shown(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : path;
}

/** Parse what {@link readManifest} found; a refused file is one error, on the line it is about. */
function parseRead(read: ManifestRead, file: string): ParsedManifests {
  return 'text' in read ? parseManifests(read.text, file) : { objects: [], errors: [{ file, line: read.line, message: read.refused }], skipped: 0 };
}

/** The error of a folder that cannot be listed (a root folder that is gone, a subfolder without permission). */
function unlistedError({ path, error }: UnlistedFolder): ManifestError {
  return { file: shown(path), message: error };
}

/**
 * Split objects into one per kind, namespace and name, and the names defined more than once:
 * an error each (`a.yaml:3: GuardPolicy p is also defined at b.yaml:1`). Which copy the author
 * meant cannot be told, so a name defined twice changes nothing in force: identical copies are
 * one version (one of them is taken); else the version in force before (`inForce`, e.g. while
 * a file is split by hand: copied, then removed from the old file) stays in force; else, as at
 * a cold start, none is (docs/decisions.md §9).
 */
function splitDuplicates(sources: readonly Source[], inForce: readonly Source[] = []): { unique: Source[]; duplicates: FileError[] } {
  const lastGood = new Map(inForce.map((s) => [refOf(s.object), s]));
  const byRef = new Map<string, Source[]>();
  for (const s of sources) {
    const list = byRef.get(refOf(s.object)) ?? [];
    list.push(s);
    byRef.set(refOf(s.object), list);
  }
  const unique: Source[] = [];
  const duplicates: FileError[] = [];
  for (const [ref, list] of byRef) {
    if (list.length === 1) {
      unique.push(list[0]!);
      continue;
    }
    list.sort((a, b) => a.path.localeCompare(b.path) || a.line - b.line);
    const [first, ...others] = list as [Source, ...Source[]];
    const object = identityOf(first.object)!;
    const error: ManifestError = {
      file: shown(first.path),
      line: first.line,
      message: `${object.kind} ${object.namespace ? `${object.namespace}/` : ''}${object.name} is also defined at ${others.map((o) => `${shown(o.path)}:${o.line}`).join(', ')}; one name, one object: rename or remove the others`,
      object,
    };
    const last = lastGood.get(ref);
    if (others.every((o) => isDeepStrictEqual(o.object, first.object))) {
      unique.push(first);
      duplicates.push({ error, fallback: 'copy' });
    } else if (last) {
      unique.push(last);
      duplicates.push({ error, fallback: 'object' });
    } else duplicates.push({ error, fallback: undefined });
  }
  return { unique, duplicates };
}

/**
 * `obj` without a `creationTimestamp`: a manifest's (one exported from a cluster, or one a
 * newcomer wrote to look older) never decides which GuardAgent keeps an id; standalone mode's
 * creation time is when it first saw the object (see `StandaloneStore.noteFirstSeen`).
 */
function withoutCreationTime<T extends AnyGuardObject>(obj: T): T {
  const { creationTimestamp: _, ...metadata } = obj.metadata;
  return { ...obj, metadata };
}

/** A file error that leaves an object its author wrote in no version. */
function isMissing(e: FileError): boolean {
  return e.fallback === undefined && !(e.error.object && NOT_DECIDING.has(e.error.object.kind));
}

function missingOf(e: ManifestError): MissingObject {
  const o = e.object;
  const kind = o?.kind === 'GuardAgent' || o?.kind === 'GuardPolicy' ? o.kind : undefined;
  return { ...(kind ? { kind } : {}), ...(o?.namespace ? { namespace: o.namespace } : {}), ...(o?.agentId ? { agentId: o.agentId } : {}), problem: formatManifestError(e) };
}

/**
 * Read every manifest under `dir` once (no watching): what `policyguard check` uses.
 * Errors are `file:line: message` strings, a name defined twice among them; a missing folder,
 * and a subfolder that cannot be listed, are errors too. The valid objects of a file with
 * errors are returned all the same.
 *
 * @example
 *   const { agents, policies, errors } = await loadManifestDir('config-samples');
 */
export async function loadManifestDir(dir: string): Promise<{ agents: GuardAgent[]; policies: GuardPolicy[]; errors: string[]; describe: (p: ObjectProblem) => string }> {
  const sourceOf = new Map<string, Source>();
  const out = { agents: [] as GuardAgent[], policies: [] as GuardPolicy[], errors: [] as string[], describe: (p: ObjectProblem) => locateProblem(p, sourceOf) };
  if (!(await isDirectory(dir))) return { ...out, errors: [`${dir}: not a folder of manifests`] };
  const sources: Source[] = [];
  const tree = await listManifestTree(dir);
  out.errors.push(...tree.unlisted.map((u) => formatManifestError(unlistedError(u))));
  for (const path of tree.files) {
    const read = await readManifest(path);
    if (!read) continue;
    const parsed = parseRead(read, shown(path));
    out.errors.push(...parsed.errors.map(formatManifestError));
    for (const { object, line } of parsed.objects) sources.push({ object, line, text: 'text' in read ? read.text : '', path });
  }
  const { unique, duplicates } = splitDuplicates(sources);
  out.errors.push(...duplicates.map((d) => formatManifestError(d.error)));
  for (const source of unique) {
    const { object } = source;
    // No history here: GuardAgents claiming one id are ordered as at a start without first-seen.json.
    if (object.kind === 'GuardAgent') out.agents.push(withoutCreationTime(object));
    else if (object.kind === 'GuardPolicy') out.policies.push(object);
    sourceOf.set(refOf(object), source);
  }
  return out;
}

/** `file:line: GuardPolicy NAME: Reason: message` for a problem of an object read from `sourceOf`. */
function locateProblem(p: ObjectProblem, sourceOf: ReadonlyMap<string, Source>): string {
  const source = sourceOf.get(objectKey(p.kind, p.namespace, p.name));
  return source ? `${shown(source.path)}:${lineOfProblem(source.text, p, source.line)}: ${formatProblem(p)}` : formatProblem(p);
}

/** The text of a file the server keeps in the data dir; undefined when there is none yet. */
async function readIfPresent(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
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
  /** Each file's size, mtime and inode at the last look (see {@link readManifest}), or {@link GONE}. */
  private readonly looks = new Map<string, string>();
  /** When the reloads started to wait for files to settle; undefined when nothing waits. */
  private unsettledSince: number | undefined;
  /** Files that became empty while they held documents, and since when (see {@link reload}). */
  private readonly emptiedSince = new Map<string, number>();
  /** Folders that could not be listed at the last reload applied, as errors (see {@link reload}). */
  private folderErrors: FileError[] = [];
  /** Folders listed once, by the reloads applied, and not gone since: one that cannot be listed now keeps what was loaded from it. */
  private listed = new Set<string>();
  private status = new Map<string, GuardAgentStatus>();
  /** When each GuardAgent was first seen, by {@link refOf} (see {@link noteFirstSeen}). */
  private firstSeen = new Map<string, string>();
  private loaded = false;
  private watcher: FolderWatcher | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private rescan: NodeJS.Timeout | undefined;
  /** Set by {@link close}: a reload still running must not schedule another. */
  private closed = false;
  /** Files and objects not (fully) in force, as `file:line: …` lines saying what is in force instead. */
  private problemLines: string[] = [];
  /** Where each object in force comes from, by {@link refOf}: the last good version of a name defined twice. */
  private inForce = new Map<string, Source>();
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
    await store.loadFirstSeen();
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

  private get firstSeenFile(): string {
    return join(this.opts.dataDir, 'first-seen.json');
  }

  snapshot(): PolicySnapshot {
    return this.current;
  }

  /** Ready once the first load has compiled; an incomplete policy set is ready too: it answers, with denies. */
  notReady(): string | undefined {
    return this.loaded ? undefined : 'the first load has not compiled yet';
  }

  isLeader(): boolean {
    return true;
  }

  upstream(ref: string): GuardUpstream | undefined {
    return this.upstreams.get(ref);
  }

  problems(): readonly string[] {
    return this.problemLines;
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
    if (this.debounce || this.closed) return;
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      void this.reloadLogged();
    }, this.debounceMs);
  }

  private get debounceMs(): number {
    return this.opts.debounceMs ?? 100;
  }

  private reloadLogged(): Promise<void> {
    return this.reload().catch((err) => this.opts.log.error('reload of the manifest folders failed; what was loaded stays in force', { error: String(err) }));
  }

  /**
   * Re-list and re-read both folders; a file whose text did not change is not parsed again.
   *
   * A reload's changes are applied as one unit, as a save of several files (a policy moved from
   * one file to another, a `git checkout`, a ConfigMap volume's `..data` swap) must never be
   * half in force: a path whose size, mtime or inode changed since the last look, or that
   * appeared or vanished, is settled once it looks the same at the next look (one debounce
   * later), and while any path is unsettled nothing is applied, removals included. Changes that
   * waited {@link SETTLE_LIMIT_DEBOUNCES} debounces are applied without the paths still
   * changing (logged), so a folder that never stops changing cannot starve a revocation. At
   * start-up there is nothing older to keep, so everything is taken in.
   *
   * A folder that cannot be listed (a root that was removed or moved away, a subfolder without
   * permission) is an error, never an empty folder: the files known under it are not looked
   * at, so what was loaded from it stays in force, as a file keeps its last good version; one
   * never listed (at start-up, or a new subfolder) denies every decision, as a new file that
   * cannot be read. A root that cannot be listed has no watch to report its return, so it is
   * listed again every debounce until it can be.
   */
  reload(): Promise<void> {
    return this.serial(async () => {
      const roots = [this.opts.configDir, this.manifestsDir];
      const trees = await Promise.all(roots.map((root) => listManifestTree(root)));
      // Files may have landed in a folder between its listing and the start of its watch.
      if (this.watcher && this.watcher.sync(trees.flatMap((t) => t.folders)) > 0) this.scheduleReload();
      const unlisted = trees.flatMap((t) => t.unlisted);
      // A root that is gone has no watch to say it is back (`mv live live.old; mv live.old live`).
      if (unlisted.some((u) => roots.includes(u.path))) this.scheduleReload();
      const reads = new Map<string, ManifestRead>();
      for (const path of new Set(trees.flatMap((t) => t.files))) {
        const read = await readManifest(path);
        if (read) reads.set(path, read); // else deleted since listing: gone
      }
      const settled = new Map<string, ManifestRead | undefined>(); // undefined: gone
      const unsettled: string[] = [];
      const now = performance.now();
      for (const path of new Set([...this.files.keys(), ...this.looks.keys(), ...reads.keys()])) {
        if (unlisted.some((u) => path.startsWith(u.path + sep))) continue;
        const read = reads.get(path);
        const look = read?.look ?? GONE;
        const same = this.looks.get(path) === look;
        this.looks.set(path, look);
        if (this.loaded && this.emptied(path, read, now)) unsettled.push(shown(path));
        else if (!this.loaded || same) settled.set(path, read);
        else unsettled.push(shown(path));
      }
      if (unsettled.length > 0) {
        this.scheduleReload();
        this.unsettledSince ??= now;
        const waitedMs = Math.round(now - this.unsettledSince);
        if (waitedMs < SETTLE_LIMIT_DEBOUNCES * this.debounceMs) return;
        this.opts.log.warn('manifests keep changing; applying the changes that settled, without these files', { waitedMs, files: unsettled.join(',') });
        this.unsettledSince = now;
      } else this.unsettledSince = undefined;
      const listedBefore = this.listed;
      const folderErrors = unlisted.map((u): FileError => ({ error: unlistedError(u), fallback: listedBefore.has(u.path) ? 'folder' : undefined }));
      let changed = !this.loaded || !isDeepStrictEqual(folderErrors, this.folderErrors);
      this.folderErrors = folderErrors;
      // One that cannot be listed now was listed once if it was before.
      this.listed = new Set([...trees.flatMap((t) => t.folders), ...unlisted].map((f) => f.path).filter((path) => !unlisted.some((u) => u.path === path) || listedBefore.has(path)));
      for (const [path, read] of settled) {
        if (read) {
          changed = this.load(path, read) || changed;
          continue;
        }
        this.looks.delete(path);
        const file = this.files.get(path);
        if (!file) continue;
        this.files.delete(path);
        changed = true;
        this.opts.log.info('manifest removed', { file: shown(path), objects: file.entries.length });
      }
      if (changed) await this.recompile();
      this.loaded = true;
    });
  }

  /**
   * Whether `path` has read empty (or blank) for less than the settle bound while it held
   * documents: a writer that truncates a file and then writes it (`writeFile`, `>`) may be slow
   * to write, and an empty file read then would take its policies out of force. Emptying a file
   * on purpose takes effect after the bound; deleting it at once.
   */
  private emptied(path: string, read: ManifestRead | undefined, now: number): boolean {
    const held = this.files.get(path);
    const blank = read !== undefined && 'text' in read && read.text.trim() === '';
    if (!blank || !held || (held.entries.length === 0 && held.errors.length === 0)) {
      this.emptiedSince.delete(path);
      return false;
    }
    const since = this.emptiedSince.get(path) ?? now;
    this.emptiedSince.set(path, since);
    return now - since < SETTLE_LIMIT_DEBOUNCES * this.debounceMs;
  }

  /**
   * Take in one file; true when it changed. Each document stands on its own: an invalid one
   * keeps the last good version of its object, one that names no object (invalid YAML) the
   * last good version of the whole file, and either, with no good version, is missing.
   */
  private load(path: string, read: ManifestRead): boolean {
    const prev = this.files.get(path);
    if (prev && ('text' in read ? prev.text === read.text : prev.refused === read.refused)) return false;
    const parsed = parseRead(read, shown(path));
    const text = 'text' in read ? read.text : '';
    const entries: Entry[] = parsed.objects.map(({ object, line }) => ({ object, line, text }));
    /** What the current text defines validly: an invalid copy of one of these is a name defined twice, with no fallback. */
    const valid = new Set(entries.map((e) => refOf(e.object)));
    const defined = new Set(valid);
    const keep = (e: Entry) => {
      if (defined.has(refOf(e.object))) return;
      entries.push(e);
      defined.add(refOf(e.object));
    };
    const lastGood = new Map((prev?.entries ?? []).map((e) => [refOf(e.object), e]));
    // Errors that name their object first, so the file's fallback adds only what is left. Every
    // error of an object with a last good version says it stays in force, not only the first.
    const ordered = [...parsed.errors.filter((e) => e.object), ...parsed.errors.filter((e) => !e.object)];
    const errors = ordered.map((error): FileError => {
      if (error.object) {
        const ref = objectKey(error.object.kind, error.object.namespace, error.object.name);
        const last = lastGood.get(ref);
        if (!last || valid.has(ref)) return { error, fallback: undefined };
        keep(last);
        return { error, fallback: 'object' };
      }
      if (!prev?.complete) return { error, fallback: undefined };
      prev.entries.forEach(keep);
      return { error, fallback: 'file' };
    });
    this.files.set(path, {
      text: 'text' in read ? read.text : undefined,
      refused: 'refused' in read ? read.refused : undefined,
      entries,
      errors,
      complete: !errors.some(isMissing),
    });
    if (this.loaded && parsed.errors.length === 0) this.opts.log.info('manifest loaded', { file: shown(path), objects: entries.length });
    return true;
  }

  /**
   * Objects in force: data dir over config dir (logged), then one per kind and name: a name
   * defined twice in one folder is a problem, and changes nothing in force (see {@link splitDuplicates}).
   * Each GuardAgent carries the time it was first seen as its creation time ({@link noteFirstSeen}).
   */
  private objects(): { agents: GuardAgent[]; policies: GuardPolicy[]; upstreams: GuardUpstream[]; sourceOf: Map<string, Source>; fileErrors: FileError[]; overrides: string[]; firstSeenChanged: boolean } {
    const layerOf = (path: string) => (path.startsWith(this.manifestsDir + sep) ? 0 : 1);
    const layers: [Source[], Source[]] = [[], []];
    for (const [path, file] of this.files) for (const e of file.entries) layers[layerOf(path)].push({ ...e, path });
    const inForce = [...this.inForce.values()];
    const [data, config] = layers.map((sources, layer) => splitDuplicates(sources, inForce.filter((s) => layerOf(s.path) === layer))) as [ReturnType<typeof splitDuplicates>, ReturnType<typeof splitDuplicates>];
    const sourceOf = new Map<string, Source>();
    const overrides: string[] = [];
    for (const s of data.unique) sourceOf.set(refOf(s.object), s);
    for (const s of config.unique) {
      const over = sourceOf.get(refOf(s.object));
      if (!over) sourceOf.set(refOf(s.object), s);
      else overrides.push(`${shown(s.path)}:${s.line}: ${s.object.kind} ${s.object.metadata.name} is overridden by ${shown(over.path)}, written through MCP (delete that file to use this one)`);
    }
    const fileErrors = [...this.folderErrors, ...[...this.files.values()].flatMap((f) => f.errors), ...data.duplicates, ...config.duplicates];
    // A GuardAgent that cannot be loaded keeps its time too: fixed, it is as old as it was.
    const unloaded = fileErrors.flatMap(({ error: { object: o } }) => (o?.kind === 'GuardAgent' ? [objectKey(o.kind, o.namespace, o.name)] : []));
    const firstSeenChanged = this.noteFirstSeen(new Set([...[...sourceOf].filter(([, s]) => s.object.kind === 'GuardAgent').map(([ref]) => ref), ...unloaded]));
    const agents: GuardAgent[] = [];
    const policies: GuardPolicy[] = [];
    const upstreams: GuardUpstream[] = [];
    for (const [ref, { object }] of sourceOf) {
      if (object.kind === 'GuardAgent') {
        const status = this.status.get(ref);
        const metadata = { ...object.metadata, creationTimestamp: this.firstSeen.get(ref)! };
        agents.push({ ...object, metadata, ...(status ? { status: { ...object.status, ...status } } : {}) });
      } else if (object.kind === 'GuardPolicy') policies.push(object);
      else upstreams.push(object);
    }
    return { agents, policies, upstreams, sourceOf, fileErrors, overrides, firstSeenChanged };
  }

  /**
   * Record when each GuardAgent of `present` was first seen; true when that changed. Standalone
   * has no creation time, so this is its own: of GuardAgents claiming one id, the one seen first
   * keeps it, whatever their names, so a file added later cannot take over an agent's id and
   * trust (docs/decisions.md, "Identity"). A time is never forgotten: a file that is gone for a
   * while (a checkout, merge-conflict markers at a restart, a move) must not make its agent
   * younger than a newcomer claiming the same id. A manifest's own `creationTimestamp` is not
   * used ({@link withoutCreationTime}). Those first seen together (at a start without
   * `first-seen.json`, or in one reload) tie, and namespace/name decides.
   */
  private noteFirstSeen(present: ReadonlySet<string>): boolean {
    const fresh = [...present].filter((ref) => !this.firstSeen.has(ref));
    if (fresh.length > 0) {
      // Never before a time already given, should the clock step back.
      const latest = [...this.firstSeen.values()].reduce((max, t) => Math.max(max, Date.parse(t)), 0);
      const now = new Date(Math.max(Date.now(), latest + 1)).toISOString();
      for (const ref of fresh) this.firstSeen.set(ref, now);
    }
    return fresh.length > 0;
  }

  /**
   * Compile the snapshot from the files as they are now, with what cannot be loaded as missing
   * objects; log each new problem once (an agent or policy not in force at ERROR, an upstream
   * the gateway cannot use and an override at WARN) and keep the lines `problems()` lists.
   */
  private async recompile(): Promise<void> {
    const { sourceOf, fileErrors, overrides, upstreams, firstSeenChanged, ...input } = this.objects();
    const missing = fileErrors.filter(isMissing).map((e) => missingOf(e.error));
    const next = PolicySnapshot.compile({ ...input, missing }, this.opts.engine, { cache: this.cache, previous: this.current, describe: (p) => locateProblem(p, sourceOf) });
    const usable = new Map<string, GuardUpstream>();
    const upstreamProblems: ObjectProblem[] = [];
    for (const u of upstreams) {
      const problem = upstreamProblem(u, 'standalone');
      if (problem) upstreamProblems.push(problem);
      else usable.set(upstreamRef(u), u);
    }
    this.upstreams = usable;
    const missingNow = new Set(next.missing());
    const inForce = (e: FileError) => (isMissing(e) ? IN_FORCE.missing : IN_FORCE[e.fallback ?? 'none']);
    const errors = [
      ...fileErrors.map((e) => formatManifestError(e.error) + inForce(e)),
      ...next.problems.map((p) => locateProblem(p, sourceOf)).map((line) => (missingNow.has(line) ? line + IN_FORCE.missing : line)),
    ];
    // An upstream the gateway cannot use here (e.g. a cluster sample with secretKeyRef) changes
    // no decision: a warning, where an agent or policy not in force is an error.
    const upstreamLines = upstreamProblems.map((p) => locateProblem(p, sourceOf));
    const warnings = [...upstreamLines, ...overrides];
    this.problemLines = [...errors, ...upstreamLines];
    const reported = new Set([...errors, ...warnings]);
    for (const line of errors) if (!this.reported.has(line)) this.opts.log.error(line);
    for (const line of warnings) if (!this.reported.has(line)) this.opts.log.warn(line);
    this.reported = reported;
    if (next.revision !== this.current.revision) this.opts.log.info('policy snapshot compiled', { revision: next.revision, ...next.counts });
    this.current = next;
    this.inForce = sourceOf;
    if (firstSeenChanged) await this.saveFirstSeen();
  }

  /** Keep {@link firstSeen} for the next start; when that fails the snapshot stays in force, and the log says what a restart risks. */
  private async saveFirstSeen(): Promise<void> {
    try {
      await writeFileAtomic(this.firstSeenFile, JSON.stringify(Object.fromEntries(this.firstSeen), null, 2) + '\n');
    } catch (err) {
      this.opts.log.error(`${this.firstSeenFile} could not be written; after a restart, namespace/name decides between GuardAgents claiming one id that are first seen together`, { error: String(err) });
    }
  }

  private async write(obj: GuardObject, folder: string, intent: WriteIntent): Promise<ApplyResult> {
    return this.serial(async () => {
      // Checked again here, in turn with every other write: another call may have written it since.
      const named = `${obj.kind} ${namespacedName(obj.metadata)}`;
      if (this.holds(obj.kind, obj.metadata.namespace, obj.metadata.name) !== (intent === 'update')) throw new StoreChangedError(named, intent, false);
      const dir = join(this.manifestsDir, folder);
      const path = await this.pathFor(obj, dir, named);
      await mkdir(dir, { recursive: true });
      const object = withoutCreationTime(obj);
      const text = toManifest(object);
      await writeFileAtomic(path, text);
      this.files.set(path, { text, refused: undefined, entries: [{ object, line: 1, text }], errors: [], complete: true });
      await this.recompile();
      return { location: path };
    });
  }

  /**
   * The data-dir file an object written through MCP goes to: the one anywhere in the data dir
   * that holds it and nothing else (a name or folder chosen by hand stays), else the first free
   * of `<name>.yaml` and `<namespace>_<name>.yaml` (`_<name>.yaml` for none; `_` is in no
   * Kubernetes name). Files are read for what they hold, whatever they are called; a file that
   * holds anything else, could not be read or is not loaded yet is never written over.
   */
  private async pathFor(obj: GuardObject, dir: string, named: string): Promise<string> {
    const ref = refOf(obj);
    for (const [path, file] of this.files) {
      if (path.startsWith(this.manifestsDir + sep) && file.entries.length === 1 && refOf(file.entries[0]!.object) === ref) return path;
    }
    const candidates = [`${obj.metadata.name}.yaml`, `${obj.metadata.namespace ?? ''}_${obj.metadata.name}.yaml`].map((file) => join(dir, file));
    for (const path of candidates) {
      // A namespace with a `/` or `..` (no Kubernetes name) would put the file elsewhere.
      if (dirname(path) === dir && !(await this.occupied(path))) return path;
    }
    throw new StoreConflictError(named, [], `${named} cannot be written: ${candidates.map(shown).join(' and ')} hold something else (or its namespace is no Kubernetes name); give one of them a name of its own`);
  }

  /** Whether `path` holds anything: objects, or a file that could not be read or is not loaded yet. */
  private async occupied(path: string): Promise<boolean> {
    const file = this.files.get(path);
    if (file) return file.entries.length > 0 || file.errors.length > 0 || file.refused !== undefined;
    return stat(path).then(
      () => true,
      () => false,
    );
  }

  holds(kind: 'GuardAgent' | 'GuardPolicy', namespace: string | undefined, name: string): boolean {
    const ref = objectKey(kind, namespace, name);
    return [...this.files.values()].some((file) => file.entries.some((e) => refOf(e.object) === ref));
  }

  agentHolders(agentId: string): Array<string | undefined> {
    const id = foldCase(agentId);
    return [...this.files.values()].flatMap((file) => file.entries.filter((e) => e.object.kind === 'GuardAgent' && foldCase(agentIdOf(e.object)) === id).map((e) => e.object.metadata.namespace));
  }

  applyAgent(agent: GuardAgent, intent: WriteIntent): Promise<ApplyResult> {
    return this.write(agent, 'guardagents', intent);
  }

  applyPolicy(policy: GuardPolicy, intent: WriteIntent): Promise<ApplyResult> {
    return this.write(policy, 'guardpolicies', intent);
  }

  async suspendAgent(agentId: string, suspension: Suspension): Promise<boolean> {
    return this.serial(async () => {
      const agent = this.current.agent(agentId);
      if (!agent) return false;
      const ref = refOf(agent.source);
      this.status.set(ref, { ...this.status.get(ref), suspension });
      await writeFileAtomic(this.statusFile, JSON.stringify(Object.fromEntries(this.status), null, 2) + '\n');
      await this.recompile();
      return true;
    });
  }

  private async loadFirstSeen(): Promise<void> {
    const text = await readIfPresent(this.firstSeenFile);
    if (text === undefined) return;
    // Refuse to start rather than let another GuardAgent take an id.
    const refuse = (why: string, cause?: unknown) =>
      new Error(`${this.firstSeenFile} ${why}; fix or remove it (without it, namespace/name decides between GuardAgents claiming one id)`, { cause });
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw refuse(`is not valid JSON (${(err as Error).message})`, err);
    }
    const parsed = FirstSeenSchema.safeParse(value);
    if (!parsed.success) throw refuse(`is not a map of ISO times (${formatZodError(parsed.error)})`);
    this.firstSeen = new Map(Object.entries(parsed.data));
  }

  private async loadStatus(): Promise<void> {
    const text = await readIfPresent(this.statusFile);
    if (text === undefined) return;
    try {
      this.status = new Map(Object.entries(JSON.parse(text) as Record<string, GuardAgentStatus>));
    } catch (err) {
      // Refuse to start rather than silently lift suspensions.
      throw new Error(`${this.statusFile} is not valid JSON (${(err as Error).message}); fix or remove it`, { cause: err });
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.debounce);
    clearInterval(this.rescan);
    this.watcher?.close();
    await this.queue;
  }
}
