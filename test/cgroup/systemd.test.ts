import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { readSettings } from '../../cgroup/reader.ts';
import {
  cpuMaxText,
  persistedQuotaPerSec,
  propertiesForFile,
  propertiesFromSettings,
  quotaPerSecFromCfs,
  renderCpuQuota,
  renderProperties,
  SYSTEMD_INFINITY,
  SystemdQuotaGranularity,
  systemdRenderingsOf,
  unitNameOf,
  unitPropertySets,
  type SystemdPropertyName,
} from '../../cgroup/systemd.ts';
import type { CgroupWrite } from '../../cgroup/types.ts';
import { planResize } from '../../cgroup/planner.ts';
import { loadV2Fixture } from '../support/cgroup-tree.ts';

const INF = SYSTEMD_INFINITY;
const V1 = { cpu: 'v1', cpuacct: 'v1', memory: 'v1' } as const;
const V2 = { cpu: 'v2', cpuacct: 'v2', memory: 'v2' } as const;
const Mi = 1024n * 1024n;
const ID = 'c'.repeat(64);
const POD = 'kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_ab.slice';
const CTR = `${POD}/cri-containerd-${ID}.scope`;

const props = (list: { name: string; value: bigint }[]) => list.map((p) => `${p.name}=${p.value}`);

describe('unit names', () => {
  it.each([
    [POD, 'kubepods-burstable-pod1234_ab.slice'],
    [CTR, `cri-containerd-${ID}.scope`],
    [`kubepods.slice/kubepods-pod1.slice/crio-${ID}.scope`, `crio-${ID}.scope`],
    [`kubepods.slice/kubepods-pod1.slice/docker-${ID}.scope`, `docker-${ID}.scope`],
    // CRI-O spoofs its sandbox cgroup through the cgroupfs manager: no unit, nothing for systemd to reset.
    [`kubepods.slice/kubepods-pod1.slice/crio-${ID}`, null],
    // cgroupfs-driver paths are no units.
    [`kubepods/burstable/pod1/${ID}`, null],
    ['kubepods.slice/../etc.slice', 'etc.slice'],
    ['kubepods.slice/a b.scope', null],
    ['kubepods.slice/x.service', null],
  ])('%s -> %s', (path, unit) => {
    expect(unitNameOf(path)).toBe(unit);
  });
});

