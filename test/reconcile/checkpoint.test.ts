import * as fsp from 'node:fs/promises';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  createCheckpoint,
  type CheckpointEntry,
  type CheckpointFs,
} from '../../agent/reconcile/checkpoint.ts';
import { gatedFsync } from '../support/fsync-gate.ts';

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');
const realFs = fsp as unknown as CheckpointFs;

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
    expect(await b.load()).toEqual({ loadedFrom: 'disk' });
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
    // Five changes: two sets, then a set, a delete and a set.
    // CRC-32 of the generation line and the entries' JSON, as 8 hex digits.
    const checksum = crc32(JSON.stringify(entries), crc32('5\n')).toString(16).padStart(8, '0');
    expect(await readFile(path, 'utf8')).toBe(
      JSON.stringify({ version: 2, node: 'node "1"', generation: 5, entries, checksum }),
    );
  });

  it('loads a version 1 file (no generation), as generation 0, and writes version 2 after', async () => {
    const entries = [entry('u1')];
    await fsp.mkdir(join(dir, 'sub'));
    await writeFile(
      path,
      JSON.stringify({ version: 1, node: 'n1', entries, checksum: sha256(JSON.stringify(entries)) }),
    );
    const cp = createCheckpoint({ fs: fsp as unknown as CheckpointFs, path, node: 'n1' });
    expect(await cp.load()).toEqual({ loadedFrom: 'disk' });
    expect(cp.all()).toEqual(entries);
    cp.set(entry('u2'));
    await cp.save();
    const file = JSON.parse(await readFile(path, 'utf8')) as { version: number; generation: number };
    expect(file.version).toBe(2);
    expect(file.generation).toBeGreaterThan(0);
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
    expect(await fresh.load()).toEqual({ loadedFrom: 'disk' });
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
    expect(await fresh.load()).toEqual({ loadedFrom: 'disk' });
    expect(fresh.all().map((e) => e.uid)).toEqual(['u1', 'u2', 'u3']);
  });
});

