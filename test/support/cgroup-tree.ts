/**
 * Cgroup trees in memfs, for every test that reads or writes cgroups without a kernel.
 *
 * API (everything returns a fresh memfs volume; nothing is shared between calls)
 *
 *   buildNodeTree(spec: NodeTreeSpec): NodeTree
 *     A node's kubepods tree under /sys/fs/cgroup in the kernel's file formats, holding the values the
 *     kubelet (pod and QoS levels) and runc (containers) write for the given pods, computed with
 *     cgroup/convert.ts. v1 gets one hierarchy per controller (cpu, cpuacct, memory; optionally co-mounted
 *     cpu,cpuacct) with `-1` quotas, the page-aligned unlimited 9223372036854771712 and
 *     `memory.memsw.limit_in_bytes`; v2 gets one tree with `cpu.max` "max 100000", `memory.max` "max",
 *     `cpu.weight`, `cgroup.controllers`/`cgroup.subtree_control`. Each pod has its sandbox (pause) cgroup,
 *     CRI-O pods also conmon's sibling cgroups. Returns the volume, a CgroupFs over it (`memCgroupFs`), the
 *     layout, a matching mountinfo text, the paths of everything built, and API-shaped pods (`apiPods`,
 *     with containerStatuses) for code that starts from Kubernetes objects.
 *     Resource values are taken as given, i.e. after API defaulting (a limit without a request must be
 *     passed with request = limit, as the API server would have stored it).
 *
 *   loadV1Fixture(): FixtureNode
 *     test/fixtures/real-node-v1-cgroupfs (cgroups.json + pods.json): every recorded file verbatim.
 *   loadV2Fixture(): FixtureNode
 *     test/fixtures/real-node-v2-systemd (pod-cgroups.txt + pods.yaml): recorded files verbatim, plus the
 *     files the recording lacks (cpu.stat, memory.current, memory.stat, memory.events, cgroup.controllers...)
 *     synthesized in the formats of Documentation/admin-guide/cgroup-v2.rst with zero counters.
 *
 *   memCgroupFs(vol, { kernelWrites = true }): CgroupFs
 *     The port over a memfs volume. With kernelWrites, writeFile behaves like cgroupfs for the files
 *     resizelet writes: it never creates files (ENOENT), stores the kernel's normalized text with a newline
 *     (`-1` -> page-max, bytes rounded down to pages, cpu.max period kept), and refuses what the kernel
 *     refuses: v1 memory limit above memsw or memsw below limit (EINVAL), v1 memory limit below usage (EBUSY;
 *     the kernel first tries reclaim), a v1 CFS quota above its parent's (or below a child's) (EINVAL), quota
 *     under 1 ms, cpu.weight outside 1..10000 (ERANGE).
 *
 *   mountinfoFor({ version, root?, v1Mounts?, hybridUnified? }): string
 *     mountinfo text for such a tree, in the format of this machine's /proc/self/mountinfo.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Volume } from 'memfs';
import {
  sharesFromMillicores,
  quotaFromMillicores,
  V1_MEMORY_UNLIMITED,
  weightFromShares,
} from '../../cgroup/convert.ts';
import type { PodLike } from '../../cgroup/detect.ts';
import {
  CONTAINER_DIR_FORMATS,
  containerCgroupPath,
  DEFAULT_PODS_ROOT,
  podCgroupPath,
} from '../../cgroup/paths.ts';
import type {
  CgroupDriver,
  CgroupFs,
  CgroupLayout,
  CgroupPath,
  CgroupVersion,
  ContainerRuntime,
  Controller,
  QosClass,
  WeightFormula,
} from '../../cgroup/types.ts';

export const CGROUP_ROOT = '/sys/fs/cgroup';
const PAGE = 4096n;
const V2_CONTROLLERS = 'cpuset cpu io memory hugetlb pids rdma misc';

// ---------------------------------------------------------------------------------------------------------
// Spec types

/** Usage of one container (leaf); parents get the kernel's hierarchical sums. Everything defaults to 0. */
export interface TreeUsage {
  cpuUsageNs?: bigint;
  nrPeriods?: number;
  nrThrottled?: number;
  throttledNs?: bigint;
  memoryUsageBytes?: bigint;
  /** Part of the usage that is inactive page cache (working set = usage - this). */
  inactiveFileBytes?: bigint;
  rssBytes?: bigint;
  oomKills?: number;
}

export interface TreeContainerSpec {
  /** 64 lowercase hex digits. */
  id: string;
  name?: string;
  cpuRequestMilli?: number | null;
  cpuLimitMilli?: number | null;
  memoryRequestBytes?: bigint | null;
  memoryLimitBytes?: bigint | null;
  usage?: TreeUsage;
  /** Processes in the container's cgroup; default one made-up pid. */
  pids?: number[];
}

export interface TreePodSpec {
  uid: string;
  qos: QosClass;
  name?: string;
  namespace?: string;
  /** Default: derived from the UID. */
  sandboxId?: string;
  containers: TreeContainerSpec[];
}

export interface NodeTreeSpec {
  version: CgroupVersion;
  driver: CgroupDriver;
  runtime: ContainerRuntime;
  /** v2: how runc maps container shares to cpu.weight. Default linear (runc < 1.3, the fixture node). */
  weightFormula?: WeightFormula;
  /** v2: the map the kubelet's vendored library uses for pod and QoS cgroups. Default = weightFormula. */
  podWeightFormula?: WeightFormula;
  /** Default `kubepods` / `kubepods.slice`; tests use e.g. `resizelet-test-xyz/kubepods`. */
  podsRoot?: string;
  /** v1: one hierarchy per controller (this machine) or cpu and cpuacct co-mounted (most distros). */
  v1Mounts?: 'separate' | 'comounted';
  /** v1: also mount an empty cgroup2 at <root>/unified, as systemd's hybrid mode does. */
  hybridUnified?: boolean;
  /** v1: swap accounting on (memsw files present). Default true. */
  swapAccounting?: boolean;
  periodUs?: number;
  /** Node allocatable: the kubepods cgroup's shares and memory limit. */
  allocatable?: { cpuMilli?: number; memoryBytes?: bigint };
  pods: TreePodSpec[];
}

