// Real cgroup v1 sandboxes for tests that need the kernel: a private root in each of the cpu, cpuacct and
// memory hierarchies, pods and containers laid out as the kubelet (cgroupfs driver) and containerd would,
// and child processes placed in them before they start working.
//
// Safety: everything lives under `/sys/fs/cgroup/<hierarchy>/resizelet-test-<pid>-<random>`, a name no
// kubelet, runtime or systemd ever uses; only processes spawned here are moved or killed; cleanup removes
// only that root, bottom-up, and runs from afterAll and again on process exit.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, realpathSync, rmdirSync, statSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { containerCgroupPath, podCgroupPath } from '../../cgroup/paths.ts';
import { readCgroup } from '../../cgroup/reader.ts';
import { parseFlatKeyed } from '../../cgroup/resources.ts';
import type {
  CgroupFs,
  CgroupLayout,
  CgroupPath,
  CgroupReading,
  CgroupSettings,
  Controller,
  QosClass,
} from '../../cgroup/types.ts';

const CGROUP_ROOT = '/sys/fs/cgroup';
const HIERARCHIES = ['cpu', 'cpuacct', 'memory'] as const satisfies readonly Controller[];
/** A file only the root of a v1 hierarchy carrying that controller has (v2 has none of them). */
const V1_MARKER: Record<(typeof HIERARCHIES)[number], string> = {
  cpu: 'cpu.shares',
  cpuacct: 'cpuacct.usage',
  memory: 'memory.limit_in_bytes',
};

/** The children the tests run, by role. */
export const TEST_SCRIPTS = {
  burnCpu: fileURLToPath(new URL('./burn-cpu.mjs', import.meta.url)),
  holdMemory: fileURLToPath(new URL('./hold-memory.mjs', import.meta.url)),
} as const;

/** The CgroupFs port on the real filesystem. */
export const nodeCgroupFs: CgroupFs = {
  readFile: (path) => fsp.readFile(path, 'utf8'),
  writeFile: (path, data) => fsp.writeFile(path, data),
  readdir: (path) => fsp.readdir(path),
  lstat: (path) => fsp.lstat(path),
  realpath: (path) => fsp.realpath(path),
};

const uniqueName = (prefix: string) => `${prefix}-${process.pid}-${randomBytes(4).toString('hex')}`;

/**
 * Whether this process may build real v1 sandboxes: root, and the cpu, cpuacct and memory hierarchies
 * mounted as v1 and writable (proved by creating and removing a probe directory in each).
 */
export function realCgroupsAvailable(): { ok: boolean; reason?: string } {
  if (process.platform !== 'linux') return { ok: false, reason: `not Linux (${process.platform})` };
  const uid = process.getuid?.();
  if (uid !== 0) return { ok: false, reason: `needs root to write cgroups (running as uid ${uid})` };
  for (const h of HIERARCHIES) {
    const mount = `${CGROUP_ROOT}/${h}`;
    try {
      statSync(`${mount}/${V1_MARKER[h]}`);
    } catch {
      return { ok: false, reason: `${mount} is not a cgroup v1 ${h} hierarchy (no ${V1_MARKER[h]})` };
    }
    const probe = `${mount}/${uniqueName('resizelet-probe')}`;
    try {
      mkdirSync(probe);
      rmdirSync(probe);
    } catch (err) {
      return { ok: false, reason: `cannot create a cgroup in ${mount}: ${(err as Error).message}` };
    }
  }
  return { ok: true };
}

export interface SandboxChild {
  pid: number;
  process: ChildProcess;
  /** The line the child printed when ready, e.g. `ready 67108864`. */
  readyLine: string;
  alive(): boolean;
}