describe('CPUQuotaPerSecUSec', () => {
  it.each([
    // [quota us, period us, per-second usec]: the fixture node: 500m -> "50000 100000" -> 500ms, 200m -> 200ms.
    [50_000, 100_000, 500_000n],
    [20_000, 100_000, 200_000n],
    [1_000, 100_000, 10_000n],
    [33_300, 100_000, 333_000n],
    [250_000, 100_000, 2_500_000n],
    [25_000, 50_000, 500_000n],
    // Periods that do not divide a second: the ceiling, so systemd's rounded-down product comes back whole.
    [5_000, 33_333, 150_002n],
    [null, 100_000, INF],
  ])('quota %s / period %s -> %s', (quota, period, perSec) => {
    expect(quotaPerSecFromCfs(quota, period)).toBe(perSec);
  });

  it.each([
    // [per-second, CPUQuotaPeriodUSec, what systemd writes to cpu.max]
    [500_000n, INF, '50000 100000'],
    [200_000n, INF, '20000 100000'],
    [333_000n, INF, '33300 100000'],
    [500_000n, 50_000n, '25000 50000'],
    [150_002n, 33_333n, '5000 33333'],
    // Rounded down instead of up, the same quota would come back a microsecond short.
    [150_001n, 33_333n, '4999 33333'],
    // Unlimited always goes out with the default period, whatever the unit's period.
    [INF, INF, 'max 100000'],
    [INF, 50_000n, 'max 100000'],
    // Under 1 ms per period the period is stretched until it is not (cgroup_cpu_adjust_period).
    [5_000n, INF, '1000 200000'],
    [1_000n, INF, '1000 1000000'],
    // ... and clamped to [1 ms, 1 s].
    [2_000_000n, 500n, '2000 1000'],
    [200_000n, 2_000_000n, '200000 1000000'],
  ])('systemd renders %s with period %s as "%s"', (perSec, period, text) => {
    expect(cpuMaxText('v2', renderCpuQuota(perSec, period))).toBe(text);
  });

  it('round-trips every kubelet quota at the default period exactly', () => {
    for (let milli = 1; milli <= 64_000; milli += 7) {
      const quota = Math.max(1000, Math.floor((milli * 100_000) / 1000));
      const r = renderCpuQuota(quotaPerSecFromCfs(quota, 100_000));
      expect(r).toEqual({ quotaUs: quota, periodUs: 100_000 });
    }
  });

  it.each([
    // [per-second, before v257 (whole percent in the drop-in), since v257 (hundredths)]
    [500_000n, 500_000n, 500_000n],
    [333_000n, 330_000n, 333_000n],
    [1_234_567n, 1_230_000n, 1_234_500n],
    [10_000n, 10_000n, 10_000n],
    // "CPUQuota=0%" is rejected on reload: the unit's own value comes back, not ours.
    [5_000n, null, 5_000n],
    [50n, null, null],
    [INF, INF, INF],
  ])('a reload keeps %s as %s (< v257) / %s (>= v257)', (perSec, old, current) => {
    expect(persistedQuotaPerSec(perSec, SystemdQuotaGranularity.beforeV257)).toBe(old);
    expect(persistedQuotaPerSec(perSec, SystemdQuotaGranularity.sinceV257)).toBe(current);
  });

  it('accepts on read-back exactly what systemd renders now and after a reload, nothing else', () => {
    // 333m: exact now; a reload on systemd < 257 brings back whole percent: 33000.
    expect(systemdRenderingsOf('v2', 'cpu.max', '33300 100000', 100_000)).toEqual(['33000 100000']);
    expect(
      systemdRenderingsOf('v2', 'cpu.max', '33300 100000', 100_000, SystemdQuotaGranularity.sinceV257),
    ).toEqual([]);
    // On the 1 % grid systemd renders the exact value either way.
    expect(systemdRenderingsOf('v2', 'cpu.max', '50000 100000', 100_000)).toEqual([]);
    // v1 carries the period separately.
    expect(systemdRenderingsOf('v1', 'cpu.cfs_quota_us', '33300', 100_000)).toEqual(['33000']);
    // Unlimited at a non-default period: systemd writes the default period.
    expect(systemdRenderingsOf('v2', 'cpu.max', 'max 50000', 50_000)).toEqual(['max 100000']);
    // Weights and memory limits go through systemd unchanged.
    expect(systemdRenderingsOf('v2', 'cpu.weight', '39', 100_000)).toEqual([]);
    expect(systemdRenderingsOf('v2', 'memory.max', '134217728', 100_000)).toEqual([]);
  });
});

