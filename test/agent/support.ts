// Helpers for tests that run the agent as a real process against the fake API server.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startFakeApiServer, type FakeApiServer, type Pod } from '../fakes/apiserver.ts';
import { newContainerId, newPodUid, type RealSandbox } from '../support/real-cgroup.ts';

const repo = fileURLToPath(new URL('../../', import.meta.url));
// Node with tsx's loader in-process, not the `tsx` binary: the binary is a wrapper that starts a second
// node process, so SIGKILL to the wrapper would leave the real agent running (an orphan per test run).
const nodeArgs = ['--import', 'tsx'];

export interface AgentProcess {
  child: ChildProcess;
  logs: string[];
  /** Resolves with the first log line matching. */
  waitForLog(re: RegExp, timeoutMs?: number): Promise<string>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * The agent (`resizelet agent ...args`) as a process: from the TypeScript sources through tsx, or with
 * `entry` a built entry point (scripts/build.mjs's bundle) on plain node, run from `cwd`.
 */
export function startAgentProcess(
  args: string[],
  env: Record<string, string> = {},
  opts: { entry?: string; cwd?: string } = {},
): AgentProcess {
  const command = opts.entry ? [opts.entry] : [...nodeArgs, `${repo}bin/resizelet.ts`];
  const child = spawn(process.execPath, [...command, 'agent', ...args], {
    cwd: opts.cwd ?? repo,
    env: { ...process.env, ...env, KUBERNETES_SERVICE_HOST: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: string[] = [];
  const waiters: Array<{ re: RegExp; resolve: (l: string) => void }> = [];
  const onLine = (line: string): void => {
    logs.push(line);
    for (const w of [...waiters]) {
      if (w.re.test(line)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  };
  let buf = '';
  const feed = (chunk: Buffer): void => {
    buf += chunk.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      onLine(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  };
  child.stdout!.on('data', feed);
  child.stderr!.on('data', feed);
  return {
    child,
    logs,
    waitForLog(re, timeoutMs = 30_000) {
      const hit = logs.find((l) => re.test(l));
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        const t = setTimeout(
          () =>
            reject(
              new Error(`no log line matching ${re} in ${timeoutMs} ms:\n${logs.slice(-20).join('\n')}`),
            ),
          timeoutMs,
        );
        waiters.push({
          re,
          resolve: (l) => {
            clearTimeout(t);
            resolve(l);
          },
        });
      });
    },
    async kill(signal = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill(signal);
      await exited;
    },
  };
}

export async function waitFor<T>(
  what: string,
  probe: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function statusOf(api: FakeApiServer, ns: string, name: string): Record<string, unknown> | undefined {
  const text = api.getPod(ns, name)?.metadata?.annotations?.['resizelet.io/resource-status'];
  return text ? (JSON.parse(text) as Record<string, unknown>) : undefined;
}

export function withAnnotations(pod: Pod, annotations: Record<string, string>): Pod {
  return {
    ...pod,
    metadata: { ...pod.metadata, annotations: { ...pod.metadata?.annotations, ...annotations } },
  };
}

export interface SandboxAgentArgs {
  nodeName: string;
  /** Holds the kubeconfig the fake API server wrote and the agent's checkpoint. */
  dir: string;
  /** The real-cgroup sandbox's pods root (`layout.podsRoot`). */
  podsRoot: string;
  reconcileInterval?: string;
}

/** The flags every test agent runs with: the sandbox's cgroups, the fake API server, a loopback port. */
export function sandboxAgentArgs(o: SandboxAgentArgs): string[] {
  return [
    ...['--node-name', o.nodeName],
    ...['--kubeconfig', `${o.dir}/kubeconfig`],
    ...['--pods-root', o.podsRoot],
    ...['--cgroup-driver', 'cgroupfs', '--runtime', 'containerd'],
    ...['--checkpoint', `${o.dir}/checkpoint.json`],
    ...['--listen', '127.0.0.1:0'],
    ...['--reconcile-interval', o.reconcileInterval ?? '1s'],
  ];
}

/** A running container's status as the kubelet reports it, for pods the tests put on the fake API server. */
export function runningContainerStatus(name: string, id: string): never {
  return {
    name,
    containerID: `containerd://${id}`,
    restartCount: 0,
    ready: true,
    image: 'x',
    imageID: 'x',
    state: { running: { startedAt: new Date().toISOString() } },
  } as never;
}

/** The status of a Running Burstable pod whose one container "app" runs as `containerId`. */
export function runningStatus(containerId: string, restartCount = 0): Pod['status'] {
  return {
    phase: 'Running',
    qosClass: 'Burstable',
    containerStatuses: [{ ...(runningContainerStatus('app', containerId) as object), restartCount } as never],
  };
}

/**
 * The pod the real-process tests and benches run: one container "app", Burstable, requests 100m/64Mi and
 * limits 200m/256Mi unless `resources` says otherwise. No status: add runningStatus() once it runs.
 */
export function appPod(o: {
  name: string;
  namespace: string;
  uid: string;
  node: string;
  annotations?: Record<string, string>;
  resources?: { requests: Record<string, string>; limits: Record<string, string> };
}): Pod {
  return {
    metadata: { name: o.name, namespace: o.namespace, uid: o.uid, annotations: o.annotations },
    spec: {
      nodeName: o.node,
      restartPolicy: 'Always',
      containers: [
        {
          name: 'app',
          image: 'x',
          resources: o.resources ?? {
            requests: { cpu: '100m', memory: '64Mi' },
            limits: { cpu: '200m', memory: '256Mi' },
          },
        },
      ],
    },
  };
}

const Mi = 1024n * 1024n;

/**
 * A node holding one running pod, `web` (appPod()'s container `app`), in real cgroups at the kubelet's values
 * for it, on a fresh fake API server whose kubeconfig is written to `<dir>/kubeconfig`.
 */
export async function oneAppPodNode(o: {
  sandbox: RealSandbox;
  dir: string;
  node: string;
  namespace: string;
  allocatable?: Record<string, string>;
}): Promise<{ api: FakeApiServer; uid: string; podPath: string; containerPath: string }> {
  const uid = newPodUid();
  // The kubelet's values for requests 100m/64Mi, limits 200m/256Mi.
  const kubelet = { cpuShares: 102, cpuQuotaUs: 20_000, memoryLimitBytes: 256n * Mi };
  const podPath = await o.sandbox.makePod(uid, 'Burstable', kubelet);
  const containerId = newContainerId();
  const containerPath = await o.sandbox.makeContainer(podPath, containerId, kubelet);
  const api = await startFakeApiServer({ namespaces: [o.namespace] });
  const allocatable = o.allocatable ?? { cpu: '4', memory: '8Gi' };
  api.upsertNode({ metadata: { name: o.node }, status: { allocatable, capacity: allocatable } });
  api.upsertPod({
    ...appPod({ name: 'web', namespace: o.namespace, uid, node: o.node }),
    status: runningStatus(containerId),
  });
  await api.writeKubeconfig(join(o.dir, 'kubeconfig'));
  return { api, uid, podPath, containerPath };
}
