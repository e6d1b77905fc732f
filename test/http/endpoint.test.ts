// The endpoint's routes, driven without a socket: probes, the JSON view, resizelet's own series next to the
// cAdvisor ones, and the promise of no write route.
import { gunzipSync } from 'node:zlib';
import { describe, expect, test } from 'vitest';
import { buildHttpApp, type HttpDeps } from '../../agent/http.ts';
import type { PodView } from '../../agent/reconcile/reconciler.ts';
import type { PodLike } from '../../agent/resize/pod.ts';
import { buildNodeTree, CGROUP_ROOT } from '../support/cgroup-tree.ts';
import { memSyncFs, parseExposition, plainDeps, seriesKey } from './helpers.ts';

const Mi = 1024n * 1024n;
const id = (c: string) => c.repeat(64);

function node() {
  const tree = buildNodeTree({
    version: 'v1',
    driver: 'cgroupfs',
    runtime: 'containerd',
    pods: [
      {
        uid: '11111111-2222-3333-4444-555555555555',
        qos: 'Burstable',
        name: 'web',
        namespace: 'shop',
        containers: [
          {
            id: id('a'),
            name: 'app',
            cpuRequestMilli: 250,
            cpuLimitMilli: 500,
            memoryRequestBytes: 64n * Mi,
            memoryLimitBytes: 128n * Mi,
            usage: { cpuUsageNs: 2_000_000_000n, memoryUsageBytes: 30n * Mi, rssBytes: 20n * Mi },
          },
        ],
      },
      {
        uid: '66666666-2222-3333-4444-555555555555',
        qos: 'BestEffort',
        name: 'batch',
        namespace: 'jobs',
        containers: [{ id: id('b'), name: 'worker' }],
      },
    ],
  });
  const pods = tree.apiPods as PodLike[];
  // resizelet resized web/app to 1 CPU / 256Mi limits: the cgroups hold it, the spec still says 500m/128Mi.
  const allocation = {
    requests: { cpu: 500, memory: 64n * Mi },
    limits: { cpu: 1000, memory: 256n * Mi },
  };
  const path = tree.pods[0]!.containers[0]!.path;
  tree.vol.writeFileSync(`${CGROUP_ROOT}/cpu/${path}/cpu.cfs_quota_us`, '100000\n');
  tree.vol.writeFileSync(`${CGROUP_ROOT}/memory/${path}/memory.limit_in_bytes`, `${256n * Mi}\n`);
  const views: PodView[] = [
    {
      key: 'shop/web',
      uid: tree.pods[0]!.uid,
      allocation: [{ name: 'app', resources: allocation }],
      status: {
        resizeStatus: 'Completed',
        allocatedResources: [],
        lastTransitionTime: '2026-11-22T10:00:00Z',
        observedRequest: '0123456789abcdef',
        message: 'resized app in place (4 cgroup writes)',
      },
      containerIds: {},
    },
  ];
  return { tree, pods, views };
}

async function appFor(extra: Partial<HttpDeps> = {}, synced = true) {
  const { tree, pods, views } = node();
  const deps = plainDeps({ files: memSyncFs(tree.vol), layout: tree.layout, pods, views, synced, extra });
  return { app: await buildHttpApp(deps), tree, pods, deps };
}

describe('probes', () => {
  test('/healthz answers while the event loop turns', async () => {
    const { app } = await appFor();
    const res = await app.inject({ method: 'GET', url: '/healthz' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ ok: true, eventLoopTurnMs: expect.any(Number) });
    await app.close();
  });

  test('/readyz: 503 with the reasons until the pod cache is synced and the cgroup root exists', async () => {
    const notSynced = await appFor({}, false);
    let res = await notSynced.app.inject({ method: 'GET', url: '/readyz' });
    expect(res.statusCode).toBe(503);
    expect(res.json()).toEqual({ ready: false, reasons: ['pod cache not synced yet'] });
    await notSynced.app.close();

    const { app, tree } = await appFor();
    expect((await app.inject({ method: 'GET', url: '/readyz' })).json()).toEqual({ ready: true });
    tree.vol.rmSync(`${CGROUP_ROOT}/memory/kubepods`, { recursive: true });
    res = await app.inject({ method: 'GET', url: '/readyz' });
    expect(res.statusCode).toBe(503);
    expect(res.json().reasons).toEqual([
      `cgroup root "kubepods" not found under ${CGROUP_ROOT}/cpu, ${CGROUP_ROOT}/cpuacct, ${CGROUP_ROOT}/memory`,
    ]);
    await app.close();

    const noLayout = await appFor({ layout: undefined });
    res = await noLayout.app.inject({ method: 'GET', url: '/readyz' });
    expect(res.json().reasons).toEqual(['cgroup layout unknown (detection failed)']);
    await noLayout.app.close();
  });
});

