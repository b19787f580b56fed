/**
 * Which files are manifests, on real folders: symlinks followed, hidden entries skipped, the
 * same listing for the store and for `policyguard check` (loadManifestDir); and what reading
 * one refuses, with the reason.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { listManifestTree, readManifest } from '../../src/store/manifest-tree.js';
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
  it('follows symlinks to files and folders, skips hidden entries and other extensions, survives a symlink loop, lists a dangling symlink named like a manifest', async () => {
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

    const { files, folders, unlisted } = await listManifestTree(dir);
    // The dangling link is listed for readManifest to refuse, and the folder its target would be in is watched.
    expect(files.map((f) => f.slice(dir.length + 1))).toEqual(['a.yaml', 'd.json', 'dangling.yaml', 'linked/d.json', 'team/b.yml']);
    expect(folders.map((f) => f.path).sort()).toEqual([root, dir, join(dir, 'linked'), join(dir, 'team'), join(root, 'elsewhere')].sort());
    expect(unlisted).toEqual([]);
  });

  it('a missing folder lists no file, and is unlisted, never taken as empty', async () => {
    expect(await listManifestTree(join(root, 'nope'))).toEqual({ files: [], folders: [], unlisted: [{ path: join(root, 'nope'), error: 'the folder cannot be listed: no such file or directory (ENOENT)' }] });
  });
});

describe('readManifest', () => {
  const refused = async (name: string, bytes: Buffer | string) => {
    await writeFile(join(root, name), bytes);
    const read = await readManifest(join(root, name));
    return read && 'refused' in read ? { line: read.line, refused: read.refused } : read;
  };

  it('refuses a file that is not UTF-8, on the line of the first byte that is not, and takes a UTF-8 byte order mark', async () => {
    const latin1 = Buffer.from('kind: GuardPolicy\nspec:\n  rules: [{match: {tools: ["suppréssion_*"]}, action: deny}]\n', 'latin1');
    expect(await refused('latin1.yaml', latin1)).toEqual({ line: 3, refused: 'the file is not UTF-8 text: byte 57 (0xE9, column 34) is not UTF-8 (Latin-1?); save it as UTF-8' });
    expect(latin1[57]).toBe(0xe9);
    // A U+FFFD written in the file is UTF-8; only the byte after it is not.
    expect(await refused('replacement.yaml', Buffer.concat([Buffer.from('a: "\uFFFD"\nb: '), Buffer.from([0xff])]))).toEqual({ line: 2, refused: 'the file is not UTF-8 text: byte 12 (0xFF, column 4) is not UTF-8 (Latin-1?); save it as UTF-8' });
    expect(await refused('utf16.yaml', Buffer.from('\uFEFFkind: GuardPolicy\n', 'utf16le'))).toEqual({ line: 1, refused: 'the file is not UTF-8 text: it is UTF-16 (it starts with a UTF-16 byte order mark); save it as UTF-8' });
    expect(await refused('utf16be.yaml', Buffer.from('\uFEFFkind: GuardPolicy\n', 'utf16le').swap16())).toEqual({ line: 1, refused: 'the file is not UTF-8 text: it is UTF-16 (it starts with a UTF-16 byte order mark); save it as UTF-8' });
    expect(await refused('utf16-no-bom.yaml', Buffer.from('kind: GuardPolicy\n', 'utf16le'))).toEqual({ line: 1, refused: 'the file is not UTF-8 text: byte 1 is a NUL (UTF-16?); save it as UTF-8' });
    expect(await refused('bom.yaml', '\uFEFFkind: GuardPolicy\n')).toMatchObject({ text: 'kind: GuardPolicy\n' });
  });

  it('refuses a dangling symlink, naming its target, a FIFO and a symlink loop; a file that is gone is undefined', async () => {
    await symlink(join(root, 'missing.yaml'), join(root, 'dangling.yaml'));
    expect(await readManifest(join(root, 'dangling.yaml'))).toMatchObject({ line: 1, refused: `the file cannot be read: it is a symbolic link to ${join(root, 'missing.yaml')}, which does not exist` });
    execFileSync('mkfifo', [join(root, 'fifo.yaml')]);
    expect(await readManifest(join(root, 'fifo.yaml'))).toMatchObject({ line: 1, refused: 'the file cannot be read: it is a FIFO, not a regular file' });
    await symlink('loop.yaml', join(root, 'loop.yaml'));
    expect(await readManifest(join(root, 'loop.yaml'))).toMatchObject({ line: 1, refused: 'the file cannot be read: too many symbolic links encountered (ELOOP)' });
    expect(await readManifest(join(root, 'missing.yaml'))).toBeUndefined();
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
