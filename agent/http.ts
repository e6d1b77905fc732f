// The node-local endpoint, as a fastify app factory (no listen here; http-server.ts binds it):
//   GET /metrics                         Prometheus text: cAdvisor-compatible container_* series read from the
//                                        cgroups at scrape time, resizelet_* series, process metrics
//   GET /healthz                         the process answers and its event loop turns
//   GET /readyz                          pod cache synced and the pods' cgroup root found, else 503 + reasons
//   GET /api/v1/pods[/:namespace/:name]  per pod and container: spec, allocation, cgroup values, usage, status
// Read-only by construction: no route writes anything, and only GET routes exist.
//
// Everything here is computed when asked (STYLE habit 7): the registry belongs to this app instance and
// has no timers writing gauges; the engine's own counters (deps.metrics) are rendered alongside.
import { promisify } from 'node:util';
import { constants, gzip } from 'node:zlib';
import Fastify, { type FastifyInstance } from 'fastify';
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { CgroupLayout } from '../cgroup/types.ts';
import { createCadvisorRenderer } from './cadvisor/render.ts';
import { createNodeScanner, sharedScan } from './cadvisor/scanner.ts';
import type { NodeScan, ScannedCgroup } from './cadvisor/targets.ts';
import { createStatsReader, type CgroupStats, type SyncFs } from './cgroup-stats.ts';
import type { AgentMetrics } from './metrics.ts';
import { createNodeFacts, type NodeFacts, type NodeFactsSource } from './node-facts.ts';
import type { PodView } from './reconcile/reconciler.ts';
import { podKey, specResources, type PodLike, type Resources } from './resize/pod.ts';
import { toWireAllocation, type WireResourceValues } from './resize/status.ts';

const gzipAsync = promisify(gzip);
/** The compression's output buffer: a busy node's ~0.5 MB in one piece, so no concatenation. */
const GZIP_CHUNK = 512 * 1024;

/** What the endpoint needs from the agent; tests and the bench hand it plain values. */
export interface HttpDeps {
  nodeName: string;
  /** undefined: cgroup detection failed; /readyz says so and no container_* series are served. */
  layout: CgroupLayout | undefined;
  /** How cgroup files are read: node:fs in production (`nodeSyncFs`), a memfs volume in tests. */
  files: SyncFs;
  /** The pods on this node (the informer's cache). */
  pods(): readonly PodLike[];
  /** The agent's allocation and last status per pod (the reconciler's view). */
  views(): readonly PodView[];
  /** The engine's counters and histograms, rendered with the scrape-time families. */
  metrics: AgentMetrics;
  informer: { readonly synced: boolean; readonly lastEventAt: number };
  /** Wall clock in ms (informer event ages). */
  now?: () => number;
  nodeFacts?: NodeFactsSource;
  /** prom-client's process_* and nodejs_* metrics; off in tests that build many apps. Default on. */
  processMetrics?: boolean;
  /** The pause image, for the sandbox's `image` label (the kubelet's --pod-infra-container-image). */
  sandboxImage?: string;
  /** See cgroup-stats.ts. */
  maxOpenFiles?: number;
}

/** The last full walk, as its resizelet_scrape_* series report it. */
interface WalkSummary {
  cgroups: number;
  durationMs: number;
  problems: NodeScan['problems'];
}

interface ScrapeValue {
  value: number;
  labels: Record<string, string | number>;
}

/**
 * Registers a family whose values are computed when the registry renders (STYLE habit 7). It overrides
 * `get()` rather than calling `set()` from `collect()`, so series that vanish (a deleted pod) vanish from
 * the next scrape without a reset, and nothing is hashed per series.
 */
