// The fake API server driven by the real @kubernetes/client-node: if these pass, the agent's
// client code runs its production paths (generated calls, Watch, ListWatch) against the fake.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import * as k8s from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startFakeApiServer } from '../fakes/apiserver.ts';
import type { FakeApiServer, Pod } from '../fakes/apiserver.ts';

const MERGE = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);
const STRATEGIC = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.StrategicMergePatch);

function pod(name: string, nodeName: string, extra: Partial<Pod> = {}): Pod {
  return {
    metadata: { name, namespace: 'default', labels: { app: 'web' } },
    spec: {
      nodeName,
      containers: [
        { name: 'app', image: 'nginx', resources: { requests: { cpu: '100m' }, limits: { cpu: '1' } } },
      ],
    },
    status: { phase: 'Running' },
    ...extra,
  };
}

/** Polls until `check` stops throwing; client-side reactions to server events are asynchronous. */
async function eventually(check: () => void, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      check();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

async function apiError(p: Promise<unknown>): Promise<{ code: number; status: Record<string, unknown> }> {
  const err = await p.then(
    () => {
      throw new Error('expected the call to fail');
    },
    (e: unknown) => e,
  );
  if (!(err instanceof k8s.ApiException)) throw err;
  // client-node 2.x keeps an error response's body as the raw text.
  return { code: err.code, status: JSON.parse(err.body as string) as Record<string, unknown> };
}

let server: FakeApiServer;
let kc: k8s.KubeConfig;
let core: k8s.CoreV1Api;
const cleanups: (() => unknown)[] = [];

beforeEach(async () => {
  server = await startFakeApiServer({ bookmarkIntervalMs: 50 });
  kc = server.kubeConfig();
  core = kc.makeApiClient(k8s.CoreV1Api);
  server.upsertNode({
    metadata: { name: 'node-a', labels: { 'kubernetes.io/hostname': 'node-a' } },
    status: { capacity: { cpu: '4', memory: '8Gi' }, allocatable: { cpu: '3800m', memory: '7Gi' } },
  });
  server.upsertPod(pod('a1', 'node-a'));
  server.upsertPod(
    pod('b1', 'node-b', { metadata: { name: 'b1', namespace: 'default', labels: { app: 'db' } } }),
  );
  server.upsertPod(pod('k1', 'node-a', { metadata: { name: 'k1', namespace: 'kube-system' } }));
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await server.close();
});

const names = (items: readonly { metadata?: { name?: string } }[]) =>
  items.map((p) => p.metadata?.name).sort();

describe('reads', () => {
  it('lists pods by node with a field selector, in one namespace and across all', async () => {
    const ns = await core.listNamespacedPod({ namespace: 'default', fieldSelector: 'spec.nodeName=node-a' });
    expect(names(ns.items)).toEqual(['a1']);
    expect(ns.metadata?.resourceVersion).toBe(server.resourceVersion());
    const all = await core.listPodForAllNamespaces({ fieldSelector: 'spec.nodeName=node-a' });
    expect(names(all.items)).toEqual(['a1', 'k1']);
    const byLabel = await core.listPodForAllNamespaces({ labelSelector: 'app=db' });
    expect(names(byLabel.items)).toEqual(['b1']);
    const byName = await core.listPodForAllNamespaces({ fieldSelector: 'metadata.name=k1' });
    expect(names(byName.items)).toEqual(['k1']);
  });

  it('pages with limit and continue', async () => {
    const first = await core.listPodForAllNamespaces({ limit: 2 });
    expect(first.items).toHaveLength(2);
    expect(first.metadata?.remainingItemCount).toBe(1);
    const rest = await core.listPodForAllNamespaces({ limit: 2, _continue: first.metadata!._continue! });
    expect(names([...first.items, ...rest.items])).toEqual(['a1', 'b1', 'k1']);
    expect(rest.metadata?._continue).toBeUndefined();
  });

  it('rejects a field label pods do not register with 400', async () => {
    const { code, status } = await apiError(
      core.listPodForAllNamespaces({ fieldSelector: 'spec.priority=1' }),
    );
    expect(code).toBe(400);
    expect(status).toMatchObject({
      kind: 'Status',
      reason: 'BadRequest',
      message: 'field label not supported: spec.priority',
    });
  });

  it('reads a pod, and answers a missing one with a NotFound Status', async () => {
    const p = await core.readNamespacedPod({ name: 'a1', namespace: 'default' });
    expect(p.spec?.nodeName).toBe('node-a');
    expect(p.metadata?.uid).toMatch(/^[0-9a-f-]{36}$/);
    expect(p.metadata?.creationTimestamp).toBeInstanceOf(Date);
    const { code, status } = await apiError(core.readNamespacedPod({ name: 'nope', namespace: 'default' }));
    expect(code).toBe(404);
    expect(status).toEqual({
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: 'pods "nope" not found',
      reason: 'NotFound',
      details: { name: 'nope', kind: 'pods' },
      code: 404,
    });
  });

  it('reads a node with allocatable and capacity, and sees setNodeAllocatable', async () => {
    const before = await core.readNode({ name: 'node-a' });
    expect(before.status?.allocatable).toEqual({ cpu: '3800m', memory: '7Gi' });
    server.setNodeAllocatable('node-a', { cpu: '2' });
    const after = await core.readNode({ name: 'node-a' });
    expect(after.status?.allocatable).toEqual({ cpu: '2', memory: '7Gi' });
    expect(after.status?.capacity).toEqual({ cpu: '4', memory: '8Gi' });
  });

  it('serves namespaces, resource quotas and limit ranges', async () => {
    await core.createNamespacedResourceQuota({
      namespace: 'default',
      body: { metadata: { name: 'q' }, spec: { hard: { 'requests.cpu': '10' } } },
    });
    server.upsertObject({
      apiVersion: 'v1',
      kind: 'LimitRange',
      metadata: { name: 'lr', namespace: 'team' },
      spec: { limits: [{ type: 'Container', max: { cpu: '2' } }] },
    });
    expect(names((await core.listResourceQuotaForAllNamespaces()).items)).toEqual(['q']);
    expect((await core.readNamespacedResourceQuota({ name: 'q', namespace: 'default' })).spec?.hard).toEqual({
      'requests.cpu': '10',
    });
    const limits = await core.listNamespacedLimitRange({ namespace: 'team' });
    expect(limits.items[0]?.spec?.limits[0]?.max).toEqual({ cpu: '2' });
    expect(names((await core.listLimitRangeForAllNamespaces()).items)).toEqual(['lr']);
    const team = await core.listNamespace({ labelSelector: 'kubernetes.io/metadata.name=team' });
    expect(names(team.items)).toEqual(['team']);
    expect((await core.readNamespace({ name: 'team' })).status?.phase).toBe('Active');
    const { code } = await apiError(
      core.createNamespacedResourceQuota({ namespace: 'ghost', body: { metadata: { name: 'q' } } }),
    );
    expect(code).toBe(404);
  });

  it('answers discovery, /version and /healthz, and 401 without the token', async () => {
    expect((await kc.makeApiClient(k8s.VersionApi).getCode()).gitVersion).toMatch(/^v1\.\d+/);
    expect(await (await fetch(`${server.url}/healthz`)).text()).toBe('ok');
    const unauth = await fetch(`${server.url}/api/v1/pods`);
    expect(unauth.status).toBe(401);
    const groups = await kc.makeApiClient(k8s.ApisApi).getAPIVersions();
    expect(groups.groups.map((g) => g.name)).toContain('events.k8s.io');
    const v1 = await core.getAPIResources();
    expect(v1.resources.map((r) => r.name)).toEqual(
      expect.arrayContaining(['pods', 'pods/status', 'pods/resize', 'nodes']),
    );
  });
});

describe('writes', () => {
  it('applies a merge patch sent with setHeaderOptions, null deleting a key', async () => {
    server.upsertPod(
      pod('a1', 'node-a', { metadata: { name: 'a1', namespace: 'default', annotations: { old: 'x' } } }),
    );
    const rv = Number(server.resourceVersion());
    const out = await core.patchNamespacedPod(
      { name: 'a1', namespace: 'default', body: { metadata: { annotations: { old: null, new: 'y' } } } },
      MERGE,
    );
    expect(out.metadata?.annotations).toEqual({ new: 'y' });
    expect(Number(out.metadata?.resourceVersion)).toBe(rv + 1);
    expect(server.requests.at(-1)).toMatchObject({
      method: 'PATCH',
      path: '/api/v1/namespaces/default/pods/a1',
      contentType: 'application/merge-patch+json',
      status: 200,
      rbac: { verb: 'patch', apiGroup: '', resource: 'pods', namespace: 'default', name: 'a1' },
    });
  });

  it('applies a JSON patch (client-node default) and answers a failed test op with 422', async () => {
    const out = await core.patchNamespacedPod({
      name: 'a1',
      namespace: 'default',
      body: [
        { op: 'test', path: '/spec/nodeName', value: 'node-a' },
        { op: 'add', path: '/metadata/labels/resized', value: 'true' },
      ],
    });
    expect(out.metadata?.labels).toEqual({ app: 'web', resized: 'true' });
    expect(server.requests.at(-1)?.contentType).toBe('application/json-patch+json');
    const { code, status } = await apiError(
      core.patchNamespacedPod({
        name: 'a1',
        namespace: 'default',
        body: [{ op: 'test', path: '/metadata/labels/resized', value: 'false' }],
      }),
    );
    expect(code).toBe(422);
    expect(status).toMatchObject({ reason: 'Invalid' });
    const apply = await apiError(
      core.patchNamespacedPod(
        { name: 'a1', namespace: 'default', body: { metadata: { labels: { x: 'y' } } } },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.ServerSideApply),
      ),
    );
    expect(apply.code).toBe(415);
  });

  it('answers a stale resourceVersion with 409 Conflict on PATCH and PUT', async () => {
    const p = await core.readNamespacedPod({ name: 'a1', namespace: 'default' });
    const stale = p.metadata!.resourceVersion!;
    server.upsertPod(
      pod('a1', 'node-a', { metadata: { name: 'a1', namespace: 'default', labels: { app: 'web2' } } }),
    );
    const patched = await apiError(
      core.patchNamespacedPod(
        {
          name: 'a1',
          namespace: 'default',
          body: { metadata: { resourceVersion: stale, labels: { x: 'y' } } },
        },
        MERGE,
      ),
    );
    expect(patched.code).toBe(409);
    expect(patched.status).toMatchObject({
      reason: 'Conflict',
      message: expect.stringContaining('the object has been modified'),
    });
    const put = await apiError(core.replaceNamespacedPod({ name: 'a1', namespace: 'default', body: p }));
    expect(put.code).toBe(409);
    // Without a resourceVersion the write is unconditional.
    const ok = await core.patchNamespacedPod(
      { name: 'a1', namespace: 'default', body: { metadata: { labels: { x: 'y' } } } },
      MERGE,
    );
    expect(ok.metadata?.labels).toEqual({ app: 'web2', x: 'y' });
  });

  it('keeps status out of main-endpoint writes and spec out of /status, like the real registry', async () => {
    const main = await core.patchNamespacedPod(
      { name: 'a1', namespace: 'default', body: { status: { phase: 'Failed' } } },
      MERGE,
    );
    expect(main.status?.phase).toBe('Running');
    const viaStatus = await core.patchNamespacedPodStatus(
      { name: 'a1', namespace: 'default', body: { status: { phase: 'Succeeded' } } },
      MERGE,
    );
    expect(viaStatus.status?.phase).toBe('Succeeded');
  });

  it('changes container resources only through pods/resize, merging containers by name', async () => {
    const body = { spec: { containers: [{ name: 'app', resources: { limits: { cpu: '2' } } }] } };
    const rejected = await apiError(
      core.patchNamespacedPod({ name: 'a1', namespace: 'default', body }, STRATEGIC),
    );
    expect(rejected.code).toBe(422);
    const out = await core.patchNamespacedPodResize({ name: 'a1', namespace: 'default', body }, STRATEGIC);
    expect(out.spec?.containers[0]).toMatchObject({
      name: 'app',
      image: 'nginx',
      resources: { limits: { cpu: '2' } },
    });
    expect(out.metadata?.generation).toBe(2);
  });

  it('creates, replaces and deletes a pod over HTTP', async () => {
    const created = await core.createNamespacedPod({
      namespace: 'default',
      body: { metadata: { name: 'c1' }, spec: { containers: [{ name: 'app', image: 'busybox' }] } },
    });
    expect(created.status?.phase).toBe('Pending');
    expect((await apiError(core.createNamespacedPod({ namespace: 'default', body: created }))).code).toBe(
      400,
    );
    const again = { ...created, metadata: { ...created.metadata, resourceVersion: undefined } };
    expect(
      (await apiError(core.createNamespacedPod({ namespace: 'default', body: again }))).status,
    ).toMatchObject({
      reason: 'AlreadyExists',
    });
    created.metadata!.labels = { v: '2' };
    const replaced = await core.replaceNamespacedPod({ name: 'c1', namespace: 'default', body: created });
    expect(replaced.metadata?.labels).toEqual({ v: '2' });
    await core.deleteNamespacedPod({ name: 'c1', namespace: 'default' });
    expect(server.getPod('default', 'c1')).toBeUndefined();
  });

  it('stores core/v1 and events.k8s.io/v1 events', async () => {
    await core.createNamespacedEvent({
      namespace: 'default',
      body: {
        metadata: { generateName: 'a1.' },
        involvedObject: { kind: 'Pod', name: 'a1', namespace: 'default' },
        reason: 'Resized',
        message: 'cpu limit 1 -> 2',
        type: 'Normal',
      },
    });
    await kc.makeApiClient(k8s.EventsV1Api).createNamespacedEvent({
      namespace: 'default',
      body: {
        metadata: { name: 'a1.resize' },
        eventTime: new Date(),
        reportingController: 'resizelet',
        reportingInstance: 'node-a',
        action: 'Resize',
        reason: 'Resized',
        regarding: { kind: 'Pod', name: 'a1', namespace: 'default' },
        note: 'cpu limit 1 -> 2',
        type: 'Normal',
      },
    });
    const events = server.events();
    expect(events.map((e) => [e.apiVersion, e.reason])).toEqual([
      ['v1', 'Resized'],
      ['events.k8s.io/v1', 'Resized'],
    ]);
    expect(events[0]?.metadata?.name).toMatch(/^a1\./);
    expect((await core.listNamespacedEvent({ namespace: 'default' })).items).toHaveLength(1);
  });
});