export interface BuiltContainer {
  id: string;
  name: string;
  /** `<runtime scheme>://<id>`, as in containerStatuses. */
  containerID: string;
  path: CgroupPath;
  /** CRI-O only: conmon's sibling cgroup. */
  conmonPath?: CgroupPath;
}

export interface BuiltPod {
  uid: string;
  qos: QosClass;
  name: string;
  path: CgroupPath;
  sandboxId: string;
  sandboxPath: CgroupPath;
  containers: BuiltContainer[];
}

export interface NodeTree {
  vol: Volume;
  fs: CgroupFs;
  layout: CgroupLayout;
  mountinfo: string;
  pods: BuiltPod[];
  apiPods: PodLike[];
}

export interface FixtureNode {
  vol: Volume;
  fs: CgroupFs;
  layout: CgroupLayout;
  mountinfo: string;
  apiPods: PodLike[];
}

// ---------------------------------------------------------------------------------------------------------
// memfs port with cgroupfs write semantics

type WriteRule = (
  value: string,
  at: { dir: string; read(dir: string, file: string): string | null; children(dir: string): string[] },
) => string;

const errno = (code: string, path: string, detail: string): Error =>
  Object.assign(new Error(`${code}: ${detail}, write '${path}'`), { code, syscall: 'write', path });

const int = (v: string, path: string): bigint => {
  if (!/^-?\d+$/.test(v)) throw errno('EINVAL', path, `not an integer: ${JSON.stringify(v)}`);
  return BigInt(v);
};
const pageFloor = (n: bigint): bigint => n - (n % PAGE);
const parentOf = (dir: string): string => dir.slice(0, dir.lastIndexOf('/'));
const v1Mem = (t: string | null): bigint => (t === null ? V1_MEMORY_UNLIMITED : BigInt(t.trim()));

/** The v1 CFS bandwidth of a cgroup as a ratio (Infinity = unlimited), following -1 up to the parent's. */
function v1Ratio(dir: string, read: (d: string, f: string) => string | null, inherit: boolean): number {
  const q = read(dir, 'cpu.cfs_quota_us');
  const p = read(dir, 'cpu.cfs_period_us');
  if (q === null || p === null) return Infinity; // above the hierarchy root
  if (Number(q) >= 0) return Number(q) / Number(p);
  return inherit ? v1Ratio(parentOf(dir), read, true) : Infinity;
}

const WRITE_RULES: Record<string, WriteRule> = {
  // sched_group_set_shares clamps silently.
  'cpu.shares': (v, { dir }) => {
    const n = int(v, `${dir}/cpu.shares`);
    return String(n < 2n ? 2n : n > 262144n ? 262144n : n);
  },
  // tg_set_cfs_bandwidth: quota >= 1 ms; v1 also runs tg_cfs_schedulable_down over the whole tree, so a
  // child may not get more bandwidth than its parent, and a parent may not drop below a child.
  'cpu.cfs_quota_us': (v, { dir, read, children }) => {
    const path = `${dir}/cpu.cfs_quota_us`;
    const q = int(v, path);
    if (q < 0n) return '-1';
    if (q < 1000n) throw errno('EINVAL', path, 'quota below 1000 us');
    const ratio = Number(q) / Number(read(dir, 'cpu.cfs_period_us') ?? '100000');
    if (ratio > v1Ratio(parentOf(dir), read, true)) throw errno('EINVAL', path, "quota above the parent's");
    const below = (d: string, limit: number): boolean =>
      children(d).every((c) => {
        const own = v1Ratio(c, read, false);
        return own === Infinity ? below(c, limit) : own <= limit && below(c, own);
      });
    if (!below(dir, ratio)) throw errno('EINVAL', path, "quota below a child's");
    return String(q);
  },
  'cpu.cfs_period_us': (v, { dir }) => {
    const n = int(v, `${dir}/cpu.cfs_period_us`);
    if (n < 1000n || n > 1000000n) throw errno('EINVAL', `${dir}/cpu.cfs_period_us`, 'period out of range');
    return String(n);
  },
  // mem_cgroup_resize_max: limit <= memsw, and the usage must fit after reclaim.
  'memory.limit_in_bytes': (v, { dir, read }) => {
    const path = `${dir}/memory.limit_in_bytes`;
    const n = int(v, path);
    const limit = n < 0n ? V1_MEMORY_UNLIMITED : pageFloor(n);
    const memsw = read(dir, 'memory.memsw.limit_in_bytes');
    if (memsw !== null && limit > v1Mem(memsw)) throw errno('EINVAL', path, 'limit above memsw limit');
    const usage = read(dir, 'memory.usage_in_bytes');
    if (usage !== null && BigInt(usage.trim()) > limit)
      throw errno('EBUSY', path, 'usage above the new limit');
    return String(limit);
  },
  'memory.memsw.limit_in_bytes': (v, { dir, read }) => {
    const path = `${dir}/memory.memsw.limit_in_bytes`;
    const n = int(v, path);
    const memsw = n < 0n ? V1_MEMORY_UNLIMITED : pageFloor(n);
    if (memsw < v1Mem(read(dir, 'memory.limit_in_bytes'))) throw errno('EINVAL', path, 'memsw below limit');
    return String(memsw);
  },
  'cpu.max': (v, { dir, read }) => {
    const path = `${dir}/cpu.max`;
    const [max, period, ...rest] = v.split(/\s+/);
    const cur = (read(dir, 'cpu.max') ?? 'max 100000').trim().split(' ')[1] ?? '100000';
    if (max === undefined || rest.length > 0) throw errno('EINVAL', path, 'expected "$MAX [$PERIOD]"');
    const p = period === undefined ? BigInt(cur) : int(period, path);
    if (p < 1000n || p > 1000000n) throw errno('EINVAL', path, 'period out of range');
    if (max === 'max') return `max ${p}`;
    const q = int(max, path);
    if (q < 1000n) throw errno('EINVAL', path, 'quota below 1000 us');
    return `${q} ${p}`;
  },
  'cpu.weight': (v, { dir }) => {
    const n = int(v, `${dir}/cpu.weight`);
    if (n < 1n || n > 10000n) throw errno('ERANGE', `${dir}/cpu.weight`, 'weight out of 1..10000');
    return String(n);
  },
  ...Object.fromEntries(
    ['memory.max', 'memory.high', 'memory.swap.max', 'memory.low', 'memory.min'].map(
      (f): [string, WriteRule] => [
        f,
        (v, { dir }) => (v === 'max' ? 'max' : String(pageFloor(int(v, `${dir}/${f}`)))),
      ],
    ),
  ),
};

