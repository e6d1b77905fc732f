import { describe, expect, it } from 'vitest';
import {
  quotaFromMillicores,
  sharesFromMillicores,
  sharesFromWeight,
  V1_MEMORY_UNLIMITED,
  weightFromShares,
} from '../../cgroup/convert.ts';
import {
  classifyChildDir,
  containerCgroupPath,
  parseContainerId,
  PathError,
  podCgroupPath,
} from '../../cgroup/paths.ts';
import {
  listChildren,
  listProcs,
  readCgroup,
  ReadError,
  readSettings,
  readUsage,
} from '../../cgroup/reader.ts';
import { CgroupParseError } from '../../cgroup/resources.ts';
import type { CgroupLayout, ContainerRuntime, QosClass, WeightFormula } from '../../cgroup/types.ts';
import { CgroupDrivers, CgroupVersions, ContainerRuntimes, QosClasses } from '../../cgroup/types.ts';
import type { TreeContainerSpec } from '../support/cgroup-tree.ts';
import { buildNodeTree } from '../support/cgroup-tree.ts';

const UID = '8632edec-0f0e-411c-8920-a5e25f96020d';
const ID_A = 'b5e6703d62095484165930a4d6e60514ed70b5c2aca88589e9e5238177c03292';
const ID_B = 'f4b73b88d76d0619a2cdca6ff12ff216597816e4ee922f6fc5f285b927585a7b';
const Mi = 1024n * 1024n;

/** Two containers per pod, shaped by the QoS class the pod must have. */
const containersFor: Record<QosClass, TreeContainerSpec[]> = {
  Guaranteed: [
    {
      id: ID_A,
      name: 'app',
      cpuRequestMilli: 500,
      cpuLimitMilli: 500,
      memoryRequestBytes: 256n * Mi,
      memoryLimitBytes: 256n * Mi,
    },
    {
      id: ID_B,
      name: 'side',
      cpuRequestMilli: 100,
      cpuLimitMilli: 100,
      memoryRequestBytes: 32n * Mi,
      memoryLimitBytes: 32n * Mi,
    },
  ],
  Burstable: [
    {
      id: ID_A,
      name: 'app',
      cpuRequestMilli: 250,
      cpuLimitMilli: 500,
      memoryRequestBytes: 64n * Mi,
      memoryLimitBytes: 128n * Mi,
    },
    // requests only: the pod as a whole gets no quota and no memory limit
    { id: ID_B, name: 'side', cpuRequestMilli: 50, memoryRequestBytes: 16n * Mi },
  ],
  BestEffort: [
    { id: ID_A, name: 'app' },
    { id: ID_B, name: 'side' },
  ],
};

const usageA = {
  cpuUsageNs: 8_363_052_061n,
  nrPeriods: 167,
  nrThrottled: 166,
  throttledNs: 8_205_021_952n,
  memoryUsageBytes: 385_024n,
  inactiveFileBytes: 40_960n,
  rssBytes: 61_440n,
  oomKills: 2,
};

const cases = CgroupVersions.flatMap((version) =>
  CgroupDrivers.flatMap((driver) =>
    ContainerRuntimes.flatMap((runtime) => QosClasses.map((qos) => ({ version, driver, runtime, qos }))),
  ),
);