describe('failures on demand', () => {
  it('fails matching requests with an injected status, then recovers', async () => {
    const fault = server.injectFault({
      method: 'GET',
      pathPrefix: '/api/v1/namespaces/default/pods',
      status: 500,
      times: 1,
    });
    const { code, status } = await apiError(core.readNamespacedPod({ name: 'a1', namespace: 'default' }));
    expect(code).toBe(500);
    expect(status).toMatchObject({ kind: 'Status', reason: 'InternalError', code: 500 });
    await core.readNamespacedPod({ name: 'a1', namespace: 'default' });
    expect(fault.hits).toBe(1);
  });

  it('drops connections while unreachable, then serves again', async () => {
    await core.readNamespacedPod({ name: 'a1', namespace: 'default' }); // a pooled keep-alive socket now exists
    server.setUnreachable(true);
    await expect(core.readNamespacedPod({ name: 'a1', namespace: 'default' })).rejects.toThrow();
    server.setUnreachable(false);
    expect((await core.readNamespacedPod({ name: 'a1', namespace: 'default' })).metadata?.name).toBe('a1');
  });
});

describe('watch', () => {
  it('streams ADDED, MODIFIED, DELETED and BOOKMARK to k8s.Watch', async () => {
    const seen: string[] = [];
    let done: unknown = 'open';
    const req = await new k8s.Watch(kc).watch(
      '/api/v1/namespaces/default/pods',
      { allowWatchBookmarks: true, resourceVersion: server.resourceVersion() },
      (type: string, obj: k8s.V1Pod) => seen.push(`${type} ${obj.metadata?.name ?? ''}`),
      (err: unknown) => (done = err),
    );
    cleanups.push(() => req.abort());
    server.upsertPod(pod('w1', 'node-a'));
    server.upsertPod(pod('w1', 'node-a', { status: { phase: 'Succeeded' } }));
    server.deletePod('default', 'w1');
    await eventually(() => {
      expect(seen.filter((s) => !s.startsWith('BOOKMARK'))).toEqual([
        'ADDED w1',
        'MODIFIED w1',
        'DELETED w1',
      ]);
      expect(seen).toContain('BOOKMARK ');
    });
    server.closeWatches();
    await eventually(() => expect(done).toBeNull());
  });

  it('filters by field selector: a pod leaving the node is DELETED for that watcher', async () => {
    const seen: string[] = [];
    const req = await new k8s.Watch(kc).watch(
      '/api/v1/pods',
      { fieldSelector: 'spec.nodeName=node-a' },
      (type: string, obj: k8s.V1Pod) => seen.push(`${type} ${obj.metadata?.name}`),
      () => {},
    );
    cleanups.push(() => req.abort());
    server.upsertPod(pod('b1', 'node-a'));
    server.upsertPod(pod('a1', 'node-b'));
    await eventually(() =>
      // Without a resourceVersion the watch starts with synthetic ADDED events for what exists.
      expect(seen).toEqual(['ADDED a1', 'ADDED k1', 'ADDED b1', 'DELETED a1']),
    );
  });

  it('sends an ERROR event with a 410 Expired Status for a resourceVersion older than the history', async () => {
    const old = server.resourceVersion();
    server.upsertPod(pod('x', 'node-a'));
    server.expireHistory();
    const seen: [string, unknown][] = [];
    let done: unknown = 'open';
    await new k8s.Watch(kc).watch(
      '/api/v1/pods',
      { resourceVersion: old },
      (type: string, obj: unknown) => seen.push([type, obj]),
      (err: unknown) => (done = err),
    );
    await eventually(() => expect(done).toBeNull());
    expect(seen).toEqual([
      [
        'ERROR',
        expect.objectContaining({
          kind: 'Status',
          code: 410,
          reason: 'Expired',
          message: expect.stringContaining('too old resource version'),
        }),
      ],
    ]);
  });
});

