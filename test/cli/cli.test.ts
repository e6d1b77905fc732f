// The CLI against the fake API server over real HTTP: what `resize` writes, `--wait` on each outcome
// (Completed, Rejected, timeout), the status table, and the sentence for every error. The test plays the
// agent: it answers the request annotation by writing statuses, as the real agent would.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { requestHash } from '../../agent/resize/request.ts';
import { encodeStatus, type ResourceStatus } from '../../agent/resize/status.ts';
import { runCli } from '../../bin/cli/main.ts';
import { startFakeApiServer, type FakeApiServer, type Pod } from '../fakes/apiserver.ts';
import { withAnnotations } from '../agent/support.ts';

const NS = 'shop';
let api: FakeApiServer;
let dir: string;
let kubeconfig: string;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function cli(argv: string[], env: Record<string, string | undefined> = {}): Promise<Run> {
  let stdout = '';
  let stderr = '';
  const code = await runCli(argv, {
    stdout: (t) => void (stdout += t),
    stderr: (t) => void (stderr += t),
    env: { HOME: dir, KUBECONFIG: kubeconfig, ...env },
    now: () => Date.now(),
  });
  return { code, stdout, stderr };
}

function makePod(name: string, containers: string[], extra: Partial<Pod['metadata']> = {}): Pod {
  return api.upsertPod({
    metadata: { name, namespace: NS, uid: `uid-${name}`, ...extra },
    spec: {
      nodeName: 'node-1',
      containers: containers.map((c) => ({
        name: c,
        image: 'x',
        resources: { requests: { cpu: '100m', memory: '64Mi' }, limits: { cpu: '200m', memory: '256Mi' } },
      })),
    },
    status: { phase: 'Running' },
  });
}

type Script = Array<
  Pick<ResourceStatus, 'resizeStatus' | 'message'> & {
    allocatedResources?: ResourceStatus['allocatedResources'];
  }
>;

/** Plays the agent for one pod: once a Proposed status for the current request appears, writes `script`. */
function fakeAgent(name: string, script: Script, stepMs = 60): { stop(): void } {
  let seen = '';
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    const pod = api.getPod(NS, name);
    const text = pod?.metadata?.annotations?.['resizelet.io/resize'];
    if (!pod || text === undefined || text === seen) return;
    seen = text;
    busy = true;
    void (async () => {
      for (const step of script) {
        await new Promise((r) => setTimeout(r, stepMs));
        const current = api.getPod(NS, name)!;
        api.upsertPod(
          withAnnotations(current, {
            'resizelet.io/resource-status': encodeStatus({
              allocatedResources: [],
              ...step,
              observedRequest: requestHash(text),
              lastTransitionTime: new Date().toISOString(),
            }),
          }),
        );
      }
      busy = false;
    })();
  }, 10);
  return { stop: () => clearInterval(timer) };
}

beforeAll(async () => {
  api = await startFakeApiServer({ namespaces: [NS] });
  dir = await mkdtemp(join(tmpdir(), 'resizelet-cli-'));
  kubeconfig = join(dir, 'kubeconfig');
  await api.writeKubeconfig(kubeconfig);
});