export function memCgroupFs(vol: Volume, opts: { kernelWrites?: boolean } = {}): CgroupFs {
  const p = vol.promises;
  const read = (dir: string, file: string): string | null =>
    vol.existsSync(`${dir}/${file}`) ? String(vol.readFileSync(`${dir}/${file}`, 'utf8')) : null;
  const children = (dir: string): string[] =>
    (vol.readdirSync(dir) as unknown[])
      .map((n) => `${dir}/${String(n)}`)
      .filter((c) => vol.lstatSync(c).isDirectory());
  return {
    readFile: async (path) => String(await p.readFile(path, 'utf8')),
    writeFile: async (path, data) => {
      if (opts.kernelWrites === false) return p.writeFile(path, data);
      // cgroupfs has a fixed set of files: writing a name that is not there fails instead of creating it.
      if (!vol.existsSync(path)) {
        throw Object.assign(new Error(`ENOENT: no such file or directory, open '${path}'`), {
          code: 'ENOENT',
          path,
        });
      }
      const file = path.slice(path.lastIndexOf('/') + 1);
      const rule = WRITE_RULES[file];
      const value = data.trim();
      const stored = rule ? rule(value, { dir: parentOf(path), read, children }) : value;
      await p.writeFile(path, `${stored}\n`);
    },
    readdir: async (path) => ((await p.readdir(path)) as unknown[]).map(String),
    lstat: (path) => p.lstat(path),
    realpath: async (path) => String(await p.realpath(path)),
  };
}

// ---------------------------------------------------------------------------------------------------------
// mountinfo

export interface MountinfoSpec {
  version: CgroupVersion;
  root?: string;
  v1Mounts?: 'separate' | 'comounted';
  hybridUnified?: boolean;
}

function v1MountDirs(root: string, how: 'separate' | 'comounted'): Record<Controller, string> {
  return how === 'comounted'
    ? { cpu: `${root}/cpu,cpuacct`, cpuacct: `${root}/cpu,cpuacct`, memory: `${root}/memory` }
    : { cpu: `${root}/cpu`, cpuacct: `${root}/cpuacct`, memory: `${root}/memory` };
}

export function mountinfoFor(spec: MountinfoSpec): string {
  const root = spec.root ?? CGROUP_ROOT;
  const lines = [
    '22 27 0:21 / /proc rw,relatime - proc proc rw',
    '23 27 0:22 / /sys rw,relatime - sysfs sysfs rw',
  ];
  if (spec.version === 'v2') {
    lines.push(
      `31 23 0:28 / ${root} rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot`,
    );
  } else {
    lines.push(`31 23 0:28 / ${root} rw,relatime - tmpfs tmpfs rw,mode=755`);
    const comounted = spec.v1Mounts === 'comounted';
    const hierarchies = comounted
      ? [
          ['cpu,cpuacct', 'cpu,cpuacct'],
          ['memory', 'memory'],
        ]
      : [
          ['cpu', 'cpu'],
          ['cpuacct', 'cpuacct'],
          ['memory', 'memory'],
        ];
    hierarchies.forEach(([dir, opts], i) =>
      lines.push(`${32 + i} 31 0:${29 + i} / ${root}/${dir} rw,relatime - cgroup cgroup rw,${opts}`),
    );
    lines.push(`40 31 0:37 / ${root}/systemd rw,relatime - cgroup cgroup rw,name=systemd`);
    if (spec.hybridUnified) lines.push(`41 31 0:38 / ${root}/unified rw,relatime - cgroup2 cgroup2 rw`);
  }
  return `${lines.join('\n')}\n`;
}

// ---------------------------------------------------------------------------------------------------------
// Kernel file formats

interface Usage {
  cpuUsageNs: bigint;
  nrPeriods: number;
  nrThrottled: number;
  throttledNs: bigint;
  memoryUsageBytes: bigint;
  inactiveFileBytes: bigint;
  rssBytes: bigint;
  oomKills: number;
}

const zeroUsage = (): Usage => ({
  cpuUsageNs: 0n,
  nrPeriods: 0,
  nrThrottled: 0,
  throttledNs: 0n,
  memoryUsageBytes: 0n,
  inactiveFileBytes: 0n,
  rssBytes: 0n,
  oomKills: 0,
});

const addUsage = (a: Usage, b: Usage): Usage => ({
  cpuUsageNs: a.cpuUsageNs + b.cpuUsageNs,
  nrPeriods: a.nrPeriods,
  nrThrottled: a.nrThrottled,
  throttledNs: a.throttledNs,
  memoryUsageBytes: a.memoryUsageBytes + b.memoryUsageBytes,
  inactiveFileBytes: a.inactiveFileBytes + b.inactiveFileBytes,
  rssBytes: a.rssBytes + b.rssBytes,
  oomKills: a.oomKills + b.oomKills,
});

