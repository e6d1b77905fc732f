// Composition root: config -> logger -> kube client -> cgroup layout -> checkpoint -> reconciler -> informer
// -> queue -> http, and an ordered shutdown on SIGTERM. The only module that wires real I/O together.
import { existsSync, lstatSync, readdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { detectLayout } from '../cgroup/detect.ts';
import { DEFAULT_MEMORY_MARGIN } from '../cgroup/planner.ts';
import { createSystemdSync } from '../cgroup/systemd-apply.ts';
import { createDbusSystemdPort } from '../cgroup/systemd-bus.ts';
import type { CgroupFs, CgroupLayout } from '../cgroup/types.ts';
import { ConfigError, loadConfig, USAGE, type Config, type TestHooks } from './config.ts';
import { createKubePort, httpStatusOf, loadKubeConfig, type KubePort } from './kube/api.ts';
import { createPodInformer, type PodInformer } from './kube/informer.ts';
import { createNamespaceState, type NamespaceState } from './kube/namespace-state.ts';
import { createAutoscaler, type Autoscaler } from './autoscale/sampler.ts';
import { nodeSyncFs } from './cgroup-stats.ts';
import { createAgentMetrics, type AgentMetrics } from './metrics.ts';
import { parseCpuMillicores, parseMemoryBytes } from './resize/quantity.ts';
import { createActuator } from './reconcile/actuator.ts';
import { createCheckpoint, type CheckpointFs, type CopyName } from './reconcile/checkpoint.ts';
import { createStatusPublisher } from './reconcile/publisher.ts';
import { createAllocationVerifier } from './reconcile/verify.ts';
import { createKeyedQueue } from './reconcile/queue.ts';
import {
  createReconciler,
  type NodeState,
  type Reconciler,
  type ReconcilerDeps,
} from './reconcile/reconciler.ts';
import { backoffDelay, systemClock } from './util/backoff.ts';

/**
 * The CgroupFs port on the host. cgroupfs and procfs files are generated in the kernel on each call with no
 * disk behind them: a synchronous read or write takes microseconds, while the promise API pays four
 * thread-pool round trips (open, fstat, read, close) of ~0.15 ms each. Synchronous calls here are what make
 * a resize's dozen file operations fit in a few milliseconds; they never touch a real disk.
 */
export const realCgroupFs: CgroupFs = {
  readFile: async (p) => readFileSync(p, 'utf8'),
  writeFile: async (p, d) => writeFileSync(p, d),
  readdir: async (p) => readdirSync(p),
  lstat: async (p) => lstatSync(p),
  // The libc realpath: one call instead of an lstat per path component from JavaScript.
  realpath: async (p) => realpathSync.native(p),
};

/**
 * TEST-ONLY (config.testHooks, set only through RESIZELET_TEST_* variables): the cgroup port with injected
 * kernel refusals, and a pause after the N-th write so a test can SIGKILL the agent between two writes of one
 * plan, deterministically. Production agents never get here.
 */
function withTestHooks(fs: CgroupFs, hooks: TestHooks, log: Logger): CgroupFs {
  let writes = 0;
  const faults = (hooks.cgroupFaults ?? []).map((f) => ({ ...f }));
  return {
    ...fs,
    async writeFile(path, data) {
      const file = path.slice(path.lastIndexOf('/') + 1);
      const fault = faults.find((f) => f.times > 0 && f.file === file);
      if (fault) {
        fault.times--;
        throw Object.assign(
          new Error(`${fault.errno}: injected (RESIZELET_TEST_CGROUP_FAULTS), write '${path}'`),
          {
            code: fault.errno,
          },
        );
      }
      await fs.writeFile(path, data);
      writes++;
      const pause = hooks.pauseAfterWrites;
      if (pause && writes === pause.writes) {
        log.warn({ writes, path, mode: pause.mode }, 'TEST HOOK: pausing after this cgroup write');
        // SIGSTOP synchronously: not even a promise callback runs between this write and the stop.
        if (pause.mode === 'stop') process.kill(process.pid, 'SIGSTOP');
        else await new Promise<never>(() => undefined);
      }
    },
  };
}

export interface RunningAgent {
  config: Config;
  log: Logger;
  layout: CgroupLayout;
  metrics: AgentMetrics;
  informer: PodInformer;
  reconciler: Reconciler;
  node(): NodeState;
  stop(): Promise<void>;
}

/** Parses the Node's allocatable and capacity; a malformed value reads as unknown rather than crashing. */
function nodeStateFrom(info: {
  allocatable: Record<string, string>;
  capacity: Record<string, string>;
}): NodeState {
  try {
    return {
      allocatable: {
        cpuMilli: parseCpuMillicores(info.allocatable.cpu ?? '0'),
        memoryBytes: parseMemoryBytes(info.allocatable.memory ?? '0'),
      },
      memoryCapacityBytes: info.capacity.memory ? parseMemoryBytes(info.capacity.memory) : undefined,
    };
  } catch {
    return { allocatable: undefined, memoryCapacityBytes: undefined };
  }
}

export interface AgentHooks {
  onResizeTiming?: ReconcilerDeps['onResizeTiming'];
  /** Each checkpoint write's duration, by copy (benchmarks report the node disk's fsync stalls). */
  onCheckpointWrite?: (ms: number, copy: CopyName) => void;
  /** The filesystem calls the checkpoint makes; tests stall or fail them. Default: node:fs/promises. */
  checkpointFs?: CheckpointFs;
}

export async function startAgent(config: Config, log: Logger, hooks: AgentHooks = {}): Promise<RunningAgent> {
  const clock = systemClock;
  const metrics = createAgentMetrics();
  const fs = realCgroupFs;
  if (config.testHooks)
    log.warn({ testHooks: config.testHooks }, 'TEST HOOKS ACTIVE: cgroup writes will be faulted');
  const writeFs = config.testHooks ? withTestHooks(fs, config.testHooks, log) : fs;

  const mountinfo = await fsp.readFile(config.mountinfoPath, 'utf8');
  const overrides: Partial<CgroupLayout> = {};
  if (config.podsRoot) overrides.podsRoot = config.podsRoot;
  if (config.driver) overrides.driver = config.driver;
  if (config.runtime) overrides.runtime = config.runtime;
  if (config.weightFormula) overrides.weightFormula = config.weightFormula;
  const detected = await detectLayout({ fs, mountinfo, overrides });
  const layout = detected.layout;
  log.info({ layout, notes: detected.notes }, 'cgroup layout');
  for (const c of detected.conflicts)
    log.error({ conflict: c }, 'cgroup detection found contradicting evidence');

  const checkpoint = createCheckpoint({
    fs: hooks.checkpointFs ?? (fsp as unknown as CheckpointFs),
    path: config.checkpointPath,
    runPath: config.runCheckpointPath,
    node: config.nodeName,
    onWrite: (ms, copy) => {
      metrics.checkpointWriteSeconds.observe({ copy }, ms / 1000);
      hooks.onCheckpointWrite?.(ms, copy);
    },
    onError: (err, copy) => {
      metrics.checkpointProblems.inc();
      log.error({ err, copy }, `checkpoint write failed (${copy} copy)`);
    },
  });
  const loaded = await checkpoint.load();
  if (loaded.problem) {
    metrics.checkpointProblems.inc();
    log.error(
      { problem: loaded.problem, path: config.checkpointPath, runPath: config.runCheckpointPath },
      "CHECKPOINT CORRUPT: starting empty; allocations will be rebuilt from the pods' status annotations and live cgroups",
    );
  } else if (loaded.loadedFrom) {
    log.info(
      { from: loaded.loadedFrom, older: loaded.older, entries: checkpoint.all().length },
      'checkpoint loaded',
    );
    for (const problem of loaded.unreadable ?? []) {
      // The other copy loaded, but this one would have been all there was after a reboot (or a crash).
      metrics.checkpointProblems.inc();
      log.error({ problem }, 'a checkpoint copy is unreadable; loaded the other one and will rewrite it');
    }
    // The disk copy lags what was loaded (an agent crash before its write finished, or it is unreadable):
    // bring it up to date now rather than at the next change, which on a quiet node may be hours away.
    if (loaded.loadedFrom === 'run') void checkpoint.flush().catch(() => undefined); // onError reports it
  }

  const kc = loadKubeConfig(config.kubeconfig);
  const kube: KubePort = createKubePort(kc, { component: 'resizelet', host: config.nodeName });
  // Quotas, LimitRanges and the namespace opt-out label; a change re-judges the namespace's pods here.
  const namespaceState: NamespaceState = createNamespaceState({
    kc,
    clock,
    onChange: (ns) => {
      for (const p of informer.list())
        if (p.metadata?.namespace === ns) queue.enqueue(`${ns}/${p.metadata?.name}`);
    },
    onError: (what, err, restartInMs) =>
      log.warn(
        { what, err: (err as Error)?.message ?? String(err), restartInMs },
        'namespace watch failed; restarting',
      ),
  });
  const scope = config.namespaces && new Set(config.namespaces);
  let nodeState: NodeState = { allocatable: undefined, memoryCapacityBytes: undefined };

  // systemd driver: resizes also go to systemd as runtime unit properties, or a daemon-reload (any package
  // upgrade) puts the pod spec's limits back. The connection is made on first use and remade after a loss.
  const systemdPort =
    layout.driver === 'systemd' && config.systemdBus
      ? createDbusSystemdPort({ address: config.systemdBus, log: log.child({ component: 'systemd' }) })
      : undefined;
  if (systemdPort) log.info({ address: config.systemdBus }, 'resizes go through systemd as well as cgroupfs');
  const actuator = createActuator({
    fs: writeFs,
    layout,
    memoryMargin: {
      bytes: config.memoryMarginBytes,
      fraction: config.memoryMarginFraction ?? DEFAULT_MEMORY_MARGIN.fraction,
    },
    log: log.child({ component: 'executor' }),
    writeProcFile: async (p, d) => writeFileSync(p, d),
    procRoot: config.procRoot,
    systemd:
      systemdPort &&
      createSystemdSync({
        port: systemdPort,
        versions: {
          cpu: layout.controllers.cpu.version,
          cpuacct: layout.controllers.cpuacct.version,
          memory: layout.controllers.memory.version,
        },
        log: log.child({ component: 'systemd' }),
      }),
  });
  const publisher = createStatusPublisher({
    kube,
    clock,
    log: log.child({ component: 'publisher' }),
    onFailure: () => metrics.statusPatchFailures.inc(),
    onEventDropped: () => metrics.eventsDropped.inc(),
  });

  const queue = createKeyedQueue({
    worker: (key) => reconciler.handle(key),
    onError: (key, err) => log.error({ pod: key, err }, 'reconcile failed'),
  });
  const reconciler: Reconciler = createReconciler({
    nodeName: config.nodeName,
    cache: {
      get: (ns, name) => informer.get(ns, name),
      list: () => informer.list(),
    },
    actuator,
    checkpoint,
    publisher,
    metrics,
    log: log.child({ component: 'reconciler' }),
    clock,
    node: () => nodeState,
    enqueue: (key) => queue.enqueue(key),
    deferredRetryMs: config.deferredRetryMs,
    namespaces: namespaceState,
    inScope: scope ? (ns) => scope.has(ns) : undefined,
    verify: createAllocationVerifier({ fs, layout }),
    onResizeTiming: hooks.onResizeTiming,
    recommendation: (key) => autoscaler.recommendation(key),
  });

  // Decisions go through the resize path above: a request annotation the informer brings back.
  const autoscaler: Autoscaler = createAutoscaler({
    nodeName: config.nodeName,
    layout,
    files: nodeSyncFs,
    pods: () => informer.list(),
    kube,
    event: (pod, e) => publisher.event(pod, e),
    metrics,
    log: log.child({ component: 'autoscaler' }),
    clock,
    intervalMs: config.autoscaleIntervalMs,
    onRecommendation: (key) => queue.enqueue(key),
  });

  const informer: PodInformer = createPodInformer({
    kc,
    nodeName: config.nodeName,
    clock,
    onChange: (key, pod, kind) => {
      reconciler.observe(pod);
      // The watch echoes the agent's own status patches: those need no second look.
      if (kind !== 'update' || reconciler.needsLook(pod)) queue.enqueue(key);
    },
    onError: (err, restartInMs) => {
      metrics.informerRestarts.inc();
      log.warn({ err: (err as Error)?.message ?? String(err), restartInMs }, 'pod watch failed; restarting');
    },
  });

  // Enforce what the checkpoint holds before anything from the API server: a restarted agent must keep
  // allocations true even while the API server is unreachable.
  const enforced = await reconciler.enforceCheckpoint();
  log.info({ pods: enforced, entries: checkpoint.all().length }, 'checkpoint enforced');

  const timers: NodeJS.Timeout[] = [];
  // The Node's allocatable gates every admission: until it has been read, requests wait as Deferred, so
  // a failed read is retried with backoff rather than at the next 30 s refresh.
  let nodeAttempt = 0;
  let nodeRetry: NodeJS.Timeout | undefined;
  const refreshNode = async (): Promise<void> => {
    try {
      const before = nodeState.allocatable;
      nodeState = nodeStateFrom(await kube.readNode(config.nodeName));
      nodeAttempt = 0;
      const after = nodeState.allocatable;
      // First known, or changed: a shrink can leave Accepted and Deferred requests that no longer fit.
      if (
        after &&
        (!before || before.cpuMilli !== after.cpuMilli || before.memoryBytes !== after.memoryBytes)
      ) {
        for (const p of informer.list()) queue.enqueue(`${p.metadata?.namespace}/${p.metadata?.name}`);
      }
    } catch (err) {
      log.warn(
        { err: (err as Error).message, status: httpStatusOf(err) },
        'cannot read the Node; keeping the last allocatable',
      );
      if (!nodeState.allocatable && !nodeRetry) {
        nodeRetry = setTimeout(
          () => {
            nodeRetry = undefined;
            void refreshNode();
          },
          200 + backoffDelay(nodeAttempt++, { baseMs: 500, maxMs: 10_000 }),
        );
      }
    }
  };
  await refreshNode();
  timers.push(setInterval(() => void refreshNode(), config.nodeRefreshIntervalMs));
  // Namespace rules first (a few small lists), so the pods the informer brings are judged against known
  // quotas rather than waiting as Deferred; bounded, since a hung API server must not hold up the start.
  await Promise.race([
    namespaceState.start().catch((err: unknown) => log.error({ err }, 'namespace informers failed')),
    clock.sleep(5_000),
  ]);
  void informer.start().catch((err: unknown) => log.error({ err }, 'informer start failed'));
  autoscaler.start();
  timers.push(
    setInterval(() => {
      void reconciler.reconcileAll().catch((err: unknown) => log.error({ err }, 'drift check failed'));
    }, config.reconcileIntervalMs),
  );

  return {
    config,
    log,
    layout,
    metrics,
    informer,
    reconciler,
    node: () => nodeState,
    async stop() {
      for (const t of timers) clearInterval(t);
      if (nodeRetry) clearTimeout(nodeRetry);
      await autoscaler.stop();
      await informer.stop();
      await namespaceState.stop();
      queue.stop();
      // A Completed status is queued once the checkpoint holds it: let that write finish first, then give
      // in-flight status patches a moment.
      await checkpoint.save().catch(() => undefined);
      await Promise.race([publisher.idle(), clock.sleep(3_000)]);
      publisher.stop();
      reconciler.stop();
      await systemdPort?.close();
      // A clean stop leaves the disk copy current, so a reboot right after loses nothing.
      await checkpoint.save().catch(() => undefined);
      await checkpoint.flush().catch(() => undefined);
    },
  };
}

export async function runAgent(argv: string[]): Promise<number> {
  const home = join(homedir(), '.kube', 'config');
  let config: Config;
  try {
    const c = loadConfig({ argv, env: process.env, homeKubeconfig: existsSync(home) ? home : undefined });
    if (c === 'help') {
      process.stdout.write(USAGE);
      return 0;
    }
    config = c;
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`resizelet: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
  const log = pino({ level: config.logLevel, base: { node: config.nodeName } });
  let agent: RunningAgent;
  try {
    agent = await startAgent(config, log);
  } catch (err) {
    log.fatal({ err }, 'agent failed to start');
    return 1;
  }
  let closeHttp: (() => Promise<void>) | undefined;
  try {
    const { startHttp } = await import('./http-server.ts');
    closeHttp = await startHttp(agent);
  } catch (err) {
    log.fatal({ err }, 'cannot start the HTTP endpoint');
    await agent.stop();
    return 1;
  }
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  log.info('shutting down');
  await closeHttp?.();
  await agent.stop();
  return 0;
}