function registerScrapeMetric(
  registry: Registry,
  def: { name: string; help: string; type: 'gauge' | 'counter' },
  values: () => ScrapeValue[] | Promise<ScrapeValue[]>,
): void {
  const config = { name: def.name, help: def.help, registers: [] };
  const metric = def.type === 'counter' ? new Counter(config) : new Gauge(config);
  const get = async () => ({ ...def, aggregator: 'sum' as const, values: await values() });
  // The registry only calls get(); the declared return type spells `type` with prom-client's MetricType
  // enum, whose runtime values are these very strings.
  metric.get = get as unknown as typeof metric.get;
  registry.registerMetric(metric);
}

const RESOURCES = [
  {
    resource: 'cpu',
    unit: 'core',
    of: (v: Resources['requests']) => (v.cpu === undefined ? undefined : v.cpu / 1000),
  },
  {
    resource: 'memory',
    unit: 'byte',
    of: (v: Resources['requests']) => (v.memory === undefined ? undefined : Number(v.memory)),
  },
] as const;

/** One value per set request/limit of each container: the series of resizelet_container_*_resource. */
function resourceValues(
  namespace: string,
  pod: string,
  containers: { name: string; resources: Resources }[],
): ScrapeValue[] {
  const out: ScrapeValue[] = [];
  for (const c of containers) {
    for (const type of ['request', 'limit'] as const) {
      const side = type === 'request' ? c.resources.requests : c.resources.limits;
      for (const r of RESOURCES) {
        const value = r.of(side);
        if (value !== undefined) {
          out.push({
            value,
            labels: { namespace, pod, container: c.name, resource: r.resource, unit: r.unit, type },
          });
        }
      }
    }
  }
  return out;
}

function registerResizeletMetrics(
  registry: Registry,
  deps: HttpDeps,
  latest: () => WalkSummary | undefined,
  facts: NodeFactsSource,
  openFiles: () => number,
): void {
  const now = deps.now ?? Date.now;
  const scrape = (
    name: string,
    help: string,
    type: 'gauge' | 'counter',
    values: () => ScrapeValue[] | Promise<ScrapeValue[]>,
  ) => registerScrapeMetric(registry, { name, help, type }, values);

  // Both sides only for pods resizelet has allocated: elsewhere the cgroups follow the spec, which
  // kube-state-metrics already exports, and 4 series per container would double the node's cardinality.
  const allocatedPods = () => {
    const byKey = new Map(deps.pods().map((p) => [podKey(p), p]));
    return deps.views().flatMap((v) => {
      const pod = byKey.get(v.key);
      return v.allocation && pod ? [{ view: v, allocation: v.allocation, pod }] : [];
    });
  };
  scrape(
    'resizelet_container_spec_resource',
    'Requests and limits in the pod spec, per container of the pods resizelet has allocated (cores, bytes).',
    'gauge',
    () =>
      allocatedPods().flatMap(({ pod }) => {
        try {
          const containers = (pod.spec?.containers ?? []).map((c) => ({
            name: c.name,
            resources: specResources(c),
          }));
          return resourceValues(pod.metadata?.namespace ?? '', pod.metadata?.name ?? '', containers);
        } catch {
          return []; // a quantity the API server would have refused: nothing to compare
        }
      }),
  );
  scrape(
    'resizelet_container_allocated_resource',
    'Requests and limits resizelet has allocated and enforces in the cgroups, per container (cores, bytes).',
    'gauge',
    () =>
      allocatedPods().flatMap(({ view, allocation }) => {
        const [namespace, pod] = splitKey(view.key);
        return resourceValues(namespace, pod, allocation);
      }),
  );
  scrape(
    'resizelet_pod_resize_status',
    'The resize status of each pod resizelet has answered (1 for the current status).',
    'gauge',
    () =>
      deps.views().flatMap((v) => {
        if (!v.status) return [];
        const [namespace, pod] = splitKey(v.key);
        return [{ value: 1, labels: { namespace, pod, status: v.status.resizeStatus } }];
      }),
  );
  scrape(
    'resizelet_informer_synced',
    "1 once the pod informer has listed the node's pods, 0 before.",
    'gauge',
    () => [{ value: deps.informer.synced ? 1 : 0, labels: {} }],
  );
  scrape(
    'resizelet_informer_last_event_age_seconds',
    'Seconds since the pod watch last delivered anything (events, bookmarks, relists); a watch quiet for too long is restarted.',
    'gauge',
    () => [{ value: Math.max(0, (now() - deps.informer.lastEventAt) / 1000), labels: {} }],
  );
  const last = (pick: (s: WalkSummary) => number) => () => {
    const s = latest();
    return s ? [{ value: pick(s), labels: {} }] : [];
  };
  scrape(
    'resizelet_scrape_cgroups',
    'Cgroups read by the last walk of the node (pods, sandboxes, containers, QoS levels).',
    'gauge',
    last((s) => s.cgroups),
  );
  scrape(
    'resizelet_scrape_cgroup_read_seconds',
    'Time the last walk of the node spent reading cgroups.',
    'gauge',
    last((s) => s.durationMs / 1000),
  );
  scrape(
    'resizelet_scrape_problems',
    'Cgroups or pods the last walk could not read, by error code.',
    'gauge',
    () => {
      const byCode = new Map<string, number>();
      for (const p of latest()?.problems ?? []) byCode.set(p.code, (byCode.get(p.code) ?? 0) + 1);
      return [...byCode].map(([code, value]) => ({ value, labels: { code } }));
    },
  );
  scrape('resizelet_scrape_open_files', 'cgroup file descriptors kept open between scrapes.', 'gauge', () => [
    { value: openFiles(), labels: {} },
  ]);
  const fact = (name: string, help: string, pick: (f: NodeFacts) => number) =>
    scrape(name, help, 'gauge', async () => {
      const f = await facts.get();
      return f ? [{ value: pick(f), labels: {} }] : [];
    });
  fact('resizelet_node_cpus', 'Logical CPUs of the node (systeminformation).', (f) => f.cpus);
  fact(
    'resizelet_node_physical_cores',
    'Physical CPU cores of the node (systeminformation).',
    (f) => f.physicalCores,
  );
  fact(
    'resizelet_node_memory_bytes',
    'Memory installed in the node (systeminformation).',
    (f) => f.memoryBytes,
  );
  scrape('resizelet_node_info', 'The node this agent runs on; always 1.', 'gauge', async () => {
    const f = await facts.get();
    return [{ value: 1, labels: { node: deps.nodeName, cpu_model: f?.cpuModel ?? '' } }];
  });
}

