// The scrape-time reader: cAdvisor's numbers from v1 and v2 files, descriptors kept between scrapes and
// closed when their cgroup goes, and "gone" told apart from "broken".
import type { Volume } from 'memfs';
import { describe, expect, test } from 'vitest';
import { createStatsReader, StatsErrorCodes, type SyncFs } from '../../agent/cgroup-stats.ts';
import type { CgroupLayout } from '../../cgroup/types.ts';
import { buildNodeTree, CGROUP_ROOT } from '../support/cgroup-tree.ts';
import { memSyncFs } from './helpers.ts';

const Mi = 1024n * 1024n;
const ID = 'a'.repeat(64);
const UID = '11111111-2222-3333-4444-555555555555';

function v1Tree() {
  return buildNodeTree({
    version: 'v1',
    driver: 'cgroupfs',
    runtime: 'containerd',
    pods: [
      {
        uid: UID,
        qos: 'Burstable',
        containers: [
          {
            id: ID,
            name: 'app',
            cpuRequestMilli: 250,
            cpuLimitMilli: 500,
            memoryRequestBytes: 64n * Mi,
            memoryLimitBytes: 128n * Mi,
            usage: {
              cpuUsageNs: 7_500_000_000n,
              nrPeriods: 150,
              nrThrottled: 40,
              throttledNs: 2_000_000_000n,
              memoryUsageBytes: 50n * Mi,
              inactiveFileBytes: 10n * Mi,
              rssBytes: 30n * Mi,
              oomKills: 2,
            },
          },
        ],
      },
    ],
  });
}

/** memfs does not model kernfs removal (a kept descriptor of a removed cgroup fails with ENODEV): this does. */
function withKernfsRemoval(vol: Volume): SyncFs & { opened: number } {
  const inner = memSyncFs(vol);
  const pathOf = new Map<number, string>();
  const fs = {
    opened: 0,
    openSync(path: string, flags: 'r') {
      const fd = inner.openSync(path, flags);
      pathOf.set(fd, path);
      fs.opened++;
      return fd;
    },
    readSync(fd: number, buffer: Uint8Array, offset: number, length: number, position: number) {
      if (!vol.existsSync(pathOf.get(fd)!)) {
        throw Object.assign(new Error('ENODEV: no such device, read'), { code: 'ENODEV' });
      }
      return inner.readSync(fd, buffer, offset, length, position);
    },
    closeSync: (fd: number) => inner.closeSync(fd),
    readdirSync: inner.readdirSync,
    existsSync: inner.existsSync,
  };
  return fs;
}

describe('reading one cgroup', () => {
  test('v1: the values cAdvisor reports, in kernel units', () => {
    const tree = v1Tree();
    const reader = createStatsReader({ fs: memSyncFs(tree.vol), layout: tree.layout });
    const c = reader.read(tree.pods[0]!.containers[0]!.path)!;
    expect(c).toEqual({
      cpuUsageNs: 7_500_000_000,
      cpuQuotaUs: 50_000,
      cpuPeriodUs: 100_000,
      cpuShares: 256,
      cfs: { periods: 150, throttledPeriods: 40, throttledNs: 2_000_000_000 },
      memoryUsageBytes: Number(50n * Mi),
      workingSetBytes: Number(40n * Mi),
      inactiveFileBytes: Number(10n * Mi),
      rssBytes: Number(30n * Mi),
      memoryLimitBytes: Number(128n * Mi),
      oomKills: 2,
    });
    // The sandbox: no quota (-1) so no CFS statistics, unlimited memory (the page-aligned LONG_MAX).
    const sandbox = reader.read(tree.pods[0]!.sandboxPath)!;
    expect(sandbox).toMatchObject({ cpuQuotaUs: null, cfs: null, memoryLimitBytes: null, cpuShares: 2 });
  });

  test("v2: cpu.max, cpu.weight in v1 shares by cAdvisor's formula, memory.current/stat/events", () => {
    const tree = buildNodeTree({
      version: 'v2',
      driver: 'systemd',
      runtime: 'containerd',
      pods: [
        {
          uid: UID,
          qos: 'Guaranteed',
          containers: [
            {
              id: ID,
              cpuRequestMilli: 1000,
              cpuLimitMilli: 1000,
              memoryRequestBytes: 256n * Mi,
              memoryLimitBytes: 256n * Mi,
              usage: {
                cpuUsageNs: 3_000_000_000n,
                memoryUsageBytes: 20n * Mi,
                rssBytes: 12n * Mi,
                oomKills: 1,
              },
            },
          ],
        },
      ],
    });
    const reader = createStatsReader({ fs: memSyncFs(tree.vol), layout: tree.layout });
    const c = reader.read(tree.pods[0]!.containers[0]!.path)!;
    // weight 39 (1024 shares by the linear map) -> 2 + 38*262142/9999 = 998 shares, as cAdvisor shows it.
    expect(c).toMatchObject({
      cpuUsageNs: 3_000_000_000,
      cpuQuotaUs: 100_000,
      cpuPeriodUs: 100_000,
      cpuShares: 998,
      memoryUsageBytes: Number(20n * Mi),
      rssBytes: Number(12n * Mi),
      memoryLimitBytes: Number(256n * Mi),
      oomKills: 1,
    });
    expect(c.cfs).toEqual({ periods: 0, throttledPeriods: 0, throttledNs: 0 });
  });

  test('a cgroup that does not exist reads as null, not as an error', () => {
    const tree = v1Tree();
    const reader = createStatsReader({ fs: memSyncFs(tree.vol), layout: tree.layout });
    expect(reader.read(`${tree.pods[0]!.path}/${'b'.repeat(64)}`)).toBeNull();
    expect(reader.children(`${tree.pods[0]!.path}/nope`)).toBeNull();
  });

  test('an unreadable or unparseable file is a StatsError with a stable code and the path', () => {
    const tree = v1Tree();
    const path = tree.pods[0]!.containers[0]!.path;
    tree.vol.writeFileSync(`${CGROUP_ROOT}/cpu/${path}/cpu.shares`, 'lots\n');
    const reader = createStatsReader({ fs: memSyncFs(tree.vol), layout: tree.layout });
    expect(() => reader.read(path)).toThrow(expect.objectContaining({ code: StatsErrorCodes.PARSE }));
    const denied: SyncFs = {
      ...memSyncFs(tree.vol),
      openSync: () => {
        throw Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' });
      },
    };
    expect(() => createStatsReader({ fs: denied, layout: tree.layout }).read(path)).toThrow(
      expect.objectContaining({
        code: StatsErrorCodes.PERMISSION,
        path: `${CGROUP_ROOT}/cpu/${path}/cpu.cfs_quota_us`,
      }),
    );
  });
});