const kv = (pairs: [string, bigint | number | string][]): string =>
  pairs.map(([k, v]) => `${k} ${v}\n`).join('');

/** v1 memory.stat (memcontrol.c memcg_stat_show): local counters, the hierarchical limits, then total_*. */
function v1MemoryStat(own: Usage, total: Usage, hierLimit: bigint, hierMemsw: bigint): string {
  const counters = (u: Usage): [string, bigint][] => {
    const cache = u.memoryUsageBytes > u.rssBytes ? u.memoryUsageBytes - u.rssBytes : 0n;
    return [
      ['cache', cache],
      ['rss', u.rssBytes],
      ['rss_huge', 0n],
      ['shmem', 0n],
      ['mapped_file', 0n],
      ['dirty', 0n],
      ['writeback', 0n],
      ['swap', 0n],
      ['pgpgin', 0n],
      ['pgpgout', 0n],
      ['pgfault', 0n],
      ['pgmajfault', 0n],
      ['inactive_anon', u.rssBytes],
      ['active_anon', 0n],
      ['inactive_file', u.inactiveFileBytes],
      ['active_file', cache > u.inactiveFileBytes ? cache - u.inactiveFileBytes : 0n],
      ['unevictable', 0n],
    ];
  };
  return kv([
    ...counters(own),
    ['hierarchical_memory_limit', hierLimit],
    ['hierarchical_memsw_limit', hierMemsw],
    ...counters(total).map(([k, v]): [string, bigint] => [`total_${k}`, v]),
  ]);
}

/** v2 memory.stat (cgroup-v2.rst "memory.stat"), always hierarchical; the keys of a 6.1 kernel, in order. */
function v2MemoryStat(u: Usage): string {
  const file = u.memoryUsageBytes > u.rssBytes ? u.memoryUsageBytes - u.rssBytes : 0n;
  const zero = (keys: string): [string, bigint][] => keys.split(' ').map((k) => [k, 0n]);
  return kv([
    ['anon', u.rssBytes],
    ['file', file],
    ...zero('kernel kernel_stack pagetables percpu sock vmalloc shmem zswap zswapped file_mapped file_dirty'),
    ...zero('file_writeback swapcached anon_thp file_thp shmem_thp'),
    ['inactive_anon', u.rssBytes],
    ['active_anon', 0n],
    ['inactive_file', u.inactiveFileBytes],
    ['active_file', file > u.inactiveFileBytes ? file - u.inactiveFileBytes : 0n],
    ...zero(
      'unevictable slab_reclaimable slab_unreclaimable slab workingset_refault_anon workingset_refault_file',
    ),
    ...zero(
      'workingset_activate_anon workingset_activate_file workingset_restore_anon workingset_restore_file',
    ),
    ...zero(
      'workingset_nodereclaim pgscan pgsteal pgscan_kswapd pgscan_direct pgsteal_kswapd pgsteal_direct',
    ),
    ...zero('pgfault pgmajfault pgrefill pgactivate pgdeactivate pglazyfree pglazyfreed thp_fault_alloc'),
    ...zero('thp_collapse_alloc'),
  ]);
}

/** v2 cpu.stat: usage is hierarchical, the bandwidth counters are this cgroup's own. */
const v2CpuStat = (own: Usage, total: Usage): string => {
  const us = (ns: bigint): bigint => ns / 1000n;
  return kv([
    ['usage_usec', us(total.cpuUsageNs)],
    ['user_usec', us((total.cpuUsageNs * 9n) / 10n)],
    ['system_usec', us(total.cpuUsageNs) - us((total.cpuUsageNs * 9n) / 10n)],
    ['nr_periods', own.nrPeriods],
    ['nr_throttled', own.nrThrottled],
    ['throttled_usec', us(own.throttledNs)],
    ['nr_bursts', 0],
    ['burst_usec', 0],
  ]);
};

const v2MemoryEvents = (oomKills: number): string =>
  kv([
    ['low', 0],
    ['high', 0],
    ['max', oomKills],
    ['oom', oomKills],
    ['oom_kill', oomKills],
    ['oom_group_kill', 0],
  ]);

// ---------------------------------------------------------------------------------------------------------
// The builder

interface Values {
  shares: number;
  /** v2 weight; the kernel default 100 for cgroups nobody configured (conmon). */
  weight: number;
  quotaUs: number | null;
  memoryLimit: bigint | null;
  /** v1: memsw limit (null = unlimited); v2: memory.swap.max text. */
  memsw: bigint | null;
  swapMax: string;
}

interface TreeNode {
  rel: CgroupPath;
  values: Values;
  own: Usage;
  pids: number[];
  children: TreeNode[];
}

const UNLIMITED: Omit<Values, 'shares' | 'weight'> = {
  quotaUs: null,
  memoryLimit: null,
  memsw: null,
  swapMax: 'max',
};

function totalOf(n: TreeNode): Usage {
  return n.children.reduce((acc, c) => addUsage(acc, totalOf(c)), { ...n.own });
}

const sandboxIdFor = (uid: string): string => createHash('sha256').update(`sandbox:${uid}`).digest('hex');
const schemeOf: Record<ContainerRuntime, string> = {
  containerd: 'containerd',
  crio: 'cri-o',
  docker: 'docker',
};
const sum = (xs: (number | bigint | null | undefined)[]): number =>
  xs.reduce<number>((a, x) => a + Number(x ?? 0), 0);
const sumBig = (xs: (bigint | null | undefined)[]): bigint => xs.reduce<bigint>((a, x) => a + (x ?? 0n), 0n);