function splitKey(key: string): [string, string] {
  const i = key.indexOf('/');
  return [key.slice(0, i), key.slice(i + 1)];
}

// ---------------------------------------------------------------------------------------------------------
// JSON view

const wireSide = (side: Record<string, string | number | undefined> | undefined): WireResourceValues => {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(side ?? {})) if (v !== undefined) out[k] = String(v);
  return out;
};

function cgroupJson(c: ScannedCgroup) {
  const s: CgroupStats = c.stats;
  return {
    id: c.labels.id,
    cpuQuotaUs: s.cpuQuotaUs,
    cpuPeriodUs: s.cpuPeriodUs,
    /** The CPU limit the quota enforces, in millicores (null: none). */
    cpuLimitMilli:
      s.cpuQuotaUs === null || s.cpuPeriodUs === 0 ? null : Math.round((s.cpuQuotaUs * 1000) / s.cpuPeriodUs),
    cpuShares: s.cpuShares,
    memoryLimitBytes: s.memoryLimitBytes,
  };
}

function usageJson(s: CgroupStats) {
  return {
    cpuSeconds: s.cpuUsageNs / 1e9,
    cfsPeriods: s.cfs?.periods ?? null,
    cfsThrottledPeriods: s.cfs?.throttledPeriods ?? null,
    cfsThrottledSeconds: s.cfs ? s.cfs.throttledNs / 1e9 : null,
    memoryBytes: s.memoryUsageBytes,
    workingSetBytes: s.workingSetBytes,
    rssBytes: s.rssBytes,
    oomKills: s.oomKills,
  };
}