describe('descriptors kept between scrapes', () => {
  test('a kept descriptor reads the live value: a resize shows on the next read, without reopening', () => {
    const tree = v1Tree();
    const fs = withKernfsRemoval(tree.vol);
    const reader = createStatsReader({ fs, layout: tree.layout });
    const path = tree.pods[0]!.containers[0]!.path;
    expect(reader.read(path)!.cpuQuotaUs).toBe(50_000);
    const opened = fs.opened;
    tree.vol.writeFileSync(`${CGROUP_ROOT}/cpu/${path}/cpu.cfs_quota_us`, '100000\n');
    expect(reader.read(path)!.cpuQuotaUs).toBe(100_000);
    expect(fs.opened).toBe(opened);
    expect(reader.openFiles).toBe(9);
  });

  test('sweep closes the descriptors of cgroups not read since the last sweep', () => {
    const tree = v1Tree();
    const reader = createStatsReader({ fs: memSyncFs(tree.vol), layout: tree.layout });
    const pod = tree.pods[0]!;
    reader.read(pod.path);
    reader.read(pod.sandboxPath);
    reader.sweep();
    expect(reader.openFiles).toBe(17); // the sandbox has no quota: no cpu.stat
    reader.read(pod.path);
    reader.sweep();
    expect(reader.openFiles).toBe(9);
    reader.close();
    expect(reader.openFiles).toBe(0);
  });

  test('a removed cgroup (ENODEV on a kept descriptor) reads as null and its descriptors are dropped', () => {
    const tree = v1Tree();
    const fs = withKernfsRemoval(tree.vol);
    const reader = createStatsReader({ fs, layout: tree.layout });
    const path = tree.pods[0]!.containers[0]!.path;
    reader.read(path);
    reader.sweep(); // end of a scrape
    for (const c of ['cpu', 'cpuacct', 'memory'])
      tree.vol.rmSync(`${CGROUP_ROOT}/${c}/${path}`, { recursive: true });
    expect(reader.read(path)).toBeNull();
    expect(reader.openFiles).toBe(0);
  });

  test('past maxOpenFiles files are opened per read, and read correctly', () => {
    const tree = v1Tree();
    const fs = withKernfsRemoval(tree.vol);
    const reader = createStatsReader({ fs, layout: tree.layout, maxOpenFiles: 4 });
    const path = tree.pods[0]!.containers[0]!.path;
    const first = reader.read(path);
    const opened = fs.opened;
    expect(reader.read(path)).toEqual(first);
    expect(reader.openFiles).toBe(4);
    expect(fs.opened - opened).toBe(5);
  });

  test('exists() checks every hierarchy the layout uses', () => {
    const tree = v1Tree();
    const layout: CgroupLayout = tree.layout;
    const reader = createStatsReader({ fs: memSyncFs(tree.vol), layout });
    expect(reader.exists(layout.podsRoot)).toBe(true);
    tree.vol.rmSync(`${CGROUP_ROOT}/memory/${layout.podsRoot}`, { recursive: true });
    expect(reader.exists(layout.podsRoot)).toBe(false);
  });
});
