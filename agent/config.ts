// Reads flags and environment once into a frozen, typed Config. Nothing else in the agent reads
// process.env or argv. Every cgroup detection can be overridden here.
import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import {
  CgroupDrivers,
  ContainerRuntimes,
  WeightFormulas,
  type CgroupDriver,
  type ContainerRuntime,
  type WeightFormula,
} from '../cgroup/types.ts';

export interface Config {
  nodeName: string;
  /** Path of a kubeconfig file; undefined = in-cluster service account. */
  kubeconfig: string | undefined;
  inCluster: boolean;
  cgroupRoot: string;
  mountinfoPath: string;
  procRoot: string;
  podsRoot: string | undefined;
  driver: CgroupDriver | undefined;
  runtime: ContainerRuntime | undefined;
  weightFormula: WeightFormula | undefined;
  checkpointPath: string;
  /** The checkpoint's run copy on a memory-backed filesystem (/run): Completed waits for it, not the disk. */
  runCheckpointPath: string | undefined;
  listenHost: string;
  listenPort: number;
  reconcileIntervalMs: number;
  deferredRetryMs: number;
  logLevel: string;
  /** Headroom a lowered memory limit must leave above the working set. */
  memoryMarginBytes: bigint;
  memoryMarginFraction: number;
  /** `--namespaces`: only pods of these namespaces are resized; undefined = every namespace. */
  namespaces: readonly string[] | undefined;
  /** How often the Node is re-read (allocatable gates admission; a shrink re-judges waiting requests). */
  nodeRefreshIntervalMs: number;
  /** TEST-ONLY fault hooks (environment only, never flags); undefined in production. See TestHooks. */
  testHooks: TestHooks | undefined;
  /**
   * D-Bus address of systemd, used on systemd-driver nodes so resizes survive a daemon-reload; null = off
   * (`none`): cgroup files only.
   */
  systemdBus: string | null;
  /** How often the autoscaler reads autoscaled containers' cgroups; 0 turns the autoscaler off. */
  autoscaleIntervalMs: number;
}

/**
 * TEST-ONLY. Faults the hardening tests inject into a real agent process (test/hardening/). Read from the
 * environment only, never from flags, and logged loudly at start when set; nothing in a DaemonSet sets them.
 * - RESIZELET_TEST_PAUSE_AFTER_WRITES=N[:hang]: after the N-th cgroup write of the process, stop the process
 *   with SIGSTOP (default: before any other callback can run, so nothing else happens after that write) or
 *   hang that write's promise forever (`hang`: the event loop runs on, so an in-flight checkpoint save
 *   completes). The test then SIGKILLs the agent between two writes of one plan.
 * - RESIZELET_TEST_CGROUP_FAULTS=ERRNO:FILE:TIMES[,...]: the next TIMES writes to a cgroup file named FILE
 *   fail with ERRNO (EBUSY, EINVAL, EACCES, ...), as the kernel would refuse them.
 */
export interface TestHooks {
  pauseAfterWrites?: { writes: number; mode: 'stop' | 'hang' };
  cgroupFaults?: Array<{ errno: string; file: string; times: number }>;
}

function testHooksFrom(env: Record<string, string | undefined>): TestHooks | undefined {
  const hooks: TestHooks = {};
  const pause = env.RESIZELET_TEST_PAUSE_AFTER_WRITES;
  if (pause) {
    const m = /^(\d+)(?::(stop|hang))?$/.exec(pause);
    if (!m)
      throw new ConfigError(
        `RESIZELET_TEST_PAUSE_AFTER_WRITES: ${JSON.stringify(pause)} is not N[:stop|hang]`,
      );
    hooks.pauseAfterWrites = { writes: Number(m[1]), mode: (m[2] ?? 'stop') as 'stop' | 'hang' };
  }
  const faults = env.RESIZELET_TEST_CGROUP_FAULTS;
  if (faults) {
    hooks.cgroupFaults = faults.split(',').map((f) => {
      const m = /^(E[A-Z]+):([A-Za-z0-9_.]+):(\d+)$/.exec(f.trim());
      if (!m)
        throw new ConfigError(`RESIZELET_TEST_CGROUP_FAULTS: ${JSON.stringify(f)} is not ERRNO:FILE:TIMES`);
      return { errno: m[1]!, file: m[2]!, times: Number(m[3]) };
    });
  }
  return hooks.pauseAfterWrites || hooks.cgroupFaults ? hooks : undefined;
}

export class ConfigError extends Error {
  readonly code = 'RESIZELET_ERR_CONFIG';
}

