/** The folder watch on real folders: which folders it watches as the tree changes. */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { eventually } from './eventually.js';
import { silentLogger } from '../../src/log.js';
import { FolderWatcher } from '../../src/store/folder-watcher.js';
import { listManifestTree } from '../../src/store/manifest-tree.js';

let root: string;
let watcher: FolderWatcher;
let changes = 0;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'policyguard-watch-'));
  changes = 0;
  watcher = new FolderWatcher({ onChange: () => changes++, log: silentLogger });
});
afterEach(async () => {
  watcher.close();
  await rm(root, { recursive: true, force: true });
});

const sync = async () => watcher.sync((await listManifestTree(root)).folders);

describe('FolderWatcher', () => {
  it('watches new subfolders, unwatches removed ones, and re-watches a folder replaced under the same path', async () => {
    expect(await sync()).toBe(1);
    await mkdir(join(root, 'team'));
    expect(await sync()).toBe(1);
    expect(watcher.folders()).toEqual([root, join(root, 'team')]);
    expect(await sync()).toBe(0); // nothing new

    await rm(join(root, 'team'), { recursive: true });
    await sync();
    expect(watcher.folders()).toEqual([root]);

    // Removed and created again between two syncs: a new folder, so a new watch.
    await mkdir(join(root, 'team'));
    await sync();
    await rm(join(root, 'team'), { recursive: true });
    await mkdir(join(root, 'team'));
    expect(await sync()).toBe(1);
    const before = changes;
    await writeFile(join(root, 'team', 'a.yaml'), 'x');
    await eventually(async () => changes, (n) => n > before, 'a change reported from the re-created folder');
  });
});
