import { Volume } from 'memfs';
import { describe, expect, it } from 'vitest';
import { V1_MEMORY_UNLIMITED } from '../../cgroup/convert.ts';
import { executePlan, writeErrorCodeFromErrno } from '../../cgroup/executor.ts';
import {
  WriteErrorCodes,
  type CgroupFs,
  type CgroupLayout,
  type CgroupWrite,
  type Plan,
} from '../../cgroup/types.ts';
import { memCgroupFs } from '../support/cgroup-tree.ts';

const CPU = '/sys/fs/cgroup/cpu';
const MEM = '/sys/fs/cgroup/memory';
const POD = 'kubepods/burstable/pod1';
const APP = `${POD}/c1`;

const layout: Pick<CgroupLayout, 'controllers'> = {
  controllers: {
    cpu: { version: 'v1', mount: CPU },
    cpuacct: { version: 'v1', mount: '/sys/fs/cgroup/cpuacct' },
    memory: { version: 'v1', mount: MEM },
  },
};

/** A v1 pod with one container, as the kubelet leaves it: 500m limit, 128 MiB. */
function tree(): Volume {
  return Volume.fromJSON({
    [`${CPU}/${POD}/cpu.cfs_quota_us`]: '50000\n',
    [`${CPU}/${POD}/cpu.shares`]: '256\n',
    [`${CPU}/${APP}/cpu.cfs_quota_us`]: '50000\n',
    [`${CPU}/${APP}/cpu.shares`]: '256\n',
    [`${MEM}/${POD}/memory.limit_in_bytes`]: '134217728\n',
    [`${MEM}/${APP}/memory.limit_in_bytes`]: '134217728\n',
    [`${MEM}/${APP}/memory.memsw.limit_in_bytes`]: '134217728\n',
    '/etc/passwd': 'root:x:0:0\n',
  });
}

interface Recorder {
  fs: CgroupFs;
  /** Every write attempted, in order, as `path=value` relative to /sys/fs/cgroup. */
  writes: string[];
  read(path: string): string;
}

/**
 * The shared kernel-like memfs port (page floor, -1 -> the page-max, v1 EINVAL rules), recording every write
 * attempt, with hooks to fail a write or store something else.
 */
function kernelFs(
  vol: Volume,
  hooks: {
    failWrite?: (path: string, data: string) => string | undefined;
    storeInstead?: (path: string, data: string) => string | undefined;
  } = {},
): Recorder {
  const inner = memCgroupFs(vol);
  const writes: string[] = [];
  const fs: CgroupFs = {
    ...inner,
    async writeFile(path, data) {
      writes.push(`${path.replace('/sys/fs/cgroup/', '')}=${data}`);
      const errno = hooks.failWrite?.(path, data);
      if (errno) throw Object.assign(new Error(`${errno}: write ${path}`), { code: errno });
      await inner.writeFile(path, hooks.storeInstead?.(path, data) ?? data);
    },
  };
  return { fs, writes, read: (path) => String(vol.readFileSync(path, 'utf8')).trim() };
}

function w(
  path: string,
  controller: 'cpu' | 'memory',
  file: string,
  value: string,
  previous: string,
): CgroupWrite {
  return {
    level: path === POD ? 'pod' : 'container',
    path,
    controller,
    file,
    value,
    previous,
    reason: 'test',
  };
}

const plan = (...writes: CgroupWrite[]): Plan => ({ ok: true, writes });

/** Grow the container to 1 CPU and 256 MiB, in the planner's order. */
const grow = plan(
  w(POD, 'memory', 'memory.limit_in_bytes', '268435456', '134217728'),
  w(APP, 'memory', 'memory.memsw.limit_in_bytes', '268435456', '134217728'),
  w(APP, 'memory', 'memory.limit_in_bytes', '268435456', '134217728'),
  w(POD, 'cpu', 'cpu.cfs_quota_us', '100000', '50000'),
  w(APP, 'cpu', 'cpu.cfs_quota_us', '100000', '50000'),
);