describe.each(cases)('$version + $driver + $runtime, a $qos pod', ({ version, driver, runtime, qos }) => {
  const formula: WeightFormula = 'quadratic';
  const spec = containersFor[qos].map((c, i) => (i === 0 ? { ...c, usage: usageA } : c));
  const tree = buildNodeTree({
    version,
    driver,
    runtime,
    weightFormula: formula,
    podsRoot: driver === 'systemd' ? 'resizelet-test-xyz/kubepods.slice' : 'resizelet-test-xyz/kubepods',
    pods: [{ uid: UID, qos, name: 'p', containers: spec }],
  });
  const { fs, layout } = tree;
  const built = tree.pods[0]!;
  const podPath = podCgroupPath(layout, { uid: UID, qos });

  it('finds the pod and container cgroups where the builder put them', () => {
    expect(podPath).toBe(built.path);
    for (const c of built.containers) {
      expect(containerCgroupPath(layout, podPath, parseContainerId(c.containerID))).toBe(c.path);
    }
  });

  it('reads each container back as the kubelet and runc set it', async () => {
    for (const [i, c] of spec.entries()) {
      const s = await readSettings(fs, layout, built.containers[i]!.path);
      const shares = sharesFromMillicores(c.cpuRequestMilli ?? null);
      expect(s.cpuQuotaUs).toBe(quotaFromMillicores(c.cpuLimitMilli ?? null));
      expect(s.cpuPeriodUs).toBe(100_000);
      expect(s.memoryLimitBytes).toBe(c.memoryLimitBytes ?? null);
      if (version === 'v1') {
        expect(s.cpuShares).toBe(shares);
        expect(s.memswLimitBytes).toBe(c.memoryLimitBytes ?? null);
        expect(s.cpuWeight).toBeUndefined();
      } else {
        expect(s.cpuWeight).toBe(weightFromShares(shares, formula));
        expect(s.cpuShares).toBe(sharesFromWeight(weightFromShares(shares, formula), formula));
        expect(s.memswLimitBytes).toBeUndefined();
      }
    }
  });

  it("reads the pod level as the kubelet's sums", async () => {
    const s = await readSettings(fs, layout, podPath);
    const cs = containersFor[qos];
    const sumCpu = cs.reduce((a, c) => a + (c.cpuRequestMilli ?? 0), 0);
    const limited = qos === 'Guaranteed';
    expect(s.cpuQuotaUs).toBe(
      limited ? quotaFromMillicores(cs.reduce((a, c) => a + (c.cpuLimitMilli ?? 0), 0)) : null,
    );
    expect(s.memoryLimitBytes).toBe(limited ? cs.reduce((a, c) => a + (c.memoryLimitBytes ?? 0n), 0n) : null);
    if (version === 'v1') expect(s.cpuShares).toBe(sharesFromMillicores(sumCpu));
    else expect(s.cpuWeight).toBe(weightFromShares(sharesFromMillicores(sumCpu), formula));
  });

  it('reads usage, working set, RSS, throttling and OOM kills', async () => {
    const u = await readUsage(fs, layout, built.containers[0]!.path);
    expect(u).toEqual({
      cpuUsageNs: version === 'v1' ? usageA.cpuUsageNs : (usageA.cpuUsageNs / 1000n) * 1000n, // v2 counts usec
      nrPeriods: 167,
      nrThrottled: 166,
      throttledNs: version === 'v1' ? usageA.throttledNs : (usageA.throttledNs / 1000n) * 1000n,
      memoryUsageBytes: 385_024n,
      workingSetBytes: 385_024n - 40_960n,
      rssBytes: 61_440n,
      oomKills: 2,
    });
    // Memory and CPU time are hierarchical: the pod level includes the container.
    const pod = await readUsage(fs, layout, podPath);
    expect(pod.memoryUsageBytes).toBe(385_024n);
    expect(pod.cpuUsageNs).toBe(u.cpuUsageNs);
    expect(pod.nrThrottled).toBe(0);
  });

  it('lists the containers, the sandbox and (CRI-O) conmon as children, each classified', async () => {
    const children = await listChildren(fs, layout, podPath);
    const kinds = children.map((n) => classifyChildDir(driver, n));
    expect(kinds.every((k) => k !== null)).toBe(true);
    const ids = new Set(built.containers.map((c) => c.id));
    const containers = kinds.filter((k) => k?.kind === 'container' && ids.has(k.id));
    const conmons = kinds.filter((k) => k?.kind === 'conmon');
    const sandboxes = kinds.filter((k) => k !== null && k.kind !== 'conmon' && !ids.has(k.id));
    expect(containers).toHaveLength(2);
    expect(conmons).toHaveLength(runtime === 'crio' ? 2 : 0);
    expect(sandboxes.map((k) => k?.id)).toEqual([built.sandboxId]);
    expect(`${podPath}/${sandboxes[0]?.name}`).toBe(built.sandboxPath);
  });

  it("lists the container's processes", async () => {
    expect(await listProcs(fs, layout, built.containers[0]!.path)).toHaveLength(1);
    expect(await listProcs(fs, layout, podPath)).toEqual([]);
  });
});

