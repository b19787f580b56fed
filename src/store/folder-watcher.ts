/**
 * Watch a set of folders, each one on its own and non-recursively. A folder's watch reports
 * every create, rename, write and delete of its entries whichever way a file was saved; Node's
 * recursive watch loses a file once it has been renamed over (`sed -i`, most editors), so a
 * later revocation went unseen (docs/decisions.md). The owner re-lists the tree on every change
 * and hands the folders back to {@link FolderWatcher.sync}, so new subfolders get watched.
 */
import { watch, type FSWatcher } from 'node:fs';
import type { Logger } from '../log.js';
import type { TreeFolder } from './manifest-tree.js';

export interface FolderWatcherOptions {
  /** Called on any change in a watched folder (hidden entries too: a ConfigMap swaps `..data`). */
  onChange: () => void;
  log: Logger;
}

export class FolderWatcher {
  private readonly watching = new Map<string, { id: string; watcher: FSWatcher }>();
  /** Folders whose watch failed, so the warning is logged once and not on every reload. */
  private readonly failed = new Set<string>();

  constructor(private readonly opts: FolderWatcherOptions) {}

  /**
   * Watch exactly `folders`: start watching new ones, stop watching those no longer listed, and
   * restart the watch of a folder that was replaced under the same path (its id changed).
   * Returns how many watches were started, so the caller can re-list once: files created in a
   * new folder before its watch started were not reported.
   *
   * @example
   *   const w = new FolderWatcher({ onChange: () => scheduleReload(), log });
   *   if (w.sync((await listManifestTree(dir)).folders) > 0) scheduleReload();
   */
  sync(folders: readonly TreeFolder[]): number {
    const wanted = new Map(folders.map((f) => [f.path, f.id]));
    for (const [path, w] of this.watching) {
      if (wanted.get(path) === w.id) continue;
      w.watcher.close();
      this.watching.delete(path);
    }
    let started = 0;
    for (const [path, id] of wanted) {
      if (this.watching.has(path)) continue;
      try {
        // Not persistent: the HTTP server keeps the process alive, a watch should not.
        const watcher = watch(path, { persistent: false }, () => this.opts.onChange());
        watcher.on('error', (err) => {
          this.opts.log.warn('folder watch failed; it is retried on the next reload', { dir: path, error: String(err) });
          watcher.close();
          if (this.watching.get(path)?.watcher === watcher) this.watching.delete(path);
        });
        this.watching.set(path, { id, watcher });
        this.failed.delete(path);
        started++;
      } catch (err) {
        if (this.failed.has(path)) continue;
        this.failed.add(path);
        this.opts.log.warn('cannot watch folder; changes in it are seen only by the periodic rescan (--rescan-interval)', { dir: path, error: String(err) });
      }
    }
    return started;
  }

  /** Folders watched now (for tests and diagnostics). */
  folders(): string[] {
    return [...this.watching.keys()].sort();
  }

  close(): void {
    for (const w of this.watching.values()) w.watcher.close();
    this.watching.clear();
  }
}
