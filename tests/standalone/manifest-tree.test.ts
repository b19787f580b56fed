/**
 * Which files are manifests, on real folders: symlinks followed, hidden entries skipped, the
 * same listing for the store and for `policyguard check` (loadManifestDir).
 */
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { listManifestTree } from '../../src/store/manifest-tree.js';
import { loadManifestDir } from '../../src/store/standalone.js';
import { ConfigMapVolume } from './configmap-volume.js';

const agent = (name: string) => `apiVersion: policyguard.dev/v1alpha1\nkind: GuardAgent\nmetadata: {name: ${name}}\nspec: {trustLevel: low}\n`;

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'policyguard-tree-'));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('listManifestTree', () => {
  it('follows symlinks to files and folders, skips hidden entries and other extensions, survives a symlink loop', async () => {
    const dir = join(root, 'config');
    await mkdir(join(dir, 'team', '.git'), { recursive: true });
    await mkdir(join(root, 'elsewhere'));
    await writeFile(join(dir, 'a.yaml'), agent('a'));
    await writeFile(join(dir, 'notes.txt'), 'not a manifest');
    await writeFile(join(dir, '.a.yaml.swp'), 'editor swap file');
    await writeFile(join(dir, 'team', 'b.yml'), agent('b'));
    await writeFile(join(dir, 'team', '.git', 'c.yaml'), agent('c'));
    await writeFile(join(root, 'elsewhere', 'd.json'), '{}');
    await symlink(join(root, 'elsewhere', 'd.json'), join(dir, 'd.json'));
    await symlink(join(root, 'elsewhere'), join(dir, 'linked'));
    await symlink(dir, join(dir, 'team', 'loop'));
    await symlink(join(root, 'missing.yaml'), join(dir, 'dangling.yaml'));

    const { files, folders } = await listManifestTree(dir);
    expect(files.map((f) => f.slice(dir.length + 1))).toEqual(['a.yaml', 'd.json', 'linked/d.json', 'team/b.yml']);
    expect(folders.map((f) => f.path).sort()).toEqual([dir, join(dir, 'linked'), join(dir, 'team'), join(root, 'elsewhere')].sort());
  });

  it('a missing folder lists nothing', async () => {
    expect(await listManifestTree(join(root, 'nope'))).toEqual({ files: [], folders: [] });
  });
});

describe('loadManifestDir (policyguard check)', () => {
  it('reads a ConfigMap volume once, through its symlinks, and a symlinked file from elsewhere', async () => {
    const dir = join(root, 'config');
    await new ConfigMapVolume(join(dir, 'cm')).write({ 'agents.yaml': agent('from-configmap') });
    await mkdir(join(root, 'elsewhere'));
    await writeFile(join(root, 'elsewhere', 'x.yaml'), agent('from-elsewhere'));
    await symlink(join(root, 'elsewhere', 'x.yaml'), join(dir, 'x.yaml'));
    const { agents, errors } = await loadManifestDir(dir);
    expect(errors).toEqual([]);
    expect(agents.map((a) => a.metadata.name).sort()).toEqual(['from-configmap', 'from-elsewhere']);
  });
});