describe('readCgroup', () => {
  const make = (runtime: ContainerRuntime = 'containerd') =>
    buildNodeTree({
      version: 'v2',
      driver: 'systemd',
      runtime,
      pods: [
        { uid: UID, qos: 'Burstable', containers: [{ id: ID_A, cpuRequestMilli: 250, cpuLimitMilli: 500 }] },
      ],
    });

  it('returns settings and usage together', async () => {
    const t = make();
    const r = await readCgroup(t.fs, t.layout, t.pods[0]!.containers[0]!.path);
    expect(r.path).toBe(t.pods[0]!.containers[0]!.path);
    expect(r.settings).toMatchObject({ cpuQuotaUs: 50_000, cpuWeight: 10, memoryLimitBytes: null });
    expect(r.usage.cpuUsageNs).toBe(0n);
  });

  it('reports a missing cgroup with RESIZELET_ERR_CGROUP_MISSING', async () => {
    const t = make();
    const gone = containerCgroupPath(t.layout, t.pods[0]!.path, { id: ID_B });
    const err = await readCgroup(t.fs, t.layout, gone).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ReadError);
    expect(err).toMatchObject({ code: 'RESIZELET_ERR_CGROUP_MISSING' });
    await expect(listProcs(t.fs, t.layout, gone)).rejects.toMatchObject({
      code: 'RESIZELET_ERR_CGROUP_MISSING',
    });
    await expect(listChildren(t.fs, t.layout, gone)).rejects.toMatchObject({
      code: 'RESIZELET_ERR_CGROUP_MISSING',
    });
  });

  it("explains a v2 file missing from an existing cgroup (controller not enabled in the parent's subtree_control)", async () => {
    const t = make();
    const path = t.pods[0]!.containers[0]!.path;
    t.vol.unlinkSync(`/sys/fs/cgroup/${path}/cpu.max`);
    await expect(readSettings(t.fs, t.layout, path)).rejects.toThrow(
      /"cpu" in its parent's cgroup.subtree_control/,
    );
  });

  it('throws CgroupParseError for a file the kernel would never write', async () => {
    const t = make();
    const path = t.pods[0]!.containers[0]!.path;
    t.vol.writeFileSync(`/sys/fs/cgroup/${path}/cpu.max`, '50000\n');
    await expect(readSettings(t.fs, t.layout, path)).rejects.toThrow(CgroupParseError);
    t.vol.writeFileSync(`/sys/fs/cgroup/${path}/cgroup.procs`, '12\nabc\n');
    await expect(listProcs(t.fs, t.layout, path)).rejects.toThrow(CgroupParseError);
  });

  it('refuses to read through a symlink planted in the tree', async () => {
    const t = make();
    const path = t.pods[0]!.containers[0]!.path;
    t.vol.mkdirSync('/tmp/fake', { recursive: true });
    t.vol.writeFileSync('/tmp/fake/cpu.max', 'max 100000\n');
    t.vol.rmSync(`/sys/fs/cgroup/${path}`, { recursive: true });
    t.vol.symlinkSync('/tmp/fake', `/sys/fs/cgroup/${path}`);
    await expect(readCgroup(t.fs, t.layout, path)).rejects.toThrow(PathError);
    // ... and listChildren does not report the symlink as a child cgroup.
    expect(await listChildren(t.fs, t.layout, t.pods[0]!.path)).not.toContain(path.split('/').pop());
  });
});