export interface RealSandbox {
  /** `resizelet-test-<pid>-<random>`, the sandbox root in every hierarchy. */
  name: string;
  layout: CgroupLayout;
  fs: CgroupFs;
  /** Creates the pod cgroup (and its QoS parent) in every hierarchy with the kubelet's pod-level values. */
  makePod(uid: string, qos: QosClass, settings?: Partial<CgroupSettings>): Promise<CgroupPath>;
  /** Creates a container cgroup (64-hex id) in every hierarchy with the values runc would write. */
  makeContainer(podPath: CgroupPath, id: string, settings?: Partial<CgroupSettings>): Promise<CgroupPath>;
  /** Starts `node script ...args`, moves it into `path` in every hierarchy, then lets it start; resolves when it prints "ready". */
  spawnInCgroup(path: CgroupPath, script: string, args?: string[]): Promise<SandboxChild>;
  /** Settings and usage through the project's reader. */
  read(path: CgroupPath): Promise<CgroupReading>;
  readText(controller: Controller, path: CgroupPath, file: string): Promise<string>;
  /** `cpu.stat` of a cgroup as numbers. */
  cpuStat(path: CgroupPath): Promise<{ nrPeriods: number; nrThrottled: number; throttledNs: bigint }>;
  /** Kills the children it started, waits for them, removes the sandbox bottom-up. Idempotent. */
  cleanup(): Promise<void>;
}

/** A fresh 64-hex container ID and a pod UID, for tests that need several. */
export const newContainerId = (): string => randomBytes(32).toString('hex');
export const newPodUid = (): string => randomUUID();

/** CPU time (user + system) of a process in ms, from /proc/<pid>/stat at CLK_TCK = 100. */
export function cpuTimeMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may contain spaces and parentheses: fields restart after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
  const ticks = Number(fields[11]) + Number(fields[12]);
  return ticks * 10;
}

export interface SandboxOptions {
  /**
   * `cpu.shares` of the sandbox root. The kubelet gives `kubepods` the node's allocatable CPU in shares so pods
   * outrank system daemons; likewise a high weight here keeps unrelated busy processes on a small CI machine
   * from skewing CPU measurements. Quotas, what the tests are about, still cap every child.
   */
  rootCpuShares?: number;
}