// The run copy: what an agent restart loads, written without waiting for the node's disk.
describe('checkpoint with a run copy', () => {
  let dir: string;
  let path: string;
  let runPath: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'resizelet-cp-'));
    path = join(dir, 'disk', 'checkpoint.json');
    runPath = join(dir, 'run', 'checkpoint.json');
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('save() resolves from the run copy while the disk fsync is stuck, and a restarted agent loads it', async () => {
    const gate = gatedFsync((p) => p.startsWith(join(dir, 'disk')));
    gate.close();
    const cp = createCheckpoint({ fs: gate.fs, path, runPath, node: 'n1' });
    cp.set(entry('u1'));
    await cp.save(); // never returns if it waited for the disk
    expect(gate.held).toBeGreaterThan(0);
    let flushed = false;
    const flushing = cp.flush().then(() => (flushed = true));

    // The agent "crashes" here: a new one reads the files the old one left.
    const restarted = createCheckpoint({ fs: realFs, path, runPath, node: 'n1' });
    expect(await restarted.load()).toEqual({ loadedFrom: 'run' });
    expect(restarted.all().map((e) => e.uid)).toEqual(['u1']);
    expect(flushed).toBe(false);

    gate.open();
    await flushing;
    expect(JSON.parse(await readFile(path, 'utf8'))).toMatchObject({ generation: 1 });
    expect(await readFile(path, 'utf8')).toBe(await readFile(runPath, 'utf8'));
  });

  it('after a reboot (no run copy) loads the disk copy, even when it lags', async () => {
    const cp = createCheckpoint({ fs: realFs, path, runPath, node: 'n1' });
    cp.set(entry('u1', '1'));
    await cp.save();
    await cp.flush();
    const diskText = await readFile(path, 'utf8');
    cp.set(entry('u1', '2'));
    await cp.save();
    await cp.flush();
    // A power cut before the second disk write reached the platter: the disk holds the first.
    await writeFile(path, diskText);
    await rm(join(dir, 'run'), { recursive: true });
    const before = Date.now() * 1000; // taken before the load, which reads the clock
    const rebooted = createCheckpoint({ fs: realFs, path, runPath, node: 'n1' });
    expect(await rebooted.load()).toEqual({ loadedFrom: 'disk' });
    expect(rebooted.get('u1')?.allocation[0]?.limits.cpu).toBe('1');
    // It carries on above the generation it loaded, from a microsecond clock: the next write is newer than
    // anything on disk, and than any copy another history left behind.
    rebooted.set(entry('u2'));
    await rebooted.save();
    const written = (JSON.parse(await readFile(runPath, 'utf8')) as { generation: number }).generation;
    expect(written).toBeGreaterThan(before);
  });

  it('the newer copy wins; an unreadable one is passed over and named', async () => {
    const cp = createCheckpoint({ fs: realFs, path, runPath, node: 'n1' });
    cp.set(entry('u1', '1'));
    await cp.save();
    await cp.flush();
    const older = await readFile(runPath, 'utf8');
    cp.set(entry('u1', '2'));
    await cp.save();
    await cp.flush();

    // The run copy is older than the disk (its write failed while the disk's did not).
    await writeFile(runPath, older);
    const a = createCheckpoint({ fs: realFs, path, runPath, node: 'n1' });
    expect(await a.load()).toEqual({
      loadedFrom: 'disk',
      older: ['run copy is older (generation 1, loaded 2)'],
    });
    expect(a.get('u1')?.allocation[0]?.limits.cpu).toBe('2');

    // The run copy is torn: the disk copy is loaded and the reason reported.
    await writeFile(runPath, older.slice(0, 40));
    const b = createCheckpoint({ fs: realFs, path, runPath, node: 'n1' });
    const loaded = await b.load();
    expect(loaded.loadedFrom).toBe('disk');
    expect(loaded.problem).toBeUndefined();
    expect(loaded.unreadable?.[0]).toMatch(/run.*not valid JSON/);

    // Both unusable: a problem naming both.
    await writeFile(path, '{}');
    const c = createCheckpoint({ fs: realFs, path, runPath, node: 'n1' });
    const none = await c.load();
    expect(none.problem).toMatch(/run.*not valid JSON.*disk.*failed its checksum/s);
    expect(c.all()).toEqual([]);
  });

  it('a failed run write leaves save() to the disk; a failed disk write is reported, and flush() rejects', async () => {
    const errors: string[] = [];
    const failingUnder = (prefix: string): CheckpointFs => ({
      ...realFs,
      rename: async (from, to) => {
        if (to.startsWith(prefix))
          throw Object.assign(new Error('ENOSPC: no space left'), { code: 'ENOSPC' });
        await fsp.rename(from, to);
      },
    });
    const onError = (err: unknown, copy: string) => errors.push(`${copy}: ${(err as Error).message}`);

    const noRun = createCheckpoint({
      fs: failingUnder(join(dir, 'run')),
      path,
      runPath,
      node: 'n1',
      onError,
    });
    noRun.set(entry('u1'));
    await noRun.save(); // resolves: the disk copy holds it
    expect(errors).toEqual(['run: ENOSPC: no space left']);
    expect(JSON.parse(await readFile(path, 'utf8'))).toMatchObject({ generation: 1 });

    errors.length = 0;
    const noDisk = createCheckpoint({
      fs: failingUnder(join(dir, 'disk')),
      path,
      runPath,
      node: 'n1',
      onError,
    });
    await noDisk.load();
    noDisk.set(entry('u2'));
    await noDisk.save(); // the run copy holds it
    await expect(noDisk.flush()).rejects.toThrow(/ENOSPC/);
    expect(errors[0]).toBe('disk: ENOSPC: no space left');

    // Both failing: save() rejects, so no Completed is published on the strength of it.
    const neither = createCheckpoint({ fs: failingUnder(dir), path, runPath, node: 'n1', onError });
    neither.set(entry('u3'));
    await expect(neither.save()).rejects.toThrow(/ENOSPC/);
  });

  it('fsyncs the disk copy (file and directory) but not the run copy, which tmpfs would not keep anyway', async () => {
    const synced: string[] = [];
    const watching: CheckpointFs = {
      ...realFs,
      async open(p, flags) {
        const handle = await fsp.open(p, flags);
        return {
          writeFile: (data) => handle.writeFile(data),
          sync: async () => {
            synced.push(p.slice(dir.length + 1));
            await handle.sync();
          },
          close: () => handle.close(),
        };
      },
    };
    const cp = createCheckpoint({ fs: watching, path, runPath, node: 'n1' });
    cp.set(entry('u1'));
    await cp.save();
    await cp.flush();
    expect(synced.sort()).toEqual(['disk', 'disk/.checkpoint.json.tmp']);
    expect(await readFile(runPath, 'utf8')).toBe(await readFile(path, 'utf8'));
  });

  it('flush() after a clean write does not write again', async () => {
    let renames = 0;
    const counting: CheckpointFs = {
      ...realFs,
      rename: async (from, to) => {
        renames++;
        await fsp.rename(from, to);
      },
    };
    const cp = createCheckpoint({ fs: counting, path, runPath, node: 'n1' });
    cp.set(entry('u1'));
    await cp.save();
    await cp.flush();
    const after = renames;
    await cp.flush();
    expect(renames).toBe(after);
    expect(after).toBe(2); // one run write, one disk write
  });

  it('a version 1 disk copy (an agent without a run copy wrote it since: a rollback) wins over a run copy', async () => {
    const cp = createCheckpoint({ fs: realFs, path, runPath, node: 'n1' });
    cp.set(entry('u1', '5'));
    await cp.save();
    await cp.flush();
    const entries = [entry('u1', '2')];
    await writeFile(
      path,
      JSON.stringify({ version: 1, node: 'n1', entries, checksum: sha256(JSON.stringify(entries)) }),
    );
    const upgraded = createCheckpoint({ fs: realFs, path, runPath, node: 'n1' });
    const loaded = await upgraded.load();
    expect(loaded.loadedFrom).toBe('disk');
    expect(loaded.older?.[0]).toMatch(/run copy predates the version 1 disk copy/);
    expect(upgraded.get('u1')?.allocation[0]?.limits.cpu).toBe('2');
  });

  it('answers saves in call order, even when an earlier one fell back to a slow disk', async () => {
    // The first run write fails, so the first save waits for the disk, whose fsync is held; the second
    // save's run write succeeds at once, but it must not resolve before the first.
    let failRun = true;
    const gate = gatedFsync((p) => p.startsWith(join(dir, 'disk')));
    gate.close();
    const flaky: CheckpointFs = {
      ...gate.fs,
      rename: async (from, to) => {
        if (to === runPath && failRun) {
          failRun = false;
          throw Object.assign(new Error('ENOSPC: no space left'), { code: 'ENOSPC' });
        }
        await fsp.rename(from, to);
      },
    };
    const cp = createCheckpoint({ fs: flaky, path, runPath, node: 'n1' });
    const order: string[] = [];
    cp.set(entry('u1', '1'));
    const first = cp.save().then(() => order.push('first'));
    await new Promise((r) => setTimeout(r, 50)); // the first run write has failed by now
    cp.set(entry('u1', '2'));
    const second = cp.save().then(() => order.push('second'));
    await new Promise((r) => setTimeout(r, 100));
    expect(order).toEqual([]); // the second is held behind the first, which waits for the disk
    expect(JSON.parse(await readFile(runPath, 'utf8'))).toMatchObject({ entries: [{ uid: 'u1' }] });
    gate.open();
    await Promise.all([first, second]);
    expect(order).toEqual(['first', 'second']);
  });
});