describe('/metrics', () => {
  test('serves the Prometheus text format, every line parseable and every family declared once', async () => {
    const { app, deps } = await appFor();
    deps.metrics.resizeRequests.inc({ status: 'Completed', source: 'user' });
    const res = await app.inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
    const helps = res.body.split('\n').filter((l) => l.startsWith('# HELP '));
    expect(new Set(helps).size).toBe(helps.length);
    const m = parseExposition(res.body);
    const one = (name: string, labels: Record<string, string> = {}) =>
      m.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
    // The engine's counters, from the agent's registry.
    expect(one('resizelet_resize_requests_total', { status: 'Completed' })[0]?.value).toBe(1);
    // The truth of the node next to the stale spec: the cgroup holds 1 CPU, the spec 500m.
    expect(one('container_spec_cpu_quota', { container: 'app' })[0]?.value).toBe(100_000);
    expect(
      one('resizelet_container_allocated_resource', { container: 'app', resource: 'cpu', type: 'limit' }),
    ).toEqual([
      expect.objectContaining({
        value: 1,
        labels: expect.objectContaining({ namespace: 'shop', pod: 'web', unit: 'core' }),
      }),
    ]);
    expect(
      one('resizelet_container_spec_resource', { container: 'app', resource: 'cpu', type: 'limit' })[0]
        ?.value,
    ).toBe(0.5);
    expect(
      one('resizelet_container_allocated_resource', {
        container: 'app',
        resource: 'memory',
        type: 'limit',
      })[0]?.value,
    ).toBe(Number(256n * Mi));
    // Only pods resizelet has allocated get the spec/allocation pair.
    expect(one('resizelet_container_spec_resource', { pod: 'batch' })).toEqual([]);
    expect(one('resizelet_pod_resize_status', { pod: 'web' })).toEqual([
      expect.objectContaining({ value: 1, labels: { namespace: 'shop', pod: 'web', status: 'Completed' } }),
    ]);
    expect(one('resizelet_informer_synced')[0]?.value).toBe(1);
    expect(one('resizelet_node_cpus')[0]?.value).toBe(2);
    expect(one('resizelet_node_memory_bytes')[0]?.value).toBe(8 * 2 ** 30);
    expect(one('resizelet_scrape_cgroups')[0]?.value).toBe(3 + 2 * 3);
    expect(one('container_scrape_error')[0]?.value).toBe(0);
    await app.close();
  });

  test("a cgroup written between two scrapes shows on the second; a deleted pod's series are gone", async () => {
    const { app, tree, pods } = await appFor();
    const quota = async () =>
      parseExposition((await app.inject({ method: 'GET', url: '/metrics' })).body).samples.filter(
        (s) => s.name === 'container_spec_cpu_quota' && s.labels.container === 'app',
      );
    expect((await quota())[0]?.value).toBe(100_000);
    tree.vol.writeFileSync(
      `${CGROUP_ROOT}/cpu/${tree.pods[0]!.containers[0]!.path}/cpu.cfs_quota_us`,
      '150000\n',
    );
    expect((await quota())[0]?.value).toBe(150_000);
    pods.splice(0, 1);
    expect(await quota()).toEqual([]);
    await app.close();
  });

  test('gzip when asked, as Prometheus does: the same exposition, a fraction of the bytes', async () => {
    const { app } = await appFor();
    const plain = await app.inject({ method: 'GET', url: '/metrics' });
    const zipped = await app.inject({
      method: 'GET',
      url: '/metrics',
      headers: { 'accept-encoding': 'gzip' },
    });
    expect(zipped.headers['content-encoding']).toBe('gzip');
    expect(plain.headers['content-encoding']).toBeUndefined();
    const text = gunzipSync(zipped.rawPayload).toString('utf8');
    const series = (t: string) =>
      parseExposition(t)
        .samples.filter((s) => s.name.startsWith('container_'))
        .map(seriesKey)
        .sort();
    expect(series(text)).toEqual(series(plain.body));
    expect(zipped.rawPayload.length).toBeLessThan(plain.rawPayload.length / 3);
    await app.close();
  });

  test('concurrent scrapes, plain and gzip, each get a whole exposition (render buffers are never shared)', async () => {
    const { app } = await appFor();
    const get = (gzip: boolean) =>
      app.inject({ method: 'GET', url: '/metrics', headers: gzip ? { 'accept-encoding': 'gzip' } : {} });
    const bodies = await Promise.all([get(false), get(true), get(false), get(true), get(false)]);
    const texts = bodies.map((r) =>
      r.headers['content-encoding'] === 'gzip' ? gunzipSync(r.rawPayload).toString('utf8') : r.body,
    );
    const series = (t: string) =>
      parseExposition(t)
        .samples.filter((s) => s.name.startsWith('container_'))
        .map((s) => `${seriesKey(s)} ${s.value}`)
        .sort();
    const first = series(texts[0]!);
    expect(first.length).toBeGreaterThan(20);
    for (const t of texts) expect(series(t)).toEqual(first);
    // And sequential scrapes after them reuse a buffer without mixing old bytes into the new text.
    const again = await get(false);
    expect(again.body.endsWith('\n')).toBe(true);
    expect(series(again.body)).toEqual(first);
    await app.close();
  });

  test('process metrics are served, except the /proc/self/fd count that costs a scan per scrape', async () => {
    const { app } = await appFor({ processMetrics: true });
    const m = parseExposition((await app.inject({ method: 'GET', url: '/metrics' })).body);
    const names = new Set(m.samples.map((s) => s.name));
    expect(names).toContain('process_cpu_seconds_total');
    expect(names).toContain('process_resident_memory_bytes');
    expect(names).not.toContain('process_open_fds');
    expect(names).toContain('resizelet_scrape_open_files');
    await app.close();
  });

  test('without a cgroup layout: no container series, container_scrape_error 1, the rest still served', async () => {
    const { app } = await appFor({ layout: undefined });
    const m = parseExposition((await app.inject({ method: 'GET', url: '/metrics' })).body);
    expect(
      m.samples.filter((s) => s.name.startsWith('container_') && s.name !== 'container_scrape_error'),
    ).toEqual([]);
    expect(m.samples.find((s) => s.name === 'container_scrape_error')?.value).toBe(1);
    expect(m.samples.some((s) => s.name === 'resizelet_informer_synced')).toBe(true);
    await app.close();
  });
});

