import * as fsp from 'node:fs/promises';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  createCheckpoint,
  type CheckpointEntry,
  type CheckpointFs,
} from '../../agent/reconcile/checkpoint.ts';

const entry = (uid: string, cpu = '1'): CheckpointEntry => ({
  uid,
  namespace: 'shop',
  name: `pod-${uid}`,
  allocation: [{ name: 'app', requests: { cpu: '500m' }, limits: { cpu } }],
  phase: 'applied',
  qos: 'Burstable',
  containerIds: { app: `containerd://${'a'.repeat(64)}` },
  updatedAt: '2026-11-22T10:00:00.000Z',
});

describe('checkpoint', () => {
  let dir: string;
  let path: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'resizelet-cp-'));
    path = join(dir, 'sub', 'checkpoint.json');
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('round-trips through an atomic write and a fresh load', async () => {
    const a = createCheckpoint({ fs: fsp as unknown as CheckpointFs, path, node: 'n1' });
    expect(await a.load()).toEqual({});
    a.set(entry('u1'));
    a.set(entry('u2', '2'));
    await a.save();
    const b = createCheckpoint({ fs: fsp as unknown as CheckpointFs, path, node: 'n1' });
    expect(await b.load()).toEqual({});
    expect(b.all().map((e) => e.uid)).toEqual(['u1', 'u2']);
    expect(b.get('u2')?.allocation[0]?.limits.cpu).toBe('2');
    // No temp file is left behind.
    expect((await fsp.readdir(join(dir, 'sub'))).sort()).toEqual(['checkpoint.json']);
  });

  it('writes exactly the JSON of the file object, after replacing and deleting entries between saves', async () => {
    const a = createCheckpoint({ fs: fsp as unknown as CheckpointFs, path, node: 'node "1"' });
    a.set(entry('u1'));
    a.set(entry('u2'));
    await a.save();
    a.set(entry('u1', '3'));
    a.delete('u2');
    a.set(entry('u3', '250m'));
    await a.save();
    const entries = [entry('u1', '3'), entry('u3', '250m')];
    const { createHash } = await import('node:crypto');
    const checksum = createHash('sha256').update(JSON.stringify(entries)).digest('hex');
    expect(await readFile(path, 'utf8')).toBe(
      JSON.stringify({ version: 1, node: 'node "1"', entries, checksum }),
    );
  });

  it("detects a truncated file and a hand edit, and refuses another node's file", async () => {
    const a = createCheckpoint({ fs: fsp as unknown as CheckpointFs, path, node: 'n1' });
    a.set(entry('u1'));
    await a.save();
    const text = await readFile(path, 'utf8');

    await writeFile(path, text.slice(0, text.length / 2));
    const truncated = createCheckpoint({ fs: fsp as unknown as CheckpointFs, path, node: 'n1' });
    expect((await truncated.load()).problem).toMatch(/not valid JSON .*truncated/);
    expect(truncated.all()).toEqual([]);

    await writeFile(path, text.replace('"limits":{"cpu":"1"}', '"limits":{"cpu":"64"}'));
    const edited = createCheckpoint({ fs: fsp as unknown as CheckpointFs, path, node: 'n1' });
    expect((await edited.load()).problem).toMatch(/failed its checksum/);

    await writeFile(path, text);
    const other = createCheckpoint({ fs: fsp as unknown as CheckpointFs, path, node: 'n2' });
    expect((await other.load()).problem).toMatch(/belongs to node "n1"/);
  });

  it('shares one write among saves that arrive before it starts (group commit)', async () => {
    let writes = 0;
    const counting: CheckpointFs = {
      ...(fsp as unknown as CheckpointFs),
      rename: async (from, to) => {
        writes++;
        await fsp.rename(from, to);
      },
    };
    const cp = createCheckpoint({ fs: counting, path, node: 'n1' });
    const saves: Array<Promise<void>> = [];
    for (let i = 0; i < 20; i++) {
      cp.set(entry(`u${i}`));
      saves.push(cp.save());
    }
    await Promise.all(saves);
    expect(writes).toBeLessThanOrEqual(2);
    const fresh = createCheckpoint({ fs: fsp as unknown as CheckpointFs, path, node: 'n1' });
    await fresh.load();
    expect(fresh.all()).toHaveLength(20);
  });

  it('a failed write rejects the save and leaves the previous file intact', async () => {
    const cp = createCheckpoint({ fs: fsp as unknown as CheckpointFs, path, node: 'n1' });
    cp.set(entry('u1'));
    await cp.save();
    const failing: CheckpointFs = {
      ...(fsp as unknown as CheckpointFs),
      rename: async () => {
        throw Object.assign(new Error('EIO: i/o error'), { code: 'EIO' });
      },
    };
    const broken = createCheckpoint({ fs: failing, path, node: 'n1' });
    await broken.load();
    broken.set(entry('u2'));
    await expect(broken.save()).rejects.toThrow(/EIO/);
    const fresh = createCheckpoint({ fs: fsp as unknown as CheckpointFs, path, node: 'n1' });
    expect(await fresh.load()).toEqual({});
    expect(fresh.all().map((e) => e.uid)).toEqual(['u1']);
  });

  it('makes its directory when missing, and again after someone removed it, without a failed save', async () => {
    let mkdirs = 0;
    const counting: CheckpointFs = {
      ...(fsp as unknown as CheckpointFs),
      mkdir: async (p, o) => {
        mkdirs++;
        return fsp.mkdir(p, o);
      },
    };
    const cp = createCheckpoint({ fs: counting, path, node: 'n1' });
    cp.set(entry('u1'));
    await cp.save();
    cp.set(entry('u2'));
    await cp.save();
    expect(mkdirs).toBe(1); // not once per write
    await rm(join(dir, 'sub'), { recursive: true });
    cp.set(entry('u3'));
    await cp.save();
    expect(mkdirs).toBe(2);
    const fresh = createCheckpoint({ fs: fsp as unknown as CheckpointFs, path, node: 'n1' });
    expect(await fresh.load()).toEqual({});
    expect(fresh.all().map((e) => e.uid)).toEqual(['u1', 'u2', 'u3']);
  });
});