describe('v1 specifics', () => {
  const v1 = (extra: { swapAccounting?: boolean; v1Mounts?: 'separate' | 'comounted' } = {}) =>
    buildNodeTree({
      version: 'v1',
      driver: 'cgroupfs',
      runtime: 'containerd',
      ...extra,
      pods: [
        {
          uid: UID,
          qos: 'BestEffort',
          containers: [{ id: ID_A }],
        },
      ],
    });

  it('reads the page-aligned LONG_MAX and -1 quota as unlimited', async () => {
    const t = v1();
    const path = t.pods[0]!.containers[0]!.path;
    expect(t.vol.readFileSync(`/sys/fs/cgroup/memory/${path}/memory.limit_in_bytes`, 'utf8')).toBe(
      `${V1_MEMORY_UNLIMITED}\n`,
    );
    expect(t.vol.readFileSync(`/sys/fs/cgroup/cpu/${path}/cpu.cfs_quota_us`, 'utf8')).toBe('-1\n');
    expect(await readSettings(t.fs, t.layout, path)).toEqual({
      cpuQuotaUs: null,
      cpuPeriodUs: 100_000,
      cpuShares: 2,
      memoryLimitBytes: null,
      memswLimitBytes: null,
    });
  });

  it('leaves memsw out when swap accounting is off', async () => {
    const t = v1({ swapAccounting: false });
    const s = await readSettings(t.fs, t.layout, t.pods[0]!.containers[0]!.path);
    expect(s).not.toHaveProperty('memswLimitBytes');
  });

  it('reads co-mounted cpu,cpuacct hierarchies', async () => {
    const t = v1({ v1Mounts: 'comounted' });
    expect(t.layout.controllers.cpu.mount).toBe('/sys/fs/cgroup/cpu,cpuacct');
    const r = await readCgroup(t.fs, t.layout, t.pods[0]!.containers[0]!.path);
    expect(r.settings.cpuShares).toBe(2);
  });
});

describe('hybrid node: the version is per controller', () => {
  it('reads cpu from v1 files and memory from v2 files of the same cgroup', async () => {
    const spec = {
      driver: 'cgroupfs' as const,
      runtime: 'containerd' as const,
      pods: [
        {
          uid: UID,
          qos: 'Burstable' as const,
          containers: [
            {
              id: ID_A,
              cpuRequestMilli: 250,
              cpuLimitMilli: 500,
              memoryLimitBytes: 128n * Mi,
              usage: usageA,
            },
          ],
        },
      ],
    };
    const v1 = buildNodeTree({ ...spec, version: 'v1' });
    const v2 = buildNodeTree({ ...spec, version: 'v2' });
    // Graft the v2 tree's memory files under /sys/fs/cgroup/unified of the v1 node.
    for (const [file, content] of Object.entries(v2.vol.toJSON())) {
      if (!/\/(memory\.[a-z_.]+|cgroup\.[a-z_]+)$/.test(file) || content === null) continue;
      const target = file.replace('/sys/fs/cgroup/', '/sys/fs/cgroup/unified/');
      v1.vol.mkdirSync(target.slice(0, target.lastIndexOf('/')), { recursive: true });
      v1.vol.writeFileSync(target, content);
    }
    // Make the two hierarchies disagree so the test shows which one was read.
    const path = v1.pods[0]!.containers[0]!.path;
    v1.vol.writeFileSync(`/sys/fs/cgroup/memory/${path}/memory.limit_in_bytes`, '1048576\n');
    const layout: CgroupLayout = {
      ...v1.layout,
      controllers: { ...v1.layout.controllers, memory: { version: 'v2', mount: '/sys/fs/cgroup/unified' } },
    };
    const r = await readCgroup(v1.fs, layout, path);
    expect(r.settings).toEqual({
      cpuQuotaUs: 50_000,
      cpuPeriodUs: 100_000,
      cpuShares: 256,
      memoryLimitBytes: 128n * Mi,
    });
    expect(r.usage.cpuUsageNs).toBe(usageA.cpuUsageNs); // cpuacct.usage (ns), not v2's usec
    expect(r.usage.workingSetBytes).toBe(385_024n - 40_960n);
    expect(r.usage.oomKills).toBe(2);
  });
});