describe('executePlan', () => {
  it('writes every differing value, reads it back and reports each write', async () => {
    const vol = tree();
    const k = kernelFs(vol);
    const res = await executePlan({ fs: k.fs, layout, plan: grow });
    expect(res.ok).toBe(true);
    expect(res.results.map((r) => r.status)).toEqual(['written', 'written', 'written', 'written', 'written']);
    expect(k.read(`${MEM}/${APP}/memory.limit_in_bytes`)).toBe('268435456');
    expect(k.read(`${CPU}/${APP}/cpu.cfs_quota_us`)).toBe('100000');
  });

  it('skips a value the file already holds, without writing it', async () => {
    const vol = tree();
    vol.writeFileSync(`${CPU}/${POD}/cpu.cfs_quota_us`, '100000\n'); // someone got there first
    const k = kernelFs(vol);
    const res = await executePlan({ fs: k.fs, layout, plan: grow });
    expect(res.results.map((r) => r.status)).toEqual([
      'written',
      'written',
      'written',
      'unchanged',
      'written',
    ]);
    expect(k.writes.some((x) => x.startsWith(`cpu/${POD}/cpu.cfs_quota_us`))).toBe(false);
  });

  it("accepts the kernel's page rounding and the v1 unlimited page-max on read-back, nothing else", async () => {
    const k = kernelFs(tree());
    const res = await executePlan({
      fs: k.fs,
      layout,
      plan: plan(
        w(POD, 'memory', 'memory.limit_in_bytes', '-1', '134217728'),
        w(APP, 'memory', 'memory.memsw.limit_in_bytes', '200000000', '134217728'),
        w(APP, 'memory', 'memory.limit_in_bytes', '200000000', '134217728'),
      ),
    });
    expect(res.ok).toBe(true);
    expect(k.read(`${MEM}/${POD}/memory.limit_in_bytes`)).toBe(String(V1_MEMORY_UNLIMITED));
    expect(k.read(`${MEM}/${APP}/memory.limit_in_bytes`)).toBe('199999488');
  });

  it('detects a read-back mismatch, stops, and restores everything it wrote in reverse order', async () => {
    const vol = tree();
    // A kernel (or a racing kubelet) that keeps another quota than the one written.
    const k = kernelFs(vol, {
      storeInstead: (path, data) =>
        path.endsWith(`${POD}/cpu.cfs_quota_us`) && data === '100000' ? '90000' : undefined,
    });
    const res = await executePlan({ fs: k.fs, layout, plan: grow });
    expect(res.ok).toBe(false);
    expect(res.error).toMatchObject({ code: WriteErrorCodes.READBACK_MISMATCH, write: grow.writes[3] });
    expect(res.results.map((r) => r.status)).toEqual([
      'restored',
      'restored',
      'restored',
      'failed',
      'skipped',
    ]);
    expect(k.writes).toEqual([
      `memory/${POD}/memory.limit_in_bytes=268435456`,
      `memory/${APP}/memory.memsw.limit_in_bytes=268435456`,
      `memory/${APP}/memory.limit_in_bytes=268435456`,
      `cpu/${POD}/cpu.cfs_quota_us=100000`,
      // undo, newest first: the mismatched file too, since it was changed
      `cpu/${POD}/cpu.cfs_quota_us=50000`,
      `memory/${APP}/memory.limit_in_bytes=134217728`,
      `memory/${APP}/memory.memsw.limit_in_bytes=134217728`,
      `memory/${POD}/memory.limit_in_bytes=134217728`,
    ]);
    expect(k.read(`${CPU}/${POD}/cpu.cfs_quota_us`)).toBe('50000');
    expect(k.read(`${MEM}/${APP}/memory.memsw.limit_in_bytes`)).toBe('134217728');
  });

  it.each([
    ['EINVAL', WriteErrorCodes.INVALID],
    ['EBUSY', WriteErrorCodes.BUSY],
    ['EACCES', WriteErrorCodes.PERMISSION],
    ['EPERM', WriteErrorCodes.PERMISSION],
    ['ENOENT', WriteErrorCodes.CGROUP_MISSING],
    ['EIO', WriteErrorCodes.IO],
  ])('a write failing with %s stops the plan as %s and restores the earlier writes', async (errno, code) => {
    const vol = tree();
    const k = kernelFs(vol, {
      failWrite: (path) => (path === `${MEM}/${APP}/memory.limit_in_bytes` ? errno : undefined),
    });
    const res = await executePlan({ fs: k.fs, layout, plan: grow });
    expect(res.ok).toBe(false);
    expect(res.error?.code).toBe(code);
    expect(res.results.map((r) => r.status)).toEqual([
      'restored',
      'restored',
      'failed',
      'skipped',
      'skipped',
    ]);
    expect(res.results[2]?.error?.code).toBe(code);
    // The refused write is not undone (the kernel applied nothing); the two before it are, newest first.
    expect(k.writes.slice(3)).toEqual([
      `memory/${APP}/memory.memsw.limit_in_bytes=134217728`,
      `memory/${POD}/memory.limit_in_bytes=134217728`,
    ]);
    expect(k.read(`${MEM}/${POD}/memory.limit_in_bytes`)).toBe('134217728');
    expect(k.read(`${CPU}/${APP}/cpu.cfs_quota_us`)).toBe('50000');
  });

  it('reports a restore that fails as restore-failed, and keeps the first error', async () => {
    let podWrites = 0;
    const k = kernelFs(tree(), {
      failWrite: (path) => {
        if (path === `${MEM}/${POD}/memory.limit_in_bytes` && ++podWrites === 2) return 'EBUSY';
        return path === `${MEM}/${APP}/memory.limit_in_bytes` ? 'EINVAL' : undefined;
      },
    });
    const res = await executePlan({ fs: k.fs, layout, plan: grow });
    expect(res.error?.code).toBe(WriteErrorCodes.INVALID);
    expect(res.results.map((r) => r.status)).toEqual([
      'restore-failed',
      'restored',
      'failed',
      'skipped',
      'skipped',
    ]);
    expect(res.results[0]?.error?.code).toBe(WriteErrorCodes.BUSY);
  });

  it('refuses a symlink planted to leave the mount, with nothing written', async () => {
    const vol = tree();
    vol.mkdirSync('/etc/evil', { recursive: true });
    vol.writeFileSync('/etc/evil/cpu.cfs_quota_us', '-1\n');
    vol.symlinkSync('/etc/evil', `${CPU}/${POD}/c2`);
    const k = kernelFs(vol);
    const res = await executePlan({
      fs: k.fs,
      layout,
      plan: plan(grow.writes[0]!, w(`${POD}/c2`, 'cpu', 'cpu.cfs_quota_us', '100000', '-1')),
    });
    expect(res.error?.code).toBe(WriteErrorCodes.PATH_UNSAFE);
    expect(res.error?.message).toMatch(/resolves to "\/etc\/evil"/);
    expect(res.results.map((r) => r.status)).toEqual(['skipped', 'failed']);
    expect(k.writes).toEqual([]);
    expect(k.read('/etc/evil/cpu.cfs_quota_us')).toBe('-1');
  });

  it.each([
    ['a path with ..', w(`${POD}/../../../../../etc`, 'cpu', 'cpu.shares', '2', '256')],
    ['an absolute path', w('/etc', 'cpu', 'cpu.shares', '2', '256')],
    ['the mount root itself', w('', 'cpu', 'cpu.shares', '2', '1024')],
    ['a file resizelet never writes', w(APP, 'cpu', 'cgroup.procs', '1', '')],
    ['release_agent', w('.', 'memory', 'release_agent', '/tmp/x', '')],
    ['a read-only file', w(APP, 'cpu', 'cpu.cfs_period_us', '1000', '100000')],
  ])('refuses %s, with nothing written', async (_, bad) => {
    const k = kernelFs(tree());
    const res = await executePlan({ fs: k.fs, layout, plan: plan(grow.writes[0]!, bad) });
    expect(res.error?.code).toBe(WriteErrorCodes.PATH_UNSAFE);
    expect(k.writes).toEqual([]);
  });

  it('reports a cgroup that disappeared as CGROUP_MISSING before writing anything', async () => {
    const k = kernelFs(tree());
    const gone = w(`${POD}/c9`, 'cpu', 'cpu.cfs_quota_us', '100000', '50000');
    const res = await executePlan({ fs: k.fs, layout, plan: plan(grow.writes[0]!, gone) });
    expect(res.error?.code).toBe(WriteErrorCodes.CGROUP_MISSING);
    expect(k.writes).toEqual([]);
  });

  it('maps errno names to stable codes', () => {
    expect(writeErrorCodeFromErrno('EROFS')).toBe(WriteErrorCodes.PERMISSION);
    expect(writeErrorCodeFromErrno(undefined)).toBe(WriteErrorCodes.IO);
  });
});
