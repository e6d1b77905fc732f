import { readFileSync } from 'node:fs';
import { Volume } from 'memfs';
import { describe, expect, expectTypeOf, it } from 'vitest';
import type { PodLike as AgentPodLike } from '../../agent/resize/pod.ts';
import { sharesFromMillicores, weightFromShares } from '../../cgroup/convert.ts';
import {
  controllersFromMounts,
  DetectError,
  detectLayout,
  parseCpuMilli,
  parseMountinfo,
} from '../../cgroup/detect.ts';
import type { PodLike } from '../../cgroup/detect.ts';
import type { CgroupLayout, ContainerRuntime } from '../../cgroup/types.ts';
import { CgroupDrivers, ContainerRuntimes } from '../../cgroup/types.ts';
import type { NodeTreeSpec, TreePodSpec } from '../support/cgroup-tree.ts';
import { buildNodeTree, memCgroupFs, mountinfoFor } from '../support/cgroup-tree.ts';

const hybrid = (f: string): string =>
  readFileSync(new URL(`../fixtures/hybrid-host/${f}`, import.meta.url), 'utf8');

const UIDS = [
  '2fe909bb-58c6-481f-b1cc-04343750f12a',
  '8632edec-0f0e-411c-8920-a5e25f96020d',
  'cf465464-3b26-4394-955d-7a1709b6fe93',
];
const id = (n: number): string => n.toString(16).padStart(2, '0').repeat(32);

/** A Burstable 250m pod, a Guaranteed 200m pod and a BestEffort pod: the v2 fixture node's mix. */
const pods = (): TreePodSpec[] => [
  {
    uid: UIDS[0]!,
    qos: 'Burstable',
    name: 'burn',
    containers: [{ id: id(1), cpuRequestMilli: 250, cpuLimitMilli: 500 }],
  },
  {
    uid: UIDS[1]!,
    qos: 'Guaranteed',
    name: 'guar',
    containers: [{ id: id(2), cpuRequestMilli: 200, cpuLimitMilli: 200 }],
  },
  { uid: UIDS[2]!, qos: 'BestEffort', name: 'be', containers: [{ id: id(3) }] },
];

const node = (over: Partial<NodeTreeSpec> = {}) =>
  buildNodeTree({ version: 'v2', driver: 'systemd', runtime: 'containerd', pods: pods(), ...over });

describe('parseMountinfo', () => {
  it("reads this machine's hybrid mounts: cpu, cpuacct, memory each on their own v1 hierarchy, a v2 at unified", () => {
    const parsed = parseMountinfo(hybrid('mountinfo.txt'));
    expect(parsed.v1.cpu).toMatchObject({ mount: '/sys/fs/cgroup/cpu', controllers: ['cpu'], root: '/' });
    expect(parsed.v1.cpuacct).toMatchObject({ mount: '/sys/fs/cgroup/cpuacct', controllers: ['cpuacct'] });
    expect(parsed.v1.memory).toMatchObject({ mount: '/sys/fs/cgroup/memory', controllers: ['memory'] });
    expect(parsed.v2).toMatchObject({ version: 'v2', mount: '/sys/fs/cgroup/unified' });
  });

  it('keeps every controller on v1 when the v2 mount does not list it (here it only has hugetlb)', () => {
    const v2Controllers = hybrid('unified-cgroup.controllers').trim().split(/\s+/);
    expect(v2Controllers).toEqual(['hugetlb']);
    const { controllers } = controllersFromMounts(parseMountinfo(hybrid('mountinfo.txt')), v2Controllers);
    expect(controllers).toEqual({
      cpu: { version: 'v1', mount: '/sys/fs/cgroup/cpu' },
      cpuacct: { version: 'v1', mount: '/sys/fs/cgroup/cpuacct' },
      memory: { version: 'v1', mount: '/sys/fs/cgroup/memory' },
    });
  });

  it('puts a controller on v2 when only the v2 mount has it, and cpuacct with it', () => {
    const text =
      '40 31 0:37 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n';
    const { controllers } = controllersFromMounts(parseMountinfo(text), ['cpu', 'io']);
    expect(controllers.memory).toEqual({ version: 'v1', mount: '/sys/fs/cgroup/memory' });
    expect(controllers.cpu).toEqual({ version: 'v2', mount: '/sys/fs/cgroup/unified' });
    expect(controllers.cpuacct).toEqual({ version: 'v2', mount: '/sys/fs/cgroup/unified' });
  });

  it('reads co-mounted cpu,cpuacct and unescapes octal escapes in mount points', () => {
    const text =
      '32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:7 - cgroup cgroup rw,cpu,cpuacct\n' +
      '35 31 0:32 / /mnt/my\\040cgroups/memory rw - cgroup cgroup rw,memory\n';
    const parsed = parseMountinfo(text);
    expect(parsed.v1.cpu?.mount).toBe('/sys/fs/cgroup/cpu,cpuacct');
    expect(parsed.v1.cpuacct?.mount).toBe('/sys/fs/cgroup/cpu,cpuacct');
    expect(parsed.v1.memory?.mount).toBe('/mnt/my cgroups/memory');
    expect(parsed.v2).toBeNull();
  });

  it('prefers the mount that shows the whole hierarchy over a bind of a subtree', () => {
    const text =
      '50 1 0:26 /kubepods/pod1 /host/cg rw - cgroup2 cgroup2 rw\n51 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n';
    expect(parseMountinfo(text).v2).toMatchObject({ mount: '/sys/fs/cgroup', root: '/' });
  });
});