export function buildNodeTree(spec: NodeTreeSpec): NodeTree {
  const version = spec.version;
  const period = spec.periodUs ?? 100_000;
  const runtimeFormula = spec.weightFormula ?? 'linear';
  const kubeletFormula = spec.podWeightFormula ?? runtimeFormula;
  const podsRoot = spec.podsRoot ?? DEFAULT_PODS_ROOT[spec.driver];
  const v1Mounts = spec.v1Mounts ?? 'separate';
  const mounts: Record<Controller, string> =
    version === 'v2'
      ? { cpu: CGROUP_ROOT, cpuacct: CGROUP_ROOT, memory: CGROUP_ROOT }
      : v1MountDirs(CGROUP_ROOT, v1Mounts);
  const layout: CgroupLayout = {
    controllers: {
      cpu: { version, mount: mounts.cpu },
      cpuacct: { version, mount: mounts.cpuacct },
      memory: { version, mount: mounts.memory },
    },
    driver: spec.driver,
    runtime: spec.runtime,
    weightFormula: runtimeFormula,
    podsRoot,
  };
  let nextPid = 1000;
  const pid = (): number => nextPid++;
  const kubelet = (shares: number, rest: Partial<Values> = {}): Values => ({
    ...UNLIMITED,
    shares,
    weight: weightFromShares(shares, kubeletFormula),
    ...rest,
  });
  const node = (
    rel: string,
    values: Values,
    children: TreeNode[] = [],
    own = zeroUsage(),
    pids: number[] = [],
  ): TreeNode => ({
    rel,
    values,
    own,
    pids,
    children,
  });

  // Leaves: containers (runc's values), the sandbox, CRI-O's conmon.
  const qosNodes: Record<QosClass, TreeNode[]> = { Guaranteed: [], Burstable: [], BestEffort: [] };
  const built: BuiltPod[] = [];
  const apiPods: PodLike[] = [];
  const crio = spec.runtime === 'crio';
  const conmonTemplate = spec.driver === 'systemd' ? 'crio-conmon-{id}.scope' : 'crio-conmon-{id}';
  for (const pod of spec.pods) {
    const podPath = podCgroupPath(layout, { uid: pod.uid, qos: pod.qos });
    const sandboxId = pod.sandboxId ?? sandboxIdFor(pod.uid);
    // CRI-O drops the infra container by default and spoofs its cgroup without `.scope` (see paths.ts).
    const sandboxDir = crio
      ? `crio-${sandboxId}`
      : CONTAINER_DIR_FORMATS[spec.driver][spec.runtime].replace('{id}', sandboxId);
    const children: TreeNode[] = [
      node(
        `${podPath}/${sandboxDir}`,
        { ...UNLIMITED, shares: 2, weight: 1 },
        [],
        zeroUsage(),
        crio ? [] : [pid()],
      ),
    ];
    const containers: BuiltContainer[] = [];
    pod.containers.forEach((c, i) => {
      const path = containerCgroupPath(layout, podPath, { id: c.id });
      const shares = sharesFromMillicores(c.cpuRequestMilli ?? null);
      const limit = c.memoryLimitBytes ?? null;
      children.push(
        node(
          path,
          {
            shares,
            weight: weightFromShares(shares, runtimeFormula),
            quotaUs: quotaFromMillicores(c.cpuLimitMilli ?? null, period),
            memoryLimit: limit,
            // runc sets memsw = limit when the spec gives no swap (observed in the v1 fixture); on v2 the
            // kubelet's NoSwap behaviour leaves containers with memory.swap.max 0 (v2 fixture).
            memsw: limit,
            swapMax: '0',
          },
          [],
          { ...zeroUsage(), ...c.usage },
          c.pids ?? [pid()],
        ),
      );
      const built: BuiltContainer = {
        id: c.id,
        name: c.name ?? `c${i}`,
        containerID: `${schemeOf[spec.runtime]}://${c.id}`,
        path,
      };
      if (crio) {
        built.conmonPath = `${podPath}/${conmonTemplate.replace('{id}', c.id)}`;
        children.push(
          node(built.conmonPath, { ...UNLIMITED, shares: 1024, weight: 100 }, [], zeroUsage(), [pid()]),
        );
      }
      containers.push(built);
    });
    // The kubelet's ResourceConfigForPod: shares from the summed requests; quota and memory limit only when
    // every container declares one.
    const cs = pod.containers;
    const allCpuLimits = cs.length > 0 && cs.every((c) => (c.cpuLimitMilli ?? 0) > 0);
    const allMemLimits = cs.length > 0 && cs.every((c) => (c.memoryLimitBytes ?? 0n) > 0n);
    const podValues = kubelet(sharesFromMillicores(sum(cs.map((c) => c.cpuRequestMilli))), {
      quotaUs: allCpuLimits ? quotaFromMillicores(sum(cs.map((c) => c.cpuLimitMilli)), period) : null,
      memoryLimit: allMemLimits ? sumBig(cs.map((c) => c.memoryLimitBytes)) : null,
    });
    qosNodes[pod.qos].push(node(podPath, podValues, children));
    built.push({
      uid: pod.uid,
      qos: pod.qos,
      name: pod.name ?? `pod${built.length}`,
      path: podPath,
      sandboxId,
      sandboxPath: `${podPath}/${sandboxDir}`,
      containers,
    });
    apiPods.push(apiPodOf(pod, containers, spec.runtime));
  }

  // QoS level and the pods root, as the kubelet's QoS container manager sets them.
  const burstableMilli = sum(
    spec.pods.filter((p) => p.qos === 'Burstable').flatMap((p) => p.containers.map((c) => c.cpuRequestMilli)),
  );
  const qosDir = (qos: 'Burstable' | 'BestEffort'): string =>
    podCgroupPath(layout, { uid: '00000000-0000-0000-0000-000000000000', qos })
      .split('/')
      .slice(0, -1)
      .join('/');
  const rootNode = node(
    podsRoot,
    kubelet(sharesFromMillicores(spec.allocatable?.cpuMilli ?? 2000), {
      memoryLimit: spec.allocatable?.memoryBytes ?? 8n << 30n,
    }),
    [
      ...qosNodes.Guaranteed,
      node(qosDir('Burstable'), kubelet(sharesFromMillicores(burstableMilli)), qosNodes.Burstable),
      node(qosDir('BestEffort'), kubelet(2), qosNodes.BestEffort),
    ],
  );
  // Directories above the pods root (a --cgroup-root or a test prefix) are plain cgroups.
  let top = rootNode;
  const segs = podsRoot.split('/');
  for (let i = segs.length - 1; i > 0; i--) top = node(segs.slice(0, i).join('/'), kubelet(1024), [top]);

  const files: Record<string, string> = {};
  if (version === 'v2') {
    files[`${CGROUP_ROOT}/cgroup.controllers`] = `${V2_CONTROLLERS}\n`;
    files[`${CGROUP_ROOT}/cgroup.subtree_control`] = `${V2_CONTROLLERS}\n`;
    writeV2(files, top, V2_CONTROLLERS, period);
  } else {
    writeV1(
      files,
      mounts,
      top,
      { limit: V1_MEMORY_UNLIMITED, memsw: V1_MEMORY_UNLIMITED },
      spec.swapAccounting ?? true,
      period,
    );
    if (spec.hybridUnified) {
      files[`${CGROUP_ROOT}/unified/cgroup.controllers`] = '\n';
      files[`${CGROUP_ROOT}/unified/cgroup.procs`] = '';
    }
  }
  const vol = Volume.fromJSON(files);
  // mountinfoFor lists the named v1 `name=systemd` hierarchy; give it its directory.
  if (version === 'v1') vol.mkdirSync(`${CGROUP_ROOT}/systemd`, { recursive: true });
  if (version === 'v1' && v1Mounts === 'comounted') {
    // The usual distro layout: the hierarchy is mounted at cpu,cpuacct and cpu, cpuacct are symlinks to it.
    vol.symlinkSync('cpu,cpuacct', `${CGROUP_ROOT}/cpu`);
    vol.symlinkSync('cpu,cpuacct', `${CGROUP_ROOT}/cpuacct`);
  }
  return {
    vol,
    fs: memCgroupFs(vol),
    layout,
    mountinfo: mountinfoFor({ version, v1Mounts, hybridUnified: spec.hybridUnified ?? false }),
    pods: built,
    apiPods,
  };
}

