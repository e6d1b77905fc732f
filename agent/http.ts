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
//
// The resizelet_* families are in http/resizelet-metrics.ts, the JSON view in http/pod-view.ts; this module
// wires the cgroup walk, the registry and the routes.
import { promisify } from 'node:util';
import { constants, gzip } from 'node:zlib';
import Fastify, { type FastifyInstance } from 'fastify';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { createCadvisorRenderer } from './cadvisor/render.ts';
import { createNodeScanner, sharedScan } from './cadvisor/scanner.ts';
import type { NodeScan } from './cadvisor/targets.ts';
import { createStatsReader } from './cgroup-stats.ts';
import type { HttpDeps } from './http/deps.ts';
import { byPod, podJson } from './http/pod-view.ts';
import { registerResizeletMetrics, type WalkSummary } from './http/resizelet-metrics.ts';
import { createNodeFacts } from './node-facts.ts';
import { podKey } from './resize/pod.ts';

export type { HttpDeps } from './http/deps.ts';

const gzipAsync = promisify(gzip);
/** The compression's output buffer: a busy node's ~0.5 MB in one piece, so no concatenation. */
const GZIP_CHUNK = 512 * 1024;

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
  registerResizeletMetrics(registry, deps, {
    latest: () => latest,
    facts: deps.nodeFacts ?? createNodeFacts(),
    openFiles: () => reader?.openFiles ?? 0,
  });
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