const options = {
  'node-name': { type: 'string' },
  kubeconfig: { type: 'string' },
  'cgroup-root': { type: 'string' },
  mountinfo: { type: 'string' },
  'proc-root': { type: 'string' },
  'pods-root': { type: 'string' },
  'cgroup-driver': { type: 'string' },
  runtime: { type: 'string' },
  'weight-formula': { type: 'string' },
  checkpoint: { type: 'string' },
  'run-checkpoint': { type: 'string' },
  listen: { type: 'string' },
  'reconcile-interval': { type: 'string' },
  'deferred-retry': { type: 'string' },
  'log-level': { type: 'string' },
  'memory-margin': { type: 'string' },
  namespaces: { type: 'string' },
  'node-refresh': { type: 'string' },
  'systemd-bus': { type: 'string' },
  'autoscale-interval': { type: 'string' },
  help: { type: 'boolean' },
} as const;

export const USAGE = `usage: resizelet agent [flags]   (each flag also reads the env var in brackets)
  --node-name NAME          this node [NODE_NAME] (required)
  --kubeconfig PATH         kubeconfig file [KUBECONFIG]; default: in-cluster, else ~/.kube/config
  --cgroup-root DIR         [RESIZELET_CGROUP_ROOT] default /sys/fs/cgroup
  --mountinfo PATH          [RESIZELET_MOUNTINFO] default /proc/self/mountinfo
  --proc-root DIR           [RESIZELET_PROC_ROOT] default /proc (oom_score_adj updates)
  --pods-root PATH          kubelet pods cgroup relative to each mount [RESIZELET_PODS_ROOT]; default detected
  --cgroup-driver D         cgroupfs|systemd [RESIZELET_CGROUP_DRIVER]; default detected
  --runtime R               containerd|crio|docker [RESIZELET_RUNTIME]; default detected
  --weight-formula F        linear|quadratic (cgroup v2 cpu.weight) [RESIZELET_WEIGHT_FORMULA]; default detected
  --checkpoint PATH         [RESIZELET_CHECKPOINT] default /var/lib/resizelet/checkpoint.json
  --run-checkpoint PATH     a copy on memory-backed /run [RESIZELET_RUN_CHECKPOINT]: Completed statuses wait
                            for it, not the disk's fsync; e.g. /run/resizelet/checkpoint.json; default none
  --listen HOST:PORT        metrics/health endpoint [RESIZELET_LISTEN] default 0.0.0.0:9977
  --reconcile-interval DUR  drift check period [RESIZELET_RECONCILE_INTERVAL] default 10s
  --deferred-retry DUR      retry period for Deferred requests [RESIZELET_DEFERRED_RETRY] default 5s
  --namespaces NS,NS        resize only pods of these namespaces [RESIZELET_NAMESPACES]; default all
  --node-refresh DUR        how often the Node's allocatable is re-read [RESIZELET_NODE_REFRESH] default 30s
  --memory-margin BYTES     min headroom above working set when lowering memory [RESIZELET_MEMORY_MARGIN] default 8388608
  --systemd-bus ADDRESS     systemd driver: where to reach systemd so resizes survive daemon-reload [RESIZELET_SYSTEMD_BUS]
                            default unix:path=/run/systemd/private (or unix:path=/run/dbus/system_bus_socket); none = off
  --autoscale-interval DUR  how often autoscaled pods' cgroups are read [RESIZELET_AUTOSCALE_INTERVAL] default 500ms; 0 = off
  --log-level LEVEL         [RESIZELET_LOG_LEVEL] default info
`;

/** "10s", "500ms", "2m" or a bare number of milliseconds. */
export function parseDuration(text: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw new ConfigError(`${flag}: ${JSON.stringify(text)} is not a duration (e.g. 500ms, 10s, 2m)`);
  const n = Number(m[1]);
  const unit = m[2] ?? 'ms';
  const factor = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[unit] ?? 1;
  return Math.round(n * factor);
}

function oneOf<T extends string>(
  value: string | undefined,
  allowed: readonly T[],
  flag: string,
): T | undefined {
  if (value === undefined || value === '') return undefined;
  if (!(allowed as readonly string[]).includes(value)) {
    throw new ConfigError(`${flag}: ${JSON.stringify(value)} is not one of ${allowed.join(', ')}`);
  }
  return value as T;
}

export interface ConfigSources {
  argv: string[];
  env: Record<string, string | undefined>;
  /** Whether a kubeconfig exists at ~/.kube/config (checked by the caller: config does no I/O). */
  homeKubeconfig: string | undefined;
}