describe('properties for cgroup values', () => {
  it.each([
    ['v2', 'cpu.max', '50000 100000', ['CPUQuotaPerSecUSec=500000']],
    ['v2', 'cpu.max', 'max 100000', [`CPUQuotaPerSecUSec=${INF}`]],
    ['v2', 'cpu.max', '25000 50000', ['CPUQuotaPeriodUSec=50000', 'CPUQuotaPerSecUSec=500000']],
    ['v2', 'cpu.weight', '39', ['CPUWeight=39']],
    ['v2', 'memory.max', '134217728', ['MemoryMax=134217728']],
    ['v2', 'memory.max', 'max', [`MemoryMax=${INF}`]],
    ['v1', 'cpu.cfs_quota_us', '50000', ['CPUQuotaPerSecUSec=500000']],
    ['v1', 'cpu.cfs_quota_us', '-1', [`CPUQuotaPerSecUSec=${INF}`]],
    ['v1', 'cpu.shares', '256', ['CPUShares=256']],
    ['v1', 'memory.limit_in_bytes', '67108864', ['MemoryLimit=67108864']],
    ['v1', 'memory.limit_in_bytes', '-1', [`MemoryLimit=${INF}`]],
    ['v1', 'memory.limit_in_bytes', '9223372036854771712', [`MemoryLimit=${INF}`]],
    // systemd has no property for memsw and never writes it: a reload leaves it alone.
    ['v1', 'memory.memsw.limit_in_bytes', '67108864', []],
  ] as const)('%s %s=%s -> %j', (version, file, text, expected) => {
    expect(props(propertiesForFile(version, file, text, 100_000))).toEqual(expected);
  });

  it('v1 quotas take the live period from the cgroup, not the write', () => {
    expect(props(propertiesForFile('v1', 'cpu.cfs_quota_us', '25000', 50_000))).toEqual([
      'CPUQuotaPeriodUSec=50000',
      'CPUQuotaPerSecUSec=500000',
    ]);
  });

  it('renders properties back into the files systemd writes', () => {
    const m = (o: Partial<Record<SystemdPropertyName, bigint>>) =>
      new Map(Object.entries(o) as [SystemdPropertyName, bigint][]);
    const files = (v: typeof V1 | typeof V2, o: Partial<Record<SystemdPropertyName, bigint>>) =>
      renderProperties(v, m(o)).map((f) => `${f.file}=${f.value}`);
    expect(files(V2, { CPUQuotaPerSecUSec: 500_000n, CPUWeight: 10n, MemoryMax: 128n * Mi })).toEqual([
      'cpu.max=50000 100000',
      'cpu.weight=10',
      'memory.max=134217728',
    ]);
    expect(files(V2, { CPUQuotaPerSecUSec: INF, MemoryMax: INF })).toEqual([
      'cpu.max=max 100000',
      'memory.max=max',
    ]);
    expect(files(V1, { CPUQuotaPerSecUSec: 200_000n, CPUShares: 204n, MemoryLimit: INF })).toEqual([
      'cpu.cfs_period_us=100000',
      'cpu.cfs_quota_us=20000',
      'cpu.shares=204',
      'memory.limit_in_bytes=-1',
    ]);
  });

  it("matches what systemd reported for the real node's pod slices, both ways", async () => {
    const node = loadV2Fixture();
    const text = readFileSync(
      new URL('../fixtures/real-node-v2-systemd/pod-cgroups.txt', import.meta.url),
      'utf8',
    );
    const reported = [...text.matchAll(/pod cgroup: \/sys\/fs\/cgroup\/(\S+)[\s\S]*?systemctl: (.*)/g)];
    expect(reported).toHaveLength(3);
    const systemctlValue = (v: bigint, name: string): string => {
      if (v === INF) return 'infinity';
      // systemctl prints usec as a timespan: 500000 -> 500ms.
      return name === 'CPUQuotaPerSecUSec' ? `${v / 1000n}ms` : String(v);
    };
    for (const [, path, line] of reported) {
      const settings = await readSettings(node.fs, node.layout, path!);
      const ours = propertiesFromSettings(V2, settings);
      const shown = Object.fromEntries(
        line!
          .trim()
          .split(/\s+/)
          .map((kv) => kv.split('=')),
      );
      for (const p of ours) expect(systemctlValue(p.value, p.name)).toBe(shown[p.name]);
      // And systemd, holding those, writes exactly the files the node had.
      for (const f of renderProperties(V2, new Map(ours.map((p) => [p.name, p.value])))) {
        const file = String(await node.fs.readFile(`/sys/fs/cgroup/${path}/${f.file}`, 'utf8')).trim();
        expect(`${f.file}=${file}`).toBe(`${f.file}=${f.value}`);
      }
    }
  });
});