function writeV1(
  files: Record<string, string>,
  mounts: Record<Controller, string>,
  n: TreeNode,
  parentHier: { limit: bigint; memsw: bigint },
  swapAccounting: boolean,
  period: number,
): void {
  const v = n.values;
  const total = totalOf(n);
  const put = (c: Controller, f: string, content: string): void => {
    files[`${mounts[c]}/${n.rel}/${f}`] = content;
  };
  const limit = v.memoryLimit ?? V1_MEMORY_UNLIMITED;
  const memsw = v.memsw ?? V1_MEMORY_UNLIMITED;
  const hier = {
    limit: limit < parentHier.limit ? limit : parentHier.limit,
    memsw: memsw < parentHier.memsw ? memsw : parentHier.memsw,
  };
  const procs = n.pids.map((p) => `${p}\n`).join('');
  for (const c of ['cpu', 'cpuacct', 'memory'] as const) {
    put(c, 'cgroup.procs', procs);
    put(c, 'tasks', procs);
    put(c, 'notify_on_release', '0\n');
    put(c, 'cgroup.clone_children', '0\n');
  }
  put('cpu', 'cpu.shares', `${v.shares}\n`);
  put('cpu', 'cpu.cfs_quota_us', `${v.quotaUs ?? -1}\n`);
  put('cpu', 'cpu.cfs_period_us', `${period}\n`);
  put(
    'cpu',
    'cpu.stat',
    kv([
      ['nr_periods', n.own.nrPeriods],
      ['nr_throttled', n.own.nrThrottled],
      ['throttled_time', n.own.throttledNs],
      ['nr_bursts', 0],
      ['burst_time', 0],
    ]),
  );
  put('cpuacct', 'cpuacct.usage', `${total.cpuUsageNs}\n`);
  // USER_HZ ticks (100 per second).
  const ticks = total.cpuUsageNs / 10_000_000n;
  put(
    'cpuacct',
    'cpuacct.stat',
    kv([
      ['user', (ticks * 9n) / 10n],
      ['system', ticks - (ticks * 9n) / 10n],
    ]),
  );
  put('memory', 'memory.limit_in_bytes', `${limit}\n`);
  if (swapAccounting) {
    put('memory', 'memory.memsw.limit_in_bytes', `${memsw}\n`);
    put('memory', 'memory.memsw.usage_in_bytes', `${total.memoryUsageBytes}\n`);
  }
  put('memory', 'memory.usage_in_bytes', `${total.memoryUsageBytes}\n`);
  put('memory', 'memory.max_usage_in_bytes', `${total.memoryUsageBytes}\n`);
  put('memory', 'memory.stat', v1MemoryStat(n.own, total, hier.limit, hier.memsw));
  put(
    'memory',
    'memory.oom_control',
    kv([
      ['oom_kill_disable', 0],
      ['under_oom', 0],
      ['oom_kill', n.own.oomKills],
    ]),
  );
  put('memory', 'memory.failcnt', '0\n');
  put('memory', 'memory.use_hierarchy', '1\n');
  put('memory', 'memory.soft_limit_in_bytes', `${V1_MEMORY_UNLIMITED}\n`);
  for (const c of n.children) writeV1(files, mounts, c, hier, swapAccounting, period);
}