/** A walk's cgroups by pod key. */
function byPod(cgroups: readonly ScannedCgroup[]): Map<string, ScannedCgroup[]> {
  const out = new Map<string, ScannedCgroup[]>();
  for (const c of cgroups) {
    if (c.podKey === undefined) continue;
    const list = out.get(c.podKey);
    if (list) list.push(c);
    else out.set(c.podKey, [c]);
  }
  return out;
}

function podJson(pod: PodLike, view: PodView | undefined, mine: readonly ScannedCgroup[]) {
  const podCgroup = mine.find((c) => c.level === 'pod');
  const sandbox = mine.find((c) => c.level === 'sandbox');
  const allocated = new Map(
    (view?.allocation ?? []).map((a) => [a.name, toWireAllocation(a.name, a.resources)]),
  );
  const statuses = new Map((pod.status?.containerStatuses ?? []).map((s) => [s.name, s]));
  const status = view?.status;
  return {
    namespace: pod.metadata?.namespace ?? '',
    name: pod.metadata?.name ?? '',
    uid: pod.metadata?.uid ?? '',
    qosClass: pod.status?.qosClass ?? null,
    phase: pod.status?.phase ?? null,
    resize: status
      ? {
          status: status.resizeStatus,
          message: status.message ?? null,
          lastTransitionTime: status.lastTransitionTime,
          observedRequest: status.observedRequest ?? null,
          source: status.source ?? null,
        }
      : null,
    cgroup: podCgroup ? { ...cgroupJson(podCgroup), usage: usageJson(podCgroup.stats) } : null,
    sandbox: sandbox ? { id: sandbox.labels.id, usage: usageJson(sandbox.stats) } : null,
    containers: (pod.spec?.containers ?? []).map((c) => {
      const cg = mine.find((x) => x.level === 'container' && x.labels.container === c.name);
      const a = allocated.get(c.name);
      return {
        name: c.name,
        containerID: statuses.get(c.name)?.containerID ?? null,
        spec: { requests: wireSide(c.resources?.requests), limits: wireSide(c.resources?.limits) },
        allocated: a ? { requests: a.requests, limits: a.limits } : null,
        cgroup: cg ? cgroupJson(cg) : null,
        usage: cg ? usageJson(cg.stats) : null,
      };
    }),
  };
}

// ---------------------------------------------------------------------------------------------------------
// The app