describe('calls for a plan', () => {
  const w = (path: string, controller: 'cpu' | 'memory', file: string, value: string, previous: string) =>
    ({
      level: path === POD ? 'pod' : 'container',
      path,
      controller,
      file,
      value,
      previous,
      reason: '',
    }) as CgroupWrite;

  it('keeps the plan order: consecutive writes to one unit share a call, a unit revisited gets another', () => {
    const writes = [
      w(POD, 'memory', 'memory.max', String(256n * Mi), String(128n * Mi)),
      w(CTR, 'memory', 'memory.max', String(256n * Mi), String(128n * Mi)),
      w(POD, 'cpu', 'cpu.max', '100000 100000', '50000 100000'),
      w(POD, 'cpu', 'cpu.weight', '20', '10'),
      w(CTR, 'cpu', 'cpu.max', '100000 100000', '50000 100000'),
      w(CTR, 'cpu', 'cpu.weight', '20', '10'),
    ];
    const { sets, unmapped } = unitPropertySets(writes, { versions: V2, periodOf: () => 100_000 });
    expect(unmapped).toEqual([]);
    expect(sets.map((s) => [s.unit.slice(0, 14), props(s.properties), s.writes])).toEqual([
      ['kubepods-burst', ['MemoryMax=268435456'], [0]],
      ['cri-containerd', ['MemoryMax=268435456'], [1]],
      ['kubepods-burst', ['CPUQuotaPerSecUSec=1000000', 'CPUWeight=20'], [2, 3]],
      ['cri-containerd', ['CPUQuotaPerSecUSec=1000000', 'CPUWeight=20'], [4, 5]],
    ]);
    const undo = unitPropertySets(writes, { versions: V2, periodOf: () => 100_000, use: 'previous' });
    expect(props(undo.sets[2]!.properties)).toEqual(['CPUQuotaPerSecUSec=500000', 'CPUWeight=10']);
  });

  it('leaves out what systemd cannot hold: v1 memsw, and cgroups that are no units', () => {
    const v1Pod = 'kubepods.slice/kubepods-pod1.slice';
    const v1Ctr = `${v1Pod}/cri-containerd-${ID}.scope`;
    const writes = [
      w(v1Pod, 'memory', 'memory.limit_in_bytes', String(256n * Mi), String(128n * Mi)),
      w(v1Ctr, 'memory', 'memory.memsw.limit_in_bytes', String(256n * Mi), String(128n * Mi)),
      w(v1Ctr, 'memory', 'memory.limit_in_bytes', String(256n * Mi), String(128n * Mi)),
      w(`kubepods/pod1/${ID}`, 'cpu', 'cpu.shares', '512', '256'),
      w(v1Ctr, 'cpu', 'cpu.cfs_quota_us', '25000', '12500'),
    ];
    const { sets, unmapped } = unitPropertySets(writes, {
      versions: V1,
      periodOf: (p) => (p === v1Ctr ? 50_000 : 100_000),
    });
    expect(unmapped).toEqual([1, 3]);
    // The container's two writes share a call: the write between them is not systemd's to make.
    expect(sets.map((s) => [props(s.properties), s.writes])).toEqual([
      [['MemoryLimit=268435456'], [0]],
      [
        ['MemoryLimit=268435456', 'CPUQuotaPeriodUSec=50000', 'CPUQuotaPerSecUSec=500000'],
        [2, 4],
      ],
    ]);
  });

  it("follows the planner's safe order on a real plan (shrink: containers before the pod)", () => {
    const cur = (quota: number, weight: number, mem: bigint) => ({
      cpuQuotaUs: quota,
      cpuPeriodUs: 100_000,
      cpuShares: 0,
      cpuWeight: weight,
      memoryLimitBytes: mem,
    });
    const plan = planResize({
      versions: V2,
      weightFormula: 'linear',
      pod: { path: POD, current: cur(50_000, 10, 128n * Mi), usage: { workingSetBytes: 0n } },
      containers: [
        {
          name: 'app',
          path: CTR,
          current: cur(50_000, 10, 128n * Mi),
          usage: { workingSetBytes: 0n },
          desired: {
            cpuRequestMilli: 100,
            cpuLimitMilli: 250,
            memoryRequestBytes: 32n * Mi,
            memoryLimitBytes: 64n * Mi,
          },
        },
      ],
    });
    if (!plan.ok) throw new Error(plan.message);
    const { sets } = unitPropertySets(plan.writes, { versions: V2, periodOf: () => 100_000 });
    expect(sets.map((s) => `${s.unit.slice(0, 8)} ${props(s.properties).join(' ')}`)).toEqual([
      'cri-cont MemoryMax=67108864',
      'kubepods MemoryMax=67108864',
      'cri-cont CPUWeight=4 CPUQuotaPerSecUSec=250000',
      'kubepods CPUWeight=4 CPUQuotaPerSecUSec=250000',
    ]);
  });
});