describe('ListWatch (client-node informer) against the fake', () => {
  const path = '/api/v1/namespaces/default/pods';
  const fieldSelector = 'spec.nodeName=node-a';

  async function startInformer() {
    const log = { connects: 0, errors: [] as unknown[], deleted: [] as string[], delays: [] as number[] };
    const lw = new k8s.ListWatch<k8s.V1Pod>(
      path,
      new k8s.Watch(kc),
      () => core.listNamespacedPod({ namespace: 'default', fieldSelector }),
      false,
      undefined,
      fieldSelector,
      // Records the reconnect backoff instead of sleeping through it.
      { delayFn: async (ms) => void log.delays.push(ms) },
    );
    lw.on('connect', () => log.connects++);
    lw.on('error', (err) => log.errors.push(err));
    lw.on('delete', (p) => log.deleted.push(p.metadata!.name!));
    cleanups.push(() => lw.stop());
    await lw.start();
    return { lw, log };
  }

  it('follows adds, moves off the node and deletes', async () => {
    const { lw, log } = await startInformer();
    expect(names(lw.list())).toEqual(['a1']);
    server.upsertPod(pod('a2', 'node-a'));
    server.upsertPod(pod('a1', 'node-b'));
    await eventually(() => expect(names(lw.list())).toEqual(['a2']));
    expect(log.deleted).toEqual(['a1']);
    expect(log.errors).toEqual([]);
    // What a Role for this informer has to grant.
    const rules = new Set(
      server.requests.map((r) => 'resource' in r.rbac && `${r.rbac.verb} ${r.rbac.resource}`),
    );
    expect([...rules].sort()).toEqual(['list pods', 'watch pods']);
  });

  it('resumes after a clean close, and relists after 410 in the stream, converging on missed changes', async () => {
    const { lw, log } = await startInformer();
    const lastRv = lw.latestResourceVersion();
    server.clearRequests();
    // The stream ends, then changes happen that no watcher sees, then their history is gone.
    server.closeWatches();
    server.deletePod('default', 'a1');
    server.upsertPod(pod('a3', 'node-a'));
    server.expireHistory();
    await eventually(() => expect(names(lw.list())).toEqual(['a3']));
    await eventually(() => expect(server.openWatchCount()).toBe(1));
    expect(log.deleted).toEqual(['a1']);
    expect(log.errors).toEqual([]); // a 410 is handled silently, never reported as 'error'
    expect(
      server.requests.map((r) => [r.watch ? 'watch' : 'list', r.query['resourceVersion'] ?? '']),
    ).toEqual([
      ['watch', lastRv], // resume where it left off ...
      ['list', ''], // ... get ERROR 410 Expired, drop the resourceVersion, relist ...
      ['watch', lw.latestResourceVersion()], // ... and watch from the list's resourceVersion.
    ]);
    expect(log.connects).toBe(3);
    // Backoff: a reconnect with no watch event since the last one doubles the delay (1 s, 2 s, ...
    // up to 30 s), and only a received event resets it. The relist itself is not delayed.
    expect(log.delays).toEqual([1000]);
  });

  it('relists when the watch request itself is answered with HTTP 410', async () => {
    const { lw, log } = await startInformer();
    server.injectFault({ pathPrefix: path, watch: true, status: 410, times: 1 });
    server.closeWatches();
    server.upsertPod(pod('a4', 'node-a'));
    await eventually(() => expect(names(lw.list())).toEqual(['a1', 'a4']));
    expect(log.errors).toEqual([]);
    expect(server.requests.filter((r) => !r.watch && r.method === 'GET')).toHaveLength(2);
  });

  it('stops on a dropped connection, reporting it as an error, until started again', async () => {
    const { lw, log } = await startInformer();
    server.setUnreachable(true);
    await eventually(() => expect(log.errors.length).toBeGreaterThan(0));
    server.setUnreachable(false);
    server.upsertPod(pod('a5', 'node-a'));
    await new Promise((r) => setTimeout(r, 100));
    // ListWatch does not restart itself after an error that is not a 410 or a client timeout.
    expect(names(lw.list())).toEqual(['a1']);
    expect(server.openWatchCount()).toBe(0);
    await lw.start();
    await eventually(() => expect(names(lw.list())).toEqual(['a1', 'a5']));
  });
});

describe('apiserver-main', () => {
  it('serves a state file as a separate process and exits on SIGTERM', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fake-apiserver-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const state = join(dir, 'state.json');
    const kubeconfig = join(dir, 'kubeconfig');
    await writeFile(
      state,
      JSON.stringify({ nodes: [{ metadata: { name: 'n1' } }], pods: [pod('p1', 'n1')] }),
    );
    const main = fileURLToPath(new URL('../fakes/apiserver-main.ts', import.meta.url));
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', main, '--state', state, '--kubeconfig', kubeconfig],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    cleanups.push(() => child.exitCode === null && child.kill('SIGKILL'));
    const [line] = (await once(createInterface(child.stdout), 'line')) as [string];
    const { url } = JSON.parse(line) as { url: string };
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const remote = new k8s.KubeConfig();
    remote.loadFromFile(kubeconfig);
    const api = remote.makeApiClient(k8s.CoreV1Api);
    expect(names((await api.listPodForAllNamespaces({ fieldSelector: 'spec.nodeName=n1' })).items)).toEqual([
      'p1',
    ]);
    child.kill('SIGTERM');
    const [code] = (await once(child, 'exit')) as [number | null];
    expect(code).toBe(0);
  });
});