afterAll(async () => {
  await api?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

let agent: { stop(): void } | undefined;
beforeEach(() => {
  for (const p of api.pods()) api.deletePod(p.metadata!.namespace!, p.metadata!.name!);
  api.clearRequests();
});
afterEach(() => agent?.stop());

describe('resize', () => {
  it('writes the request and Proposed with one merge patch, reading the pod once', async () => {
    makePod('web', ['app']);
    const r = await cli([
      'resize',
      'web',
      '-n',
      NS,
      '--requests',
      'cpu=500m,memory=256Mi',
      '--limits',
      'cpu=1',
    ]);
    expect(r).toEqual({
      code: 0,
      stdout:
        'resize requested: pod shop/web, container app: requests cpu=500m,memory=256Mi, limits cpu=1\n' +
        'status Proposed: the resizelet agent on node node-1 will answer; follow it with: resizelet status web -n shop\n',
      stderr: '',
    });
    const calls = api.requests.map((q) => `${q.method} ${q.path} ${q.contentType ?? ''}`.trim());
    expect(calls).toEqual([
      'GET /api/v1/namespaces/shop/pods/web',
      'PATCH /api/v1/namespaces/shop/pods/web application/merge-patch+json',
    ]);
    const annotations = api.getPod(NS, 'web')!.metadata!.annotations!;
    expect(annotations['resizelet.io/resize']).toBe(
      '{"app":{"requests":{"cpu":"500m","memory":"256Mi"},"limits":{"cpu":"1"}}}',
    );
    expect(JSON.parse(annotations['resizelet.io/resource-status']!)).toMatchObject({
      resizeStatus: 'Proposed',
      allocatedResources: [],
      observedRequest: requestHash(annotations['resizelet.io/resize']!),
    });
  });

  it('uses the namespace of the current context when -n is left out', async () => {
    api.upsertPod({
      metadata: { name: 'solo', namespace: 'default' },
      spec: { nodeName: 'node-1', containers: [{ name: 'c', image: 'x' }] },
    });
    const r = await cli(['resize', 'solo', '--limits', 'memory=1Gi']);
    expect(r.code).toBe(0);
    expect(api.getPod('default', 'solo')!.metadata!.annotations!['resizelet.io/resize']).toBe(
      '{"c":{"limits":{"memory":"1Gi"}}}',
    );
  });

  it('--wait follows the statuses to Completed and exits 0', async () => {
    makePod('web', ['app']);
    agent = fakeAgent('web', [
      { resizeStatus: 'Accepted' },
      {
        resizeStatus: 'Completed',
        allocatedResources: [{ name: 'app', requests: { cpu: '100m' }, limits: { cpu: '1' } }],
      },
    ]);
    const r = await cli(['resize', 'web', '-n', NS, '--limits', 'cpu=1', '--wait', '--timeout', '10s']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toBe('resize requested: pod shop/web, container app: limits cpu=1');
    expect(lines.slice(1).map((l) => l.replace(/^\s*\+\d+\.\ds {2}/, ''))).toEqual([
      'Proposed',
      'Accepted',
      'Completed  allocated app: cpu 100m/1',
    ]);
  });

  it('--wait shows Deferred with its message, then Rejected: exits 1 with the message', async () => {
    makePod('web', ['app']);
    agent = fakeAgent('web', [
      { resizeStatus: 'Deferred', message: 'not enough free CPU on the node: asked 4, 300m free of 2' },
      { resizeStatus: 'Rejected', message: 'container "app": requests.cpu 4 is above limits.cpu 2' },
    ]);
    const r = await cli(['resize', 'web', '-n', NS, '--requests', 'cpu=4', '--wait', '--timeout', '10s']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/Deferred +not enough free CPU on the node: asked 4, 300m free of 2\n/);
    expect(r.stdout).toMatch(/Rejected +container "app": requests.cpu 4 is above limits.cpu 2\n$/);
    expect(r.stderr).toBe(
      'resizelet: resize rejected: container "app": requests.cpu 4 is above limits.cpu 2\n',
    );
  });

  it('--wait times out with exit 2 when no agent answers, and says where to look', async () => {
    makePod('web', ['app']);
    const t0 = Date.now();
    const r = await cli(['resize', 'web', '-n', NS, '--limits', 'cpu=1', '--wait', '--timeout', '800ms']);
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(
      'resizelet: timed out after 0.8s waiting for the resize of pod shop/web: no agent answered; is resizelet running on node node-1? ' +
        '(kubectl -n resizelet get pods --field-selector spec.nodeName=node-1). The request stays in place and the agent will still act on it.\n',
    );
  });

  it('--wait times out on a request the agent keeps Deferred, quoting its last word', async () => {
    makePod('web', ['app']);
    agent = fakeAgent(
      'web',
      [{ resizeStatus: 'Deferred', message: 'not enough free memory on the node' }],
      10,
    );
    const r = await cli(['resize', 'web', '-n', NS, '--limits', 'memory=1Gi', '--wait', '--timeout', '1s']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /the last status was Deferred: not enough free memory on the node\. The request stays/,
    );
  });

  it('--wait ignores a late status for an earlier request and keeps watching through a dropped watch', async () => {
    makePod('web', ['app']);
    const run = cli(['resize', 'web', '-n', NS, '--limits', 'cpu=1', '--wait', '--timeout', '10s']);
    // The agent's late answer to some earlier request, then the watch cut, then the real answer.
    const text = '{"app":{"limits":{"cpu":"1"}}}';
    for (
      let i = 0;
      i < 100 && api.getPod(NS, 'web')!.metadata!.annotations?.['resizelet.io/resize'] !== text;
      i++
    ) {
      await new Promise((r) => setTimeout(r, 10));
    }
    const put = (s: Partial<ResourceStatus>) =>
      api.upsertPod(
        withAnnotations(api.getPod(NS, 'web')!, {
          'resizelet.io/resource-status': encodeStatus({
            resizeStatus: 'Completed',
            allocatedResources: [],
            lastTransitionTime: new Date().toISOString(),
            ...s,
          }),
        }),
      );
    put({ observedRequest: 'an-older-request', message: 'old' });
    await new Promise((r) => setTimeout(r, 100));
    api.closeWatches();
    await new Promise((r) => setTimeout(r, 100));
    put({ observedRequest: requestHash(text) });
    const r = await run;
    expect(r.code).toBe(0);
    expect(r.stdout).not.toMatch(/old/);
    expect(r.stdout).toMatch(/Completed/);
  });

  it('refuses to write the exact request the agent already answered', async () => {
    const text = '{"app":{"limits":{"cpu":"1"}}}';
    const done = (s: 'Completed' | 'Rejected', message?: string) =>
      encodeStatus({
        resizeStatus: s,
        allocatedResources: [{ name: 'app', requests: { cpu: '100m' }, limits: { cpu: '1' } }],
        observedRequest: requestHash(text),
        message,
        lastTransitionTime: '2025-06-01T12:00:00Z',
      });
    makePod('web', ['app'], {
      annotations: { 'resizelet.io/resize': text, 'resizelet.io/resource-status': done('Completed') },
    });
    const ok = await cli(['resize', 'web', '-n', NS, '--limits', 'cpu=1']);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toBe(
      'pod shop/web: this exact request was already completed (2025-06-01T12:00:00Z); nothing to write\n' +
        'allocated app: cpu 100m/1\n',
    );
    makePod('api', ['app'], {
      annotations: {
        'resizelet.io/resize': text,
        'resizelet.io/resource-status': done('Rejected', 'no room'),
      },
    });
    const no = await cli(['resize', 'api', '-n', NS, '--limits', 'cpu=1']);
    expect(no.code).toBe(1);
    expect(no.stderr).toBe('resizelet: pod shop/api: this exact request was already rejected: no room\n');
    expect(api.requests.filter((q) => q.method === 'PATCH')).toEqual([]);
  });

  it('retries on a conflict: the pod changed between read and write', async () => {
    makePod('web', ['app']);
    const fault = api.injectFault({ method: 'PATCH', status: 409, times: 1 });
    const r = await cli(['resize', 'web', '-n', NS, '--limits', 'cpu=1']);
    expect(r.code).toBe(0);
    expect(fault.hits).toBe(1);
    expect(api.getPod(NS, 'web')!.metadata!.annotations!['resizelet.io/resize']).toBe(
      '{"app":{"limits":{"cpu":"1"}}}',
    );
  });
});

describe('errors are sentences with a non-zero exit, and nothing is written', () => {
  it.each<[string, string[], string, () => void]>([
    [
      'unknown pod',
      ['resize', 'nope', '-n', NS, '--limits', 'cpu=1'],
      'resizelet: pod "nope" not found in namespace "shop"\n',
      () => undefined,
    ],
    [
      'unknown namespace',
      ['status', 'web', '-n', 'elsewhere'],
      'resizelet: pod "web" not found in namespace "elsewhere"\n',
      () => undefined,
    ],
    [
      'unknown container',
      ['resize', 'web', '-n', NS, '-c', 'db', '--limits', 'cpu=1'],
      'resizelet: pod shop/web has no container "db"; its containers are: app, sidecar\n',
      () => makePod('web', ['app', 'sidecar']),
    ],
    [
      'several containers and no -c',
      ['resize', 'web', '-n', NS, '--limits', 'cpu=1'],
      'resizelet: pod shop/web has 2 containers (app, sidecar); choose one with -c, e.g. -c app\n',
      () => makePod('web', ['app', 'sidecar']),
    ],
    [
      'malformed quantity',
      ['resize', 'web', '-n', NS, '--limits', 'memory=1GB'],
      'resizelet: --limits memory: "1GB": unknown suffix "GB" (did you mean "Gi" or "G"?)\n',
      () => makePod('web', ['app']),
    ],
    [
      'a finished pod',
      ['resize', 'done', '-n', NS, '--limits', 'cpu=1'],
      'resizelet: pod shop/done has finished (phase Succeeded); there is nothing running to resize\n',
      () =>
        api.upsertPod({
          metadata: { name: 'done', namespace: NS },
          spec: { nodeName: 'node-1', containers: [{ name: 'c', image: 'x' }] },
          status: { phase: 'Succeeded' },
        }),
    ],
    [
      'an unscheduled pod',
      ['resize', 'pending', '-n', NS, '--limits', 'cpu=1'],
      'resizelet: pod shop/pending is not scheduled to a node yet; no agent can resize it until it is\n',
      () =>
        api.upsertPod({
          metadata: { name: 'pending', namespace: NS },
          spec: { containers: [{ name: 'c', image: 'x' }] },
        }),
    ],
    [
      'unknown command',
      ['scale', 'web'],
      'resizelet: unknown command "scale"; the commands are resize, status and agent\n',
      () => undefined,
    ],
  ])('%s', async (_name, argv, stderr, setup) => {
    setup();
    const r = await cli(argv);
    expect(r).toEqual({ code: 1, stdout: '', stderr });
    expect(api.requests.filter((q) => q.method !== 'GET')).toEqual([]);
  });

  it('forbidden: names what was not allowed and the server reason', async () => {
    makePod('web', ['app']);
    api.injectFault({
      method: 'PATCH',
      status: 403,
      body: {
        kind: 'Status',
        apiVersion: 'v1',
        status: 'Failure',
        message: 'pods "web" is forbidden: User "dev" cannot patch resource "pods" in the namespace "shop"',
        reason: 'Forbidden',
        code: 403,
      },
    });
    const r = await cli(['resize', 'web', '-n', NS, '--limits', 'cpu=1']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      'resizelet: not allowed to patch pod shop/web: pods "web" is forbidden: User "dev" cannot patch resource "pods" in the namespace "shop"\n',
    );
    api.clearFaults();
  });

  it('bad credentials', async () => {
    const bad = join(dir, 'bad-token');
    const kc = api.kubeConfig();
    await writeFile(bad, kc.exportConfig().replace(api.token, 'wrong'));
    const r = await cli(['status', '-A'], { KUBECONFIG: bad });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `resizelet: the API server at ${api.url} did not accept the credentials of context "fake" (401 Unauthorized)\n`,
    );
  });

  it('an API server that cannot be reached', async () => {
    const gone = join(dir, 'gone');
    await writeFile(gone, api.kubeConfig().exportConfig().replace(api.url, 'http://127.0.0.1:39999'));
    const r = await cli(['status', 'web', '-n', NS], { KUBECONFIG: gone });
    expect(r).toEqual({
      code: 1,
      stdout: '',
      stderr:
        'resizelet: cannot reach the Kubernetes API server at http://127.0.0.1:39999 (connection refused) to read pod shop/web\n',
    });
  });

  it.each<[string, string[], Record<string, string | undefined>, string]>([
    [
      'no kubeconfig at all',
      ['status', '-A'],
      { KUBECONFIG: undefined },
      'no Kubernetes configuration found: KUBECONFIG is not set and DIR/.kube/config does not exist (kubectl would not find a cluster either)',
    ],
    [
      'KUBECONFIG names a missing file',
      ['status', '-A'],
      { KUBECONFIG: '/nonexistent/kubeconfig' },
      'KUBECONFIG names /nonexistent/kubeconfig, which does not exist',
    ],
    [
      '--kubeconfig names a missing file',
      ['status', '-A', '--kubeconfig', '/nonexistent/k'],
      {},
      '--kubeconfig: no file at /nonexistent/k',
    ],
    [
      'unknown context',
      ['status', '-A', '--context', 'prod'],
      {},
      'the kubeconfig has no context "prod"; its contexts are: fake',
    ],
  ])('%s', async (_name, argv, env, message) => {
    const r = await cli(argv, env);
    expect(r).toEqual({ code: 1, stdout: '', stderr: `resizelet: ${message.replace('DIR', dir)}\n` });
  });
});

describe('status', () => {
  it('prints the table for one pod, -A across namespaces, and says when there is nothing', async () => {
    makePod('web', ['app'], {
      annotations: {
        'resizelet.io/resize': '{"app":{"limits":{"cpu":"1"}}}',
        'resizelet.io/resource-status': encodeStatus({
          resizeStatus: 'Completed',
          allocatedResources: [
            { name: 'app', requests: { cpu: '100m', memory: '64Mi' }, limits: { cpu: '1', memory: '256Mi' } },
          ],
          lastTransitionTime: new Date(Date.now() - 30_000).toISOString(),
        }),
      },
    });
    makePod('quiet', ['app']);
    const one = await cli(['status', 'web', '-n', NS]);
    expect(one.code).toBe(0);
    expect(one.stdout.split('\n')[1]).toMatch(
      /^web {3}app {9}cpu 100m\/200m, memory 64Mi\/256Mi {3}cpu 100m\/1, memory 64Mi\/256Mi {3}Completed {3}3\ds$/,
    );
    const all = await cli(['status', '-A']);
    expect(all.stdout.split('\n')[0]).toMatch(/^NAMESPACE {3}POD {3}CONTAINER/);
    expect(all.stdout).toMatch(/\nshop {8}web /);
    expect(all.stdout).not.toMatch(/quiet/);
    const none = await cli(['status', '-n', 'default']);
    expect(none).toEqual({
      code: 0,
      stdout: 'no pod in namespace default has a resizelet request\n',
      stderr: '',
    });
  });

  it('prints help and exits 0', async () => {
    const r = await cli(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^usage: resizelet <command> \[flags\]/);
  });
});

describe('the installed command (a real process through bin/resizelet.mjs)', () => {
  const launcher = fileURLToPath(new URL('../../bin/resizelet.mjs', import.meta.url));

  function spawnCli(command: string, args: string[], env: Record<string, string> = {}): Promise<Run> {
    return new Promise((resolve, reject) => {
      const child = spawn(command, args, {
        env: { PATH: `${dir}/bin:/usr/bin:/bin`, HOME: dir, KUBECONFIG: kubeconfig, ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', reject);
      child.on('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    });
  }

  beforeAll(async () => {
    // What npm puts on PATH for the package's "bin" entries, and what kubectl finds as a plugin.
    await import('node:fs/promises').then((fs) => fs.mkdir(join(dir, 'bin'), { recursive: true }));
    await symlink(launcher, join(dir, 'bin', 'kubectl-resizelet'));
  });

  it('kubectl-resizelet resize --wait: exits 0 on Completed', async () => {
    makePod('web', ['app']);
    agent = fakeAgent('web', [
      {
        resizeStatus: 'Completed',
        allocatedResources: [{ name: 'app', requests: {}, limits: { cpu: '1' } }],
      },
    ]);
    const r = await spawnCli(process.execPath, [
      join(dir, 'bin', 'kubectl-resizelet'),
      'resize',
      'web',
      '-n',
      NS,
      '--limits',
      'cpu=1',
      '--wait',
    ]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Completed {2}allocated app: cpu -\/1\n$/);
  });

  it('an unknown pod: one sentence on stderr, exit 1, no stack trace', async () => {
    const r = await spawnCli(process.execPath, [launcher, 'status', 'ghost', '-n', NS]);
    expect(r).toEqual({
      code: 1,
      stdout: '',
      stderr: 'resizelet: pod "ghost" not found in namespace "shop"\n',
    });
  });

  // This machine's own node may be older than the code needs (Node 20 here): the launcher then re-runs
  // itself on the Node 24 that `npm ci` put in node_modules.
  const systemNode = ['/usr/bin/node', '/usr/local/bin/node'].find((p) => {
    try {
      const v = execFileSync(p, ['--version'], { encoding: 'utf8' }).trim();
      const [maj = 0, min = 0] = v.slice(1).split('.').map(Number);
      return maj < 22 || (maj === 22 && min < 19);
    } catch {
      return false;
    }
  });
  it.skipIf(!systemNode)(
    'runs from an older system node by re-running itself on the project Node',
    async () => {
      makePod('web', ['app']);
      const r = await spawnCli(systemNode!, [launcher, 'status', 'web', '-n', NS]);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/^POD {3}CONTAINER/);
    },
  );
});