export async function createRealSandbox(options: SandboxOptions = {}): Promise<RealSandbox> {
  const name = uniqueName('resizelet-test');
  // With cpu and cpuacct co-mounted (/sys/fs/cgroup/cpu -> cpu,cpuacct) two names share one hierarchy:
  // create, join and remove each real directory once.
  const mounts = [...new Set(HIERARCHIES.map((h) => realpathSync(`${CGROUP_ROOT}/${h}`)))];
  const children = new Set<ChildProcess>();
  const layout: CgroupLayout = {
    controllers: {
      cpu: { version: 'v1', mount: `${CGROUP_ROOT}/cpu` },
      cpuacct: { version: 'v1', mount: `${CGROUP_ROOT}/cpuacct` },
      memory: { version: 'v1', mount: `${CGROUP_ROOT}/memory` },
    },
    driver: 'cgroupfs',
    runtime: 'containerd',
    weightFormula: 'linear',
    podsRoot: `${name}/kubepods`,
  };

  const onExit = () => cleanupSync(mounts, name, children);
  process.once('exit', onExit);
  for (const m of mounts) mkdirSync(`${m}/${layout.podsRoot}`, { recursive: true });
  await fsp.writeFile(`${CGROUP_ROOT}/cpu/${name}/cpu.shares`, String(options.rootCpuShares ?? 10_240));

  const file = (controller: Controller, path: CgroupPath, f: string) =>
    `${layout.controllers[controller].mount}/${path}/${f}`;
  const write = (controller: Controller, path: CgroupPath, f: string, value: string) =>
    fsp.writeFile(file(controller, path, f), value);

  /** Writes in the order the kubelet/runc do on a fresh (unlimited) cgroup: a lowered limit before memsw. */
  async function apply(path: CgroupPath, s: Partial<CgroupSettings>, isContainer: boolean) {
    if (s.cpuPeriodUs !== undefined) await write('cpu', path, 'cpu.cfs_period_us', String(s.cpuPeriodUs));
    if (s.cpuShares !== undefined) await write('cpu', path, 'cpu.shares', String(s.cpuShares));
    if (s.cpuQuotaUs !== undefined) await write('cpu', path, 'cpu.cfs_quota_us', String(s.cpuQuotaUs ?? -1));
    if (s.memoryLimitBytes !== undefined) {
      await write('memory', path, 'memory.limit_in_bytes', String(s.memoryLimitBytes ?? -1));
    }
    // runc sets a container's memsw equal to its limit (no swap) when the file exists; the kubelet leaves the
    // pod level's alone.
    const memsw =
      s.memswLimitBytes !== undefined ? s.memswLimitBytes : isContainer ? s.memoryLimitBytes : undefined;
    if (memsw !== undefined && (await exists(file('memory', path, 'memory.memsw.limit_in_bytes')))) {
      await write('memory', path, 'memory.memsw.limit_in_bytes', String(memsw ?? -1));
    }
  }

  let cleaned = false;
  const sandbox: RealSandbox = {
    name,
    layout,
    fs: nodeCgroupFs,

    async makePod(uid, qos, settings = {}) {
      const path = podCgroupPath(layout, { uid, qos });
      for (const m of mounts) await fsp.mkdir(`${m}/${path}`, { recursive: true });
      await apply(path, settings, false);
      return path;
    },

    async makeContainer(podPath, id, settings = {}) {
      const path = containerCgroupPath(layout, podPath, { id });
      for (const m of mounts) await fsp.mkdir(`${m}/${path}`);
      await apply(path, settings, true);
      return path;
    },

    async spawnInCgroup(path, script, args = []) {
      const child = spawn(process.execPath, [script, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
      children.add(child);
      await once(child, 'spawn');
      const pid = child.pid!;
      // Join every hierarchy before the child does any work: v1 memory charges stay with the cgroup a page
      // was first touched in, and CPU time before the move would not count against the quota.
      for (const m of mounts) await fsp.writeFile(`${m}/${path}/cgroup.procs`, String(pid));
      const lines = createInterface({ input: child.stdout! });
      const ready = new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${script} not ready after 10 s`)), 10_000);
        lines.once('line', (line) => {
          clearTimeout(timer);
          resolve(line);
        });
        child.once('exit', (code, signal) => {
          clearTimeout(timer);
          reject(new Error(`${script} exited before ready (code ${code}, signal ${signal})`));
        });
      });
      child.stdin!.write('go\n');
      const readyLine = await ready;
      return {
        pid,
        process: child,
        readyLine,
        alive: () => child.exitCode === null && child.signalCode === null,
      };
    },

    read: (path) => readCgroup(nodeCgroupFs, layout, path),
    readText: (controller, path, f) => fsp.readFile(file(controller, path, f), 'utf8'),

    async cpuStat(path) {
      const m = parseFlatKeyed('cpu.stat', await fsp.readFile(file('cpu', path, 'cpu.stat'), 'utf8'));
      return {
        nrPeriods: Number(m.get('nr_periods') ?? 0n),
        nrThrottled: Number(m.get('nr_throttled') ?? 0n),
        throttledNs: m.get('throttled_time') ?? 0n,
      };
    },

    async cleanup() {
      if (cleaned) return;
      for (const child of children) {
        if (child.exitCode === null && child.signalCode === null) {
          const exited = once(child, 'exit');
          child.kill('SIGKILL');
          await exited;
        }
      }
      children.clear();
      for (const m of mounts) await removeTree(`${m}/${name}`);
      cleaned = true;
      process.removeListener('exit', onExit);
    },
  };
  return sandbox;
}

async function exists(path: string): Promise<boolean> {
  try {
    await fsp.access(path);
    return true;
  } catch {
    return false;
  }
}

/** Directories under `root`, deepest first (cgroup directories only hold files the kernel owns). */
function subdirsBottomUp(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) if (e.isDirectory()) walk(`${dir}/${e.name}`);
    out.push(dir);
  };
  walk(root);
  return out;
}

/** rmdir bottom-up; a cgroup whose last task is still exiting answers EBUSY for a moment, so retry briefly. */
async function removeTree(root: string): Promise<void> {
  for (const dir of subdirsBottomUp(root)) {
    for (let attempt = 0; ; attempt++) {
      try {
        await fsp.rmdir(dir);
        break;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') break;
        if (code !== 'EBUSY' || attempt >= 100) throw err;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }
}

/** The process-exit safety net: synchronous, best effort. */
function cleanupSync(mounts: string[], name: string, children: Set<ChildProcess>): void {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (const m of mounts) {
    for (const dir of subdirsBottomUp(`${m}/${name}`)) {
      for (let attempt = 0; attempt < 50; attempt++) {
        try {
          rmdirSync(dir);
          break;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EBUSY') break;
          Atomics.wait(pause, 0, 0, 20); // a killed child leaves its cgroup once the kernel has reaped it
        }
      }
    }
  }
}