export async function buildHttpApp(deps: HttpDeps): Promise<FastifyInstance> {
  const app = Fastify({ logger: false });
  const layout = deps.layout;
  const reader = layout
    ? createStatsReader({ fs: deps.files, layout, maxOpenFiles: deps.maxOpenFiles })
    : undefined;
  const scanner =
    reader && layout ? createNodeScanner({ reader, layout, sandboxImage: deps.sandboxImage }) : undefined;
  const noLayout: NodeScan = {
    cgroups: [],
    problems: [{ path: '', code: 'RESIZELET_ERR_NO_CGROUP_LAYOUT', message: 'cgroup layout unknown' }],
    durationMs: 0,
  };
  // What the resizelet_scrape_* series report of the last walk: a summary, not the walk itself, whose
  // ~1,000 stats objects (~300 KB on a busy node) would otherwise stay alive until the next scrape.
  let latest: WalkSummary | undefined;
  // Full walks are shared by concurrent callers and followed by a sweep of descriptors of vanished cgroups.
  const fullScan = sharedScan(async () => {
    const s = scanner ? await scanner.scan({ pods: deps.pods() }) : noLayout;
    reader?.sweep();
    latest = { cgroups: s.cgroups.length, durationMs: s.durationMs, problems: s.problems };
    return s;
  });
  const renderer = createCadvisorRenderer();

  const registry = new Registry();
  registerResizeletMetrics(
    registry,
    deps,
    () => latest,
    deps.nodeFacts ?? createNodeFacts(),
    () => reader?.openFiles ?? 0,
  );
  if (deps.processMetrics !== false) {
    // The event-loop lag histogram samples on a timer: prom-client's default 10 ms wakes an idle agent 100
    // times a second (~2 millicores); every stall still delays the next 50 ms tick by its full length.
    collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 50 });
    // It lists /proc/self/fd on every scrape: with the ~9k cgroup descriptors a busy node keeps open that is
    // 10-90 ms of blocked event loop. resizelet_scrape_open_files counts the ones this endpoint holds.
    registry.removeSingleMetric('process_open_fds');
  }

  app.addHook('onClose', async () => reader?.close());

  app.get('/metrics', async (req, reply) => {
    const scan = await fullScan();
    const rest = await Registry.merge([deps.metrics.registry, registry]).metrics();
    const text = renderer.render(scan, `\n${rest}`);
    reply.type(registry.contentType);
    // Prometheus asks for gzip: ~3 MB of repetitive labels per scrape on a busy node shrink ~7x. One
    // compression call on libuv's threads with an output buffer large enough for the whole result: fed
    // through a stream in 16 KiB pieces the same bytes cost ~4 ms more of the event loop per scrape in
    // callbacks and writes, and ~30 ms more latency on the 2-core bench machine.
    if (/\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''))) {
      const zipped = await gzipAsync(text.bytes, { level: constants.Z_BEST_SPEED, chunkSize: GZIP_CHUNK });
      // zlib has read all of it. (On an error it is not given back: zlib's thread may still hold it.)
      text.release();
      return reply.header('content-encoding', 'gzip').header('vary', 'accept-encoding').send(zipped);
    }
    // The socket writes from the buffer itself: it is free once the response has been handed to the
    // kernel ('finish'); an aborted response leaves it to the garbage collector.
    reply.raw.once('finish', text.release);
    return reply.send(text.bytes);
  });

  const startedAt = performance.now();
  app.get('/healthz', async () => {
    // Answering proves the loop runs; one more turn measures how long callbacks wait right now.
    const t = performance.now();
    await new Promise((resolve) => setImmediate(resolve));
    return { ok: true, uptimeSeconds: (t - startedAt) / 1000, eventLoopTurnMs: performance.now() - t };
  });

  app.get('/readyz', async (_req, reply) => {
    const reasons: string[] = [];
    if (!deps.informer.synced) reasons.push('pod cache not synced yet');
    if (!layout || !reader) reasons.push('cgroup layout unknown (detection failed)');
    else if (!reader.exists(layout.podsRoot)) {
      const mounts = [...new Set(Object.values(layout.controllers).map((c) => c.mount))].join(', ');
      reasons.push(`cgroup root "${layout.podsRoot}" not found under ${mounts}`);
    }
    if (reasons.length > 0) return reply.code(503).send({ ready: false, reasons });
    return { ready: true };
  });

  const viewsByKey = () => new Map(deps.views().map((v) => [v.key, v]));

  app.get('/api/v1/pods', async () => {
    const scan = await fullScan();
    const views = viewsByKey();
    const cgroups = byPod(scan.cgroups);
    return {
      node: deps.nodeName,
      pods: deps.pods().map((p) => podJson(p, views.get(podKey(p)), cgroups.get(podKey(p)) ?? [])),
      problems: scan.problems,
    };
  });

  app.get<{ Params: { namespace: string; name: string } }>(
    '/api/v1/pods/:namespace/:name',
    async (req, reply) => {
      const { namespace, name } = req.params;
      const pod = deps.pods().find((p) => p.metadata?.namespace === namespace && p.metadata?.name === name);
      if (!pod)
        return reply
          .code(404)
          .send({ error: 'NotFound', message: `no pod ${namespace}/${name} on node ${deps.nodeName}` });
      const scan = scanner ? await scanner.scan({ pods: [pod], only: pod }) : noLayout;
      const key = podKey(pod);
      const mine = byPod(scan.cgroups).get(key) ?? [];
      return { ...podJson(pod, viewsByKey().get(key), mine), problems: scan.problems };
    },
  );

  return app;
}
