// The vocabulary shared by every part of the cgroup layer. Pure types and `as const` tables only: no I/O.
//
// Values are kept in the kernel's own units (microseconds, shares/weight, bytes) once they leave the
// planner; Kubernetes units (millicores, bytes as requested) only appear in `DesiredResources`.

export const CgroupVersions = ['v1', 'v2'] as const;
export type CgroupVersion = (typeof CgroupVersions)[number];

export const CgroupDrivers = ['cgroupfs', 'systemd'] as const;
export type CgroupDriver = (typeof CgroupDrivers)[number];

export const ContainerRuntimes = ['containerd', 'crio', 'docker'] as const;
export type ContainerRuntime = (typeof ContainerRuntimes)[number];

export const QosClasses = ['Guaranteed', 'Burstable', 'BestEffort'] as const;
export type QosClass = (typeof QosClasses)[number];

/** How cgroup v2 `cpu.weight` is derived from v1 shares: the kubelet/old runc linear map, or newer runc/crun's. */
export const WeightFormulas = ['linear', 'quadratic'] as const;
export type WeightFormula = (typeof WeightFormulas)[number];

/** The controllers resizelet reads or writes. cpuacct only exists on v1 (on v2 `cpu.stat` carries usage). */
export const Controllers = ['cpu', 'cpuacct', 'memory'] as const;
export type Controller = (typeof Controllers)[number];

/** Where one controller lives on this node. */
export interface ControllerMount {
  version: CgroupVersion;
  /** Absolute directory of the hierarchy that holds this controller, e.g. /sys/fs/cgroup/memory or /sys/fs/cgroup. */
  mount: string;
}

/** Everything the layer needs to know about a node's cgroups; produced by detection, overridable by config. */
export interface CgroupLayout {
  controllers: Record<Controller, ControllerMount>;
  driver: CgroupDriver;
  runtime: ContainerRuntime;
  weightFormula: WeightFormula;
  /**
   * The kubelet's top-level pods cgroup relative to each hierarchy's mount: `kubepods` (cgroupfs) or
   * `kubepods.slice` (systemd). Tests and nodes with a custom --cgroup-root prefix it, e.g.
   * `resizelet-test-ab12/kubepods`.
   */
  podsRoot: string;
}

/** A cgroup directory relative to each controller's mount (the same relative path in every v1 hierarchy). */
export type CgroupPath = string;

/** Current settings of one cgroup, in kernel units. `null` means unlimited (`-1`, `max`, the v1 page-max). */
export interface CgroupSettings {
  cpuQuotaUs: number | null;
  cpuPeriodUs: number;
  /** v1 `cpu.shares`; on v2 the shares value the live `cpu.weight` corresponds to (see convert.ts). */
  cpuShares: number;
  /** v2 only: the raw `cpu.weight`. */
  cpuWeight?: number;
  memoryLimitBytes: bigint | null;
  /** v1 only: `memory.memsw.limit_in_bytes` when the file exists (swap accounting enabled). */
  memswLimitBytes?: bigint | null;
}

/** Usage counters of one cgroup, in the units cAdvisor reports before scaling. */
export interface CgroupUsage {
  cpuUsageNs: bigint;
  nrPeriods: number;
  nrThrottled: number;
  throttledNs: bigint;
  memoryUsageBytes: bigint;
  /** usage minus inactive_file, floored at 0 (cAdvisor's and the kubelet's definition). */
  workingSetBytes: bigint;
  rssBytes: bigint;
  oomKills: number;
}

export interface CgroupReading {
  path: CgroupPath;
  settings: CgroupSettings;
  usage: CgroupUsage;
}

/** What Kubernetes asks for one container, in Kubernetes units. `null` limit = none set. */
export interface DesiredResources {
  cpuRequestMilli: number | null;
  cpuLimitMilli: number | null;
  memoryRequestBytes: bigint | null;
  memoryLimitBytes: bigint | null;
}

/** One file write in a plan. `value` is the exact string written; `previous` is what the file held. */
export interface CgroupWrite {
  level: 'pod' | 'container';
  /** Container name for container-level writes; undefined at pod level. */
  container?: string;
  path: CgroupPath;
  controller: Controller;
  file: string;
  value: string;
  previous: string;
  /** Why this write is at this position in the plan (e.g. "raise memsw before limit"). */
  reason: string;
}

export const PlanRefusalCodes = {
  WOULD_OOM: 'RESIZELET_ERR_WOULD_OOM',
  INVALID_DESIRED: 'RESIZELET_ERR_INVALID_DESIRED',
} as const;
export type PlanRefusalCode = (typeof PlanRefusalCodes)[keyof typeof PlanRefusalCodes];

export interface PlanRefusal {
  ok: false;
  code: PlanRefusalCode;
  message: string;
  container?: string;
}

export interface Plan {
  ok: true;
  writes: CgroupWrite[];
}

export const WriteErrorCodes = {
  CGROUP_MISSING: 'RESIZELET_ERR_CGROUP_MISSING',
  BUSY: 'RESIZELET_ERR_CGROUP_BUSY',
  INVALID: 'RESIZELET_ERR_CGROUP_INVALID',
  PERMISSION: 'RESIZELET_ERR_CGROUP_PERMISSION',
  READBACK_MISMATCH: 'RESIZELET_ERR_READBACK_MISMATCH',
  PATH_UNSAFE: 'RESIZELET_ERR_PATH_UNSAFE',
  IO: 'RESIZELET_ERR_CGROUP_IO',
} as const;
export type WriteErrorCode = (typeof WriteErrorCodes)[keyof typeof WriteErrorCodes];

export interface WriteResult {
  write: CgroupWrite;
  status: 'written' | 'unchanged' | 'failed' | 'restored' | 'restore-failed' | 'skipped';
  error?: { code: WriteErrorCode; message: string };
}

export interface ExecutionResult {
  ok: boolean;
  results: WriteResult[];
  /** The first failure, when ok is false. */
  error?: { code: WriteErrorCode; message: string; write: CgroupWrite };
}

/**
 * The small slice of `node:fs/promises` the layer uses, so tests hand it memfs or a faulty fs.
 * Paths are absolute.
 */
export interface CgroupFs {
  readFile(path: string, encoding: 'utf8'): Promise<string>;
  writeFile(path: string, data: string): Promise<void>;
  readdir(path: string): Promise<string[]>;
  /** `dev` and `ino` identify a directory already proven safe (paths.ts); without them it is re-proven. */
  lstat(path: string): Promise<{
    isDirectory(): boolean;
    isSymbolicLink(): boolean;
    dev?: number | bigint;
    ino?: number | bigint;
  }>;
  realpath(path: string): Promise<string>;
}