describe('detectLayout: controllers and driver', () => {
  it("detects this machine's hybrid host as all-v1 (cgroupfs kubepods tree on it)", async () => {
    const t = buildNodeTree({
      version: 'v1',
      driver: 'cgroupfs',
      runtime: 'containerd',
      hybridUnified: true,
      pods: pods(),
    });
    t.vol.writeFileSync('/sys/fs/cgroup/unified/cgroup.controllers', hybrid('unified-cgroup.controllers'));
    const r = await detectLayout({ fs: t.fs, mountinfo: hybrid('mountinfo.txt') });
    expect(r.layout.controllers).toEqual(t.layout.controllers);
    expect(r.layout).toMatchObject({ driver: 'cgroupfs', podsRoot: 'kubepods' });
    expect(r.notes.join('\n')).toMatch(
      /cgroup v2 mount \/sys\/fs\/cgroup\/unified lists controllers: hugetlb/,
    );
    expect(r.conflicts).toEqual([]);
  });

  it.each(CgroupDrivers)('finds the %s driver from the pods root that exists', async (driver) => {
    for (const version of ['v1', 'v2'] as const) {
      const t = node({ version, driver });
      const r = await detectLayout({ fs: t.fs, mountinfo: t.mountinfo });
      expect(r.layout).toMatchObject({
        driver,
        podsRoot: driver === 'systemd' ? 'kubepods.slice' : 'kubepods',
      });
      expect(r.layout.controllers).toEqual(t.layout.controllers);
    }
  });

  it('maps cpuacct to the v2 mount on a pure v2 node', async () => {
    const t = node();
    const r = await detectLayout({ fs: t.fs, mountinfo: t.mountinfo });
    expect(r.layout.controllers.cpuacct).toEqual({ version: 'v2', mount: '/sys/fs/cgroup' });
  });

  it('honours a configured pods root (driver from its name)', async () => {
    const t = node({ driver: 'cgroupfs', podsRoot: 'resizelet-test-xyz/kubepods' });
    const r = await detectLayout({
      fs: t.fs,
      mountinfo: t.mountinfo,
      overrides: { podsRoot: 'resizelet-test-xyz/kubepods' },
    });
    expect(r.layout).toMatchObject({ driver: 'cgroupfs', podsRoot: 'resizelet-test-xyz/kubepods' });
  });

  it('fails clearly when no pods root exists, or both do', async () => {
    const empty = Volume.fromJSON({ '/sys/fs/cgroup/cgroup.controllers': 'cpu memory\n' });
    const err = await detectLayout({
      fs: memCgroupFs(empty),
      mountinfo: mountinfoFor({ version: 'v2' }),
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DetectError);
    expect(err).toMatchObject({ code: 'RESIZELET_ERR_DETECT_NO_PODS_ROOT' });

    const t = node();
    t.vol.mkdirSync('/sys/fs/cgroup/kubepods');
    await expect(detectLayout({ fs: t.fs, mountinfo: t.mountinfo })).rejects.toMatchObject({
      code: 'RESIZELET_ERR_DETECT_CONFLICT',
    });
    // configuring the driver settles it
    const r = await detectLayout({ fs: t.fs, mountinfo: t.mountinfo, overrides: { driver: 'systemd' } });
    expect(r.layout.podsRoot).toBe('kubepods.slice');
  });

  it('fails clearly when a controller is on no hierarchy', async () => {
    const t = node();
    t.vol.writeFileSync('/sys/fs/cgroup/cgroup.controllers', 'cpuset cpu io\n');
    await expect(detectLayout({ fs: t.fs, mountinfo: t.mountinfo })).rejects.toThrow(
      /no cgroup hierarchy holds memory/,
    );
  });
});

describe('detectLayout: runtime', () => {
  it.each(ContainerRuntimes)('reads %s from the containerStatuses schemes', async (runtime) => {
    const t = node({ runtime, driver: 'cgroupfs' });
    const r = await detectLayout({ fs: t.fs, mountinfo: t.mountinfo, pods: t.apiPods });
    expect(r.layout.runtime).toBe(runtime);
    expect(r.notes.join('\n')).toMatch(new RegExp(`runtime ${runtime}: 3 containerStatuses`));
  });

  it.each(ContainerRuntimes)(
    'reads %s from systemd scope names when there are no pod objects',
    async (runtime) => {
      const t = node({ runtime, driver: 'systemd' });
      const r = await detectLayout({
        fs: t.fs,
        mountinfo: t.mountinfo,
        defaults: { runtime: 'docker' === runtime ? 'containerd' : 'docker' },
      });
      expect(r.layout.runtime).toBe(runtime);
    },
  );

  it('reads CRI-O from cgroupfs names, but cannot tell containerd from Docker there', async () => {
    const crio = node({ runtime: 'crio', driver: 'cgroupfs' });
    expect((await detectLayout({ fs: crio.fs, mountinfo: crio.mountinfo })).layout.runtime).toBe('crio');
    const docker = node({ runtime: 'docker', driver: 'cgroupfs' });
    const r = await detectLayout({
      fs: docker.fs,
      mountinfo: docker.mountinfo,
      defaults: { runtime: 'docker' },
    });
    expect(r.layout.runtime).toBe('docker');
    expect(r.notes.join('\n')).toMatch(/containerd and Docker name them alike under cgroupfs/);
  });

  it('reports pods that disagree about the runtime instead of picking one silently', async () => {
    const t = node();
    const mixed: PodLike[] = structuredClone(t.apiPods);
    mixed[0]!.status!.containerStatuses![0]!.containerID = `docker://${id(9)}`;
    const r = await detectLayout({
      fs: t.fs,
      mountinfo: t.mountinfo,
      pods: mixed,
      defaults: { runtime: 'crio' },
    });
    expect(r.layout.runtime).toBe('crio');
    expect(r.conflicts).toEqual([expect.stringMatching(/several runtimes \(containerd x2, docker x1\)/)]);
  });
});

describe('detectLayout: weight formula (v2)', () => {
  it('finds linear when 250m reads back as weight 10', async () => {
    const t = node({ weightFormula: 'linear' });
    const r = await detectLayout({
      fs: t.fs,
      mountinfo: t.mountinfo,
      pods: t.apiPods,
      defaults: { weightFormula: 'quadratic' },
    });
    expect(r.layout.weightFormula).toBe('linear');
    expect(r.notes.join('\n')).toMatch(/container burn\/c0 250m -> weight 10/);
  });

  it('finds quadratic when 250m reads back as weight 35', async () => {
    const t = node({ weightFormula: 'quadratic' });
    const r = await detectLayout({ fs: t.fs, mountinfo: t.mountinfo, pods: t.apiPods });
    expect(r.layout.weightFormula).toBe('quadratic');
    expect(r.notes.join('\n')).toMatch(/250m -> weight 35/);
  });

  it('reports a kubelet (pod level) and runtime (container level) that use different formulas', async () => {
    const t = node({ weightFormula: 'quadratic', podWeightFormula: 'linear' });
    const r = await detectLayout({
      fs: t.fs,
      mountinfo: t.mountinfo,
      pods: t.apiPods,
      defaults: { weightFormula: 'linear' },
    });
    expect(r.layout.weightFormula).toBe('linear');
    expect(r.conflicts).toEqual([
      expect.stringMatching(/pod-level weights are linear .* container-level weights are quadratic/),
    ]);
  });

  it('reports pods whose weights fit different formulas, never mixing them', async () => {
    const t = node({ weightFormula: 'linear' });
    const guar = t.pods.find((p) => p.qos === 'Guaranteed')!;
    const quad200m = weightFromShares(sharesFromMillicores(200), 'quadratic');
    t.vol.writeFileSync(`/sys/fs/cgroup/${guar.containers[0]!.path}/cpu.weight`, `${quad200m}\n`);
    const r = await detectLayout({
      fs: t.fs,
      mountinfo: t.mountinfo,
      pods: t.apiPods,
      defaults: { weightFormula: 'quadratic' },
    });
    expect(r.layout.weightFormula).toBe('quadratic');
    expect(r.conflicts).toEqual([expect.stringMatching(/fit both formulas/)]);
  });

  it('stays with the default when every weight agrees with both formulas (BestEffort: 2 shares -> 1)', async () => {
    const t = node({ weightFormula: 'quadratic', pods: [pods()[2]!] });
    const r = await detectLayout({
      fs: t.fs,
      mountinfo: t.mountinfo,
      pods: t.apiPods,
      defaults: { weightFormula: 'linear' },
    });
    expect(r.layout.weightFormula).toBe('linear');
    expect(r.notes.join('\n')).toMatch(/agree with both formulas/);
  });

  it('notes weights that fit neither formula (resized by hand) and ignores them', async () => {
    const t = node({ weightFormula: 'linear' });
    const burn = t.pods.find((p) => p.qos === 'Burstable')!;
    t.vol.writeFileSync(`/sys/fs/cgroup/${burn.containers[0]!.path}/cpu.weight`, '500\n');
    const r = await detectLayout({ fs: t.fs, mountinfo: t.mountinfo, pods: t.apiPods });
    expect(r.layout.weightFormula).toBe('linear'); // from guar's 8 and the pod levels
    expect(r.notes.join('\n')).toMatch(/weight 500 .*fits neither formula/);
  });

  it('does not look at weights on v1', async () => {
    const t = node({ version: 'v1', weightFormula: 'quadratic' });
    const r = await detectLayout({
      fs: t.fs,
      mountinfo: t.mountinfo,
      pods: t.apiPods,
      defaults: { weightFormula: 'quadratic' },
    });
    expect(r.layout.weightFormula).toBe('quadratic');
    expect(r.notes.join('\n')).toMatch(/irrelevant on cgroup v1/);
  });
});

describe('detectLayout: configuration wins', () => {
  it('takes every field from overrides without needing the node to show it', async () => {
    const layout: CgroupLayout = {
      controllers: {
        cpu: { version: 'v2', mount: '/x' },
        cpuacct: { version: 'v2', mount: '/x' },
        memory: { version: 'v2', mount: '/x' },
      },
      driver: 'systemd',
      runtime: 'crio',
      weightFormula: 'quadratic',
      podsRoot: 'custom.slice',
    };
    const r = await detectLayout({
      fs: memCgroupFs(new Volume()),
      mountinfo: '',
      overrides: layout,
      pods: [],
    });
    expect(r.layout).toEqual(layout);
    expect(r.notes.filter((n) => /configuration/.test(n))).toHaveLength(4);
  });

  it.each([
    ['runtime', { runtime: 'docker' as ContainerRuntime }],
    ['weightFormula', { weightFormula: 'quadratic' as const }],
  ])('overrides %s over evidence', async (field, over) => {
    const t = node();
    const r = await detectLayout({ fs: t.fs, mountinfo: t.mountinfo, pods: t.apiPods, overrides: over });
    expect(r.layout).toMatchObject(over);
    expect(r.notes.join('\n')).toMatch(
      new RegExp(`${field === 'runtime' ? 'runtime' : 'weight formula'} \\S+: from configuration`),
    );
  });
});

describe('PodLike', () => {
  it("accepts the agent's pod objects as they are", () => {
    expectTypeOf<AgentPodLike>().toExtend<PodLike>();
  });
});

describe('parseCpuMilli', () => {
  it.each([
    ['250m', 250],
    ['1', 1000],
    ['0.5', 500],
    ['2.25', 2250],
    [undefined, null],
    // Kubernetes accepts any quantity for CPU, binary suffixes included; garbage is no evidence.
    ['1Ki', 1024000],
    ['1.2.3', null],
    ['', null],
    [2, 2000],
  ] as const)('%s -> %s', (q, m) => {
    expect(parseCpuMilli(q)).toBe(m);
  });
});