export function loadConfig({ argv, env, homeKubeconfig }: ConfigSources): Config | 'help' {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ args: argv, options, allowPositionals: false, strict: true }).values;
  } catch (err) {
    throw new ConfigError(`${(err as Error).message}\n${USAGE}`);
  }
  if (values.help) return 'help';
  const get = (flag: keyof typeof options, envName: string): string | undefined => {
    const v = values[flag];
    return typeof v === 'string' ? v : env[envName];
  };

  const nodeName = get('node-name', 'NODE_NAME');
  if (!nodeName)
    throw new ConfigError(
      'no node name: set NODE_NAME (the DaemonSet does, from the downward API) or --node-name',
    );
  const inCluster = Boolean(env.KUBERNETES_SERVICE_HOST);
  const kubeconfig = get('kubeconfig', 'KUBECONFIG') ?? (inCluster ? undefined : homeKubeconfig);
  if (!kubeconfig && !inCluster) {
    throw new ConfigError('no cluster configuration found, see deploy/ or run the demo (npm run demo)');
  }
  const checkpointPath = get('checkpoint', 'RESIZELET_CHECKPOINT') ?? '/var/lib/resizelet/checkpoint.json';
  const runCheckpointPath = get('run-checkpoint', 'RESIZELET_RUN_CHECKPOINT') || undefined;
  if (runCheckpointPath !== undefined && resolve(runCheckpointPath) === resolve(checkpointPath)) {
    throw new ConfigError('--run-checkpoint must not be the --checkpoint file: it is a second copy');
  }
  const listen = get('listen', 'RESIZELET_LISTEN') ?? '0.0.0.0:9977';
  const lm = /^(.*):(\d+)$/.exec(listen);
  if (!lm) throw new ConfigError(`--listen: ${JSON.stringify(listen)} is not HOST:PORT`);
  const margin = get('memory-margin', 'RESIZELET_MEMORY_MARGIN') ?? '8388608';
  const systemdBus = get('systemd-bus', 'RESIZELET_SYSTEMD_BUS') || 'unix:path=/run/systemd/private';
  if (
    systemdBus !== 'none' &&
    !/^(?:unix:(?:path|abstract)=[^,]+|tcp:host=[^,]+,port=\d+)/.test(systemdBus)
  ) {
    throw new ConfigError(
      `--systemd-bus: ${JSON.stringify(systemdBus)} is not a D-Bus address (unix:path=/run/systemd/private) or none`,
    );
  }
  if (!/^\d+$/.test(margin))
    throw new ConfigError(`--memory-margin: ${JSON.stringify(margin)} is not a byte count`);

  const nsList = get('namespaces', 'RESIZELET_NAMESPACES');
  const namespaces = nsList
    ?.split(',')
    .map((n) => n.trim())
    .filter((n) => n !== '');
  for (const n of namespaces ?? []) {
    if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(n) || n.length > 63) {
      throw new ConfigError(`--namespaces: ${JSON.stringify(n)} is not a namespace name`);
    }
  }

  return Object.freeze({
    nodeName,
    kubeconfig,
    inCluster: !kubeconfig,
    cgroupRoot: get('cgroup-root', 'RESIZELET_CGROUP_ROOT') ?? '/sys/fs/cgroup',
    mountinfoPath: get('mountinfo', 'RESIZELET_MOUNTINFO') ?? '/proc/self/mountinfo',
    procRoot: get('proc-root', 'RESIZELET_PROC_ROOT') ?? '/proc',
    podsRoot: get('pods-root', 'RESIZELET_PODS_ROOT') || undefined,
    driver: oneOf(get('cgroup-driver', 'RESIZELET_CGROUP_DRIVER'), CgroupDrivers, '--cgroup-driver'),
    runtime: oneOf(get('runtime', 'RESIZELET_RUNTIME'), ContainerRuntimes, '--runtime'),
    weightFormula: oneOf(
      get('weight-formula', 'RESIZELET_WEIGHT_FORMULA'),
      WeightFormulas,
      '--weight-formula',
    ),
    checkpointPath,
    runCheckpointPath,
    listenHost: lm[1] ?? '0.0.0.0',
    listenPort: Number(lm[2]),
    reconcileIntervalMs: parseDuration(
      get('reconcile-interval', 'RESIZELET_RECONCILE_INTERVAL') ?? '10s',
      '--reconcile-interval',
    ),
    deferredRetryMs: parseDuration(
      get('deferred-retry', 'RESIZELET_DEFERRED_RETRY') ?? '5s',
      '--deferred-retry',
    ),
    logLevel: get('log-level', 'RESIZELET_LOG_LEVEL') ?? 'info',
    memoryMarginBytes: BigInt(margin),
    memoryMarginFraction: 0.05,
    namespaces: namespaces && namespaces.length > 0 ? Object.freeze(namespaces) : undefined,
    nodeRefreshIntervalMs: parseDuration(
      get('node-refresh', 'RESIZELET_NODE_REFRESH') ?? '30s',
      '--node-refresh',
    ),
    testHooks: testHooksFrom(env),
    systemdBus: systemdBus === 'none' ? null : systemdBus,
    autoscaleIntervalMs: parseDuration(
      get('autoscale-interval', 'RESIZELET_AUTOSCALE_INTERVAL') ?? '500ms',
      '--autoscale-interval',
    ),
  });
}