function writeV2(files: Record<string, string>, n: TreeNode, enabledByParent: string, period: number): void {
  const v = n.values;
  const total = totalOf(n);
  const put = (f: string, content: string): void => {
    files[`${CGROUP_ROOT}/${n.rel}/${f}`] = content;
  };
  const leaf = n.children.length === 0;
  put('cgroup.controllers', `${enabledByParent}\n`);
  // The "no internal processes" rule: only leaves hold processes and only inner nodes enable controllers.
  put('cgroup.subtree_control', leaf ? '\n' : `${enabledByParent}\n`);
  put('cgroup.procs', n.pids.map((p) => `${p}\n`).join(''));
  put('cgroup.type', 'domain\n');
  put('cgroup.events', `populated ${total.memoryUsageBytes > 0n || n.pids.length > 0 ? 1 : 0}\nfrozen 0\n`);
  put('cpu.max', `${v.quotaUs ?? 'max'} ${period}\n`);
  put('cpu.weight', `${v.weight}\n`);
  put('cpu.weight.nice', '0\n');
  put('cpu.stat', v2CpuStat(n.own, total));
  put('memory.max', `${v.memoryLimit ?? 'max'}\n`);
  put('memory.high', 'max\n');
  put('memory.low', '0\n');
  put('memory.min', '0\n');
  put('memory.swap.max', `${v.swapMax}\n`);
  put('memory.current', `${total.memoryUsageBytes}\n`);
  put('memory.swap.current', '0\n');
  put('memory.stat', v2MemoryStat(total));
  put('memory.events', v2MemoryEvents(total.oomKills));
  put('memory.events.local', v2MemoryEvents(n.own.oomKills));
  put('pids.max', 'max\n');
  for (const c of n.children) writeV2(files, c, enabledByParent, period);
}