describe('memCgroupFs: the test fake writes like cgroupfs', () => {
  const tree = (version: 'v1' | 'v2') =>
    buildNodeTree({
      version,
      driver: 'cgroupfs',
      runtime: 'containerd',
      pods: [
        {
          uid: UID,
          qos: 'Burstable',
          containers: [
            {
              id: ID_A,
              cpuRequestMilli: 250,
              cpuLimitMilli: 500,
              memoryLimitBytes: 128n * Mi,
              usage: { memoryUsageBytes: 64n * Mi },
            },
            { id: ID_B, cpuRequestMilli: 100, cpuLimitMilli: 100, memoryLimitBytes: 32n * Mi },
          ],
        },
      ],
    });
  const at = (
    t: ReturnType<typeof tree>,
    c: 'cpu' | 'memory' | null,
    i: number | null,
    file: string,
  ): string => {
    const p = t.pods[0]!;
    const rel = i === null ? p.path : p.containers[i]!.path;
    return c === null ? `/sys/fs/cgroup/${rel}/${file}` : `/sys/fs/cgroup/${c}/${rel}/${file}`;
  };

  it('normalizes like the kernel: -1 -> page-max, bytes rounded down to pages, a newline', async () => {
    const t = tree('v1');
    await t.fs.writeFile(at(t, 'memory', 1, 'memory.memsw.limit_in_bytes'), '-1');
    await t.fs.writeFile(at(t, 'memory', 1, 'memory.limit_in_bytes'), '-1');
    expect(await t.fs.readFile(at(t, 'memory', 1, 'memory.limit_in_bytes'), 'utf8')).toBe(
      `${V1_MEMORY_UNLIMITED}\n`,
    );
    await t.fs.writeFile(at(t, 'memory', 1, 'memory.limit_in_bytes'), '100001');
    expect(await t.fs.readFile(at(t, 'memory', 1, 'memory.limit_in_bytes'), 'utf8')).toBe('98304\n');
  });

  it('refuses v1 writes the kernel refuses', async () => {
    const t = tree('v1');
    // limit above memsw
    await expect(
      t.fs.writeFile(at(t, 'memory', 0, 'memory.limit_in_bytes'), String(256n * Mi)),
    ).rejects.toMatchObject({ code: 'EINVAL' });
    // memsw below limit
    await expect(
      t.fs.writeFile(at(t, 'memory', 0, 'memory.memsw.limit_in_bytes'), String(64n * Mi)),
    ).rejects.toMatchObject({ code: 'EINVAL' });
    // limit below usage
    await expect(
      t.fs.writeFile(at(t, 'memory', 0, 'memory.limit_in_bytes'), String(32n * Mi)),
    ).rejects.toMatchObject({ code: 'EBUSY' });
    // container quota above the pod's (pod: 60000)
    await expect(t.fs.writeFile(at(t, 'cpu', 0, 'cpu.cfs_quota_us'), '70000')).rejects.toMatchObject({
      code: 'EINVAL',
    });
    await expect(t.fs.writeFile(at(t, 'cpu', 0, 'cpu.cfs_quota_us'), '500')).rejects.toMatchObject({
      code: 'EINVAL',
    });
    // files cgroupfs does not have are never created
    await expect(t.fs.writeFile(at(t, 'cpu', 0, 'cpu.max'), 'max')).rejects.toMatchObject({ code: 'ENOENT' });
    // a pod quota below a container's (the container has 50000)
    await expect(t.fs.writeFile(at(t, 'cpu', null, 'cpu.cfs_quota_us'), '40000')).rejects.toMatchObject({
      code: 'EINVAL',
    });
    // ... and what the kernel accepts goes through
    await t.fs.writeFile(at(t, 'cpu', null, 'cpu.cfs_quota_us'), '80000');
    await t.fs.writeFile(at(t, 'cpu', 0, 'cpu.cfs_quota_us'), '70000');
    expect(await t.fs.readFile(at(t, 'cpu', 0, 'cpu.cfs_quota_us'), 'utf8')).toBe('70000\n');
  });

  it('keeps the v2 cpu.max period when only the quota is written, and has no hierarchy check on v2', async () => {
    const t = tree('v2');
    await t.fs.writeFile(at(t, null, 0, 'cpu.max'), '90000');
    expect(await t.fs.readFile(at(t, null, 0, 'cpu.max'), 'utf8')).toBe('90000 100000\n');
    await t.fs.writeFile(at(t, null, 0, 'cpu.max'), 'max');
    expect(await t.fs.readFile(at(t, null, 0, 'cpu.max'), 'utf8')).toBe('max 100000\n');
    await expect(t.fs.writeFile(at(t, null, 0, 'cpu.weight'), '0')).rejects.toMatchObject({ code: 'ERANGE' });
    await t.fs.writeFile(at(t, null, 0, 'memory.max'), '134217729');
    expect(await t.fs.readFile(at(t, null, 0, 'memory.max'), 'utf8')).toBe('134217728\n');
  });
});