describe('/api/v1/pods', () => {
  test('per pod and container: spec, allocation, cgroup values, usage, resize status and message', async () => {
    const { app, tree } = await appFor();
    const res = await app.inject({ method: 'GET', url: '/api/v1/pods/shop/web' });
    expect(res.statusCode).toBe(200);
    const pod = res.json();
    expect(pod).toMatchObject({
      namespace: 'shop',
      name: 'web',
      qosClass: 'Burstable',
      resize: {
        status: 'Completed',
        message: 'resized app in place (4 cgroup writes)',
        lastTransitionTime: '2026-11-22T10:00:00Z',
      },
      cgroup: { id: `/${tree.pods[0]!.path}` },
      sandbox: { id: `/${tree.pods[0]!.sandboxPath}` },
    });
    expect(pod.containers).toEqual([
      {
        name: 'app',
        containerID: `containerd://${id('a')}`,
        spec: {
          requests: { cpu: '250m', memory: String(64n * Mi) },
          limits: { cpu: '500m', memory: String(128n * Mi) },
        },
        allocated: { requests: { cpu: '500m', memory: '64Mi' }, limits: { cpu: '1', memory: '256Mi' } },
        cgroup: {
          id: `/${tree.pods[0]!.containers[0]!.path}`,
          cpuQuotaUs: 100_000,
          cpuPeriodUs: 100_000,
          cpuLimitMilli: 1000,
          cpuShares: 256,
          memoryLimitBytes: Number(256n * Mi),
        },
        usage: expect.objectContaining({
          cpuSeconds: 2,
          memoryBytes: Number(30n * Mi),
          rssBytes: Number(20n * Mi),
          oomKills: 0,
        }),
      },
    ]);
    const list = (await app.inject({ method: 'GET', url: '/api/v1/pods' })).json();
    expect(list.node).toBe('node-a');
    expect(list.pods.map((p: { name: string }) => p.name)).toEqual(['web', 'batch']);
    expect(list.pods[1]).toMatchObject({
      resize: null,
      containers: [{ name: 'worker', allocated: null, cgroup: { cpuQuotaUs: null } }],
    });
    expect((await app.inject({ method: 'GET', url: '/api/v1/pods/shop/nope' })).statusCode).toBe(404);
    await app.close();
  });

  test('nothing on the network writes: every method but GET/HEAD is refused on every route', async () => {
    const { app } = await appFor();
    for (const url of ['/metrics', '/healthz', '/readyz', '/api/v1/pods', '/api/v1/pods/shop/web']) {
      for (const method of ['POST', 'PUT', 'PATCH', 'DELETE'] as const) {
        expect({
          method,
          url,
          status: (await app.inject({ method, url, payload: '{}' })).statusCode,
        }).toEqual({
          method,
          url,
          status: 404,
        });
      }
    }
    await app.close();
  });
});