function apiPodOf(pod: TreePodSpec, containers: BuiltContainer[], _runtime: ContainerRuntime): PodLike {
  const q = (entries: [string, string | undefined][]): Record<string, string> =>
    Object.fromEntries(entries.filter((e): e is [string, string] => e[1] !== undefined));
  const milli = (m: number | null | undefined): string | undefined => (m ? `${m}m` : undefined);
  const bytes = (b: bigint | null | undefined): string | undefined => (b ? String(b) : undefined);
  return {
    metadata: { uid: pod.uid, name: pod.name ?? pod.uid.slice(0, 8), namespace: pod.namespace ?? 'default' },
    spec: {
      containers: pod.containers.map((c, i) => ({
        name: containers[i]?.name ?? `c${i}`,
        resources: {
          requests: q([
            ['cpu', milli(c.cpuRequestMilli)],
            ['memory', bytes(c.memoryRequestBytes)],
          ]),
          limits: q([
            ['cpu', milli(c.cpuLimitMilli)],
            ['memory', bytes(c.memoryLimitBytes)],
          ]),
        },
      })),
    },
    status: {
      qosClass: pod.qos,
      containerStatuses: containers.map((c) => ({ name: c.name, containerID: c.containerID })),
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// Real-node fixtures

const fixture = (rel: string): string => readFileSync(new URL(`../fixtures/${rel}`, import.meta.url), 'utf8');

/**
 * test/fixtures/real-node-v1-cgroupfs as a tree. The recording kept the files that matter and not
 * `cgroup.procs`; an empty one is added per directory so the tree looks like cgroupfs (every cgroup has it).
 */
export function loadV1Fixture(): FixtureNode {
  const data = JSON.parse(fixture('real-node-v1-cgroupfs/cgroups.json')) as {
    files: Record<string, Record<string, string>>;
  };
  const files: Record<string, string> = {};
  for (const [dir, entries] of Object.entries(data.files)) {
    files[`${CGROUP_ROOT}/${dir}/cgroup.procs`] = '';
    for (const [name, content] of Object.entries(entries)) files[`${CGROUP_ROOT}/${dir}/${name}`] = content;
  }
  const vol = Volume.fromJSON(files);
  const mounts = v1MountDirs(CGROUP_ROOT, 'separate');
  const pods = JSON.parse(fixture('real-node-v1-cgroupfs/pods.json')) as { items: PodLike[] };
  return {
    vol,
    fs: memCgroupFs(vol),
    layout: {
      controllers: {
        cpu: { version: 'v1', mount: mounts.cpu },
        cpuacct: { version: 'v1', mount: mounts.cpuacct },
        memory: { version: 'v1', mount: mounts.memory },
      },
      driver: 'cgroupfs',
      runtime: 'containerd',
      weightFormula: 'linear',
      podsRoot: 'kubepods',
    },
    mountinfo: mountinfoFor({ version: 'v1', v1Mounts: 'separate' }),
    apiPods: pods.items,
  };
}

interface V2Cgroup {
  path: string;
  files: Record<string, string>;
  procs: number[];
  subtree?: string;
  role?: 'container' | 'pause';
}

/** Parse pod-cgroups.txt (see its README): `== path: k=v ...` QoS lines, then `#### pod` sections. */
function parseV2Recording(text: string): {
  cgroups: V2Cgroup[];
  pods: { name: string; qos: QosClass; uid: string; containerDirs: string[] }[];
} {
  const cgroups: V2Cgroup[] = [];
  const pods: { name: string; qos: QosClass; uid: string; containerDirs: string[] }[] = [];
  let current: V2Cgroup | null = null;
  let podDir = '';
  for (const line of text.split('\n')) {
    if (line.startsWith('Unit ')) break; // the systemd-cgls dump that follows adds nothing to the tree
    let m: RegExpExecArray | null;
    if ((m = /^== (\S+): cpu\.max=(.+?) cpu\.weight=(\d+) memory\.max=(\S+) subtree=(.*)$/.exec(line))) {
      cgroups.push({
        path: m[1]!,
        files: { 'cpu.max': m[2]!, 'cpu.weight': m[3]!, 'memory.max': m[4]! },
        procs: [],
        subtree: m[5]!.trim(),
      });
    } else if ((m = /^#### pod (\S+) qos=(\S+) uid=(\S+)/.exec(line))) {
      pods.push({ name: m[1]!, qos: m[2] as QosClass, uid: m[3]!, containerDirs: [] });
    } else if ((m = /^ {2}pod cgroup: \/sys\/fs\/cgroup\/(\S+)/.exec(line))) {
      podDir = m[1]!;
      current = { path: podDir, files: {}, procs: [] };
      cgroups.push(current);
    } else if ((m = /^ {2}\[(container|pause)\] (\S+)/.exec(line))) {
      current = { path: `${podDir}/${m[2]}`, files: {}, procs: [], role: m[1] as 'container' | 'pause' };
      cgroups.push(current);
      if (m[1] === 'container') pods.at(-1)?.containerDirs.push(m[2]!);
    } else if ((m = /^ {4}cgroup\.procs: (.*)$/.exec(line)) && current) {
      current.procs = m[1]!.trim().split(/\s+/).filter(Boolean).map(Number);
    } else if ((m = /^ {4}(\S+) +(.+)$/.exec(line)) && current) {
      current.files[m[1]!] = m[2]!.trim();
    }
  }
  return { cgroups, pods };
}

/** The resources in pods.yaml (flow-style maps, one container per pod), by pod name. */
function parseV2PodsYaml(
  text: string,
): Map<string, { container: string; requests: Record<string, string>; limits: Record<string, string> }> {
  const flow = (s: string | undefined): Record<string, string> =>
    Object.fromEntries(
      (s ?? '')
        .split(',')
        .map((kv) => kv.split(':').map((x) => x.trim()))
        .filter((p) => p.length === 2 && p[0]) as [string, string][],
    );
  const out = new Map<
    string,
    { container: string; requests: Record<string, string>; limits: Record<string, string> }
  >();
  for (const doc of text.split(/^---$/m)) {
    const name = /metadata: \{name: ([^,}]+)/.exec(doc)?.[1]?.trim();
    const container = /- name: (\S+)/.exec(doc)?.[1];
    if (!name || !container) continue;
    out.set(name, {
      container,
      requests: flow(/requests: \{([^}]*)\}/.exec(doc)?.[1]),
      limits: flow(/limits: \{([^}]*)\}/.exec(doc)?.[1]),
    });
  }
  return out;
}

/**
 * test/fixtures/real-node-v2-systemd as a tree. Recorded: cpu.max, cpu.weight, memory.max, memory.high,
 * memory.swap.max, memory.min, pids.max, cgroup.procs, the QoS slices' subtree_control. Synthesized with zero
 * counters: cpu.stat, memory.current, memory.stat, memory.events, cgroup.controllers, the pod slices'
 * subtree_control (their containers have cpu.max, so cpu and memory were enabled there).
 */
export function loadV2Fixture(): FixtureNode {
  const rec = parseV2Recording(fixture('real-node-v2-systemd/pod-cgroups.txt'));
  const yaml = parseV2PodsYaml(fixture('real-node-v2-systemd/pods.yaml'));
  const rootSubtree =
    /^== root subtree_control: (.*)$/m.exec(fixture('real-node-v2-systemd/pod-cgroups.txt'))?.[1]?.trim() ??
    V2_CONTROLLERS;
  const files: Record<string, string> = {
    [`${CGROUP_ROOT}/cgroup.controllers`]: `${rootSubtree}\n`,
    [`${CGROUP_ROOT}/cgroup.subtree_control`]: `${rootSubtree}\n`,
  };
  for (const cg of rec.cgroups) {
    const dir = `${CGROUP_ROOT}/${cg.path}`;
    const leaf = cg.role !== undefined;
    for (const [k, v] of Object.entries(cg.files)) files[`${dir}/${k}`] = `${v}\n`;
    files[`${dir}/cgroup.controllers`] = `${rootSubtree}\n`;
    files[`${dir}/cgroup.subtree_control`] = leaf ? '\n' : `${cg.subtree ?? rootSubtree}\n`;
    files[`${dir}/cgroup.procs`] = cg.procs.map((p) => `${p}\n`).join('');
    files[`${dir}/cpu.stat`] = v2CpuStat(zeroUsage(), zeroUsage());
    files[`${dir}/memory.current`] = '0\n';
    files[`${dir}/memory.stat`] = v2MemoryStat(zeroUsage());
    files[`${dir}/memory.events`] = v2MemoryEvents(0);
  }
  const apiPods: PodLike[] = rec.pods.map((p) => {
    const y = yaml.get(p.name);
    const ids = p.containerDirs.map((d) => /^cri-containerd-([0-9a-f]{64})\.scope$/.exec(d)?.[1] ?? d);
    return {
      metadata: { uid: p.uid, name: p.name, namespace: 'default' },
      spec: {
        containers: [
          {
            name: y?.container ?? p.name,
            resources: { requests: y?.requests ?? {}, limits: y?.limits ?? {} },
          },
        ],
      },
      status: {
        qosClass: p.qos,
        containerStatuses: ids.map((id) => ({
          name: y?.container ?? p.name,
          containerID: `containerd://${id}`,
        })),
      },
    };
  });
  const vol = Volume.fromJSON(files);
  return {
    vol,
    fs: memCgroupFs(vol),
    layout: {
      controllers: {
        cpu: { version: 'v2', mount: CGROUP_ROOT },
        cpuacct: { version: 'v2', mount: CGROUP_ROOT },
        memory: { version: 'v2', mount: CGROUP_ROOT },
      },
      driver: 'systemd',
      runtime: 'containerd',
      weightFormula: 'linear',
      podsRoot: 'kubepods.slice',
    },
    mountinfo: mountinfoFor({ version: 'v2' }),
    apiPods,
  };
}
