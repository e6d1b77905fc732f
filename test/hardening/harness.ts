// The hardening tests' fixture: the agent as a real process (one process: `node --import tsx`, so SIGKILL and
// SIGSTOP reach the agent itself, not a launcher that would leave it running), the fake API server, and real
// cgroup v1 pods in a sandbox. Builds on test/agent/support.ts for waiting and reading statuses.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, realpath, rm, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startFakeApiServer, type FakeApiServer } from '../fakes/apiserver.ts';
import { createRealSandbox, newContainerId, newPodUid, type RealSandbox } from '../support/real-cgroup.ts';
import {
  appPod,
  runningStatus,
  sandboxAgentArgs,
  statusOf,
  waitFor,
  withAnnotations,
} from '../agent/support.ts';
import type { CgroupSettings } from '../../cgroup/types.ts';
import { requestHash as requestHashOf } from '../../agent/resize/request.ts';

export { statusOf, waitFor, withAnnotations };

const repo = fileURLToPath(new URL('../../', import.meta.url));
export const Mi = 1024n * 1024n;

export interface Agent {
  child: ChildProcess;
  pid: number;
  logs: string[];
  waitForLog(re: RegExp, timeoutMs?: number): Promise<string>;
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** The process state letter from /proc (R, S, T = stopped, ...). */
  state(): Promise<string | undefined>;
}

export function startAgentProcess(args: string[], env: Record<string, string> = {}): Agent {
  const child = spawn(process.execPath, ['--import', 'tsx', `${repo}bin/resizelet.ts`, 'agent', ...args], {
    cwd: repo,
    env: { ...process.env, ...env, KUBERNETES_SERVICE_HOST: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: string[] = [];
  const waiters: Array<{ re: RegExp; resolve: (l: string) => void }> = [];
  let buf = '';
  const feed = (chunk: Buffer): void => {
    buf += chunk.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      logs.push(line);
      for (const w of [...waiters]) {
        if (w.re.test(line)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
    }
  };
  child.stdout!.on('data', feed);
  child.stderr!.on('data', feed);
  const exited = () => child.exitCode !== null || child.signalCode !== null;
  return {
    child,
    pid: child.pid!,
    logs,
    waitForLog(re, timeoutMs = 30_000) {
      const hit = logs.find((l) => re.test(l));
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => {
          waiters.splice(waiters.indexOf(entry), 1);
          reject(new Error(`no log line matching ${re} in ${timeoutMs} ms:\n${logs.slice(-20).join('\n')}`));
        }, timeoutMs);
        const entry = {
          re,
          resolve: (l: string) => {
            clearTimeout(t);
            resolve(l);
          },
        };
        waiters.push(entry);
      });
    },
    async kill(signal = 'SIGTERM') {
      if (exited()) return;
      const done = once(child, 'exit');
      child.kill(signal);
      await done;
    },
    async state() {
      try {
        const stat = await readFile(`/proc/${child.pid}/stat`, 'utf8');
        return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
      } catch {
        return undefined;
      }
    },
  };
}

export interface PodFixture {
  name: string;
  namespace: string;
  uid: string;
  podPath: string;
  containerId: string;
  containerPath: string;
}

/** requests 100m/64Mi, limits 200m/256Mi: the kubelet's cgroup values for them. */
export const SPEC_CGROUP: Partial<CgroupSettings> = {
  cpuShares: 102,
  cpuQuotaUs: 20_000,
  memoryLimitBytes: 256n * Mi,
};

export interface Harness {
  dir: string;
  sandbox: RealSandbox;
  api: FakeApiServer;
  nodeName: string;
  agent: Agent | undefined;
  args(extra?: string[]): string[];
  start(extra?: string[], env?: Record<string, string>): Promise<Agent>;
  /** A Running Burstable pod with one container "app" and its cgroups (spec values unless given). */
  addPod(
    namespace: string,
    name: string,
    opts?: {
      node?: string;
      cgroups?: boolean;
      spec?: { requests: Record<string, string>; limits: Record<string, string> };
      annotations?: Record<string, string>;
    },
  ): Promise<PodFixture>;
  /** The kubelet restarts the container: a new ID and cgroup with the spec values; the old cgroup goes. */
  restartContainer(p: PodFixture): Promise<void>;
  request(p: { namespace: string; name: string }, text: string, extra?: Record<string, string>): void;
  status(p: { namespace: string; name: string }): Record<string, unknown> | undefined;
  /** Waits for a status answering the pod's current request with this resizeStatus. */
  settled(
    p: { namespace: string; name: string },
    want: string,
    timeoutMs?: number,
  ): Promise<Record<string, unknown>>;
  settings(path: string): Promise<CgroupSettings>;
  close(): Promise<void>;
}

export async function createHarness(opts: { nodeName?: string; allocatable?: Record<string, string> } = {}) {
  const nodeName = opts.nodeName ?? 'hard-node';
  const dir = await mkdtemp(join(tmpdir(), 'resizelet-hard-'));
  const sandbox = await createRealSandbox();
  const api = await startFakeApiServer();
  api.upsertNode({
    metadata: { name: nodeName },
    status: {
      allocatable: opts.allocatable ?? { cpu: '4', memory: '8Gi' },
      capacity: { cpu: '4', memory: '8Gi' },
    },
  });
  await api.writeKubeconfig(join(dir, 'kubeconfig'));

  const h: Harness = {
    dir,
    sandbox,
    api,
    nodeName,
    agent: undefined,
    args: (extra = []) => [
      ...sandboxAgentArgs({ nodeName, dir, podsRoot: sandbox.layout.podsRoot }),
      '--deferred-retry',
      '500ms',
      '--node-refresh',
      '1s',
      '--log-level',
      'debug',
      '--systemd-bus',
      'none',
      ...extra,
    ],
    async start(extra = [], env = {}) {
      const agent = startAgentProcess(h.args(extra), env);
      h.agent = agent;
      await agent.waitForLog(/endpoint listening/, 40_000);
      return agent;
    },
    async addPod(namespace, name, o = {}) {
      const uid = newPodUid();
      const containerId = newContainerId();
      const onThisNode = (o.node ?? nodeName) === nodeName;
      let podPath = '';
      let containerPath = '';
      if (onThisNode && o.cgroups !== false) {
        podPath = await sandbox.makePod(uid, 'Burstable', SPEC_CGROUP);
        containerPath = await sandbox.makeContainer(podPath, containerId, SPEC_CGROUP);
      }
      if (!api.getNode(o.node ?? nodeName)) api.upsertNode({ metadata: { name: o.node ?? nodeName } });
      api.upsertPod({
        ...appPod({
          name,
          namespace,
          uid,
          node: o.node ?? nodeName,
          annotations: o.annotations,
          resources: o.spec,
        }),
        status: runningStatus(containerId),
      });
      return { name, namespace, uid, podPath, containerId, containerPath };
    },
    async restartContainer(p) {
      const old = p.containerPath;
      p.containerId = newContainerId();
      p.containerPath = await sandbox.makeContainer(p.podPath, p.containerId, SPEC_CGROUP);
      const current = api.getPod(p.namespace, p.name)!;
      api.upsertPod({ ...current, status: runningStatus(p.containerId, 1) });
      const mounts = await Promise.all(
        Object.values(sandbox.layout.controllers).map((c) => realpath(c.mount)),
      );
      for (const m of new Set(mounts)) await rmdir(`${m}/${old}`).catch(() => undefined);
    },
    request(p, text, extra = {}) {
      const current = api.getPod(p.namespace, p.name)!;
      api.upsertPod(withAnnotations(current, { 'resizelet.io/resize': text, ...extra }));
    },
    status: (p) => statusOf(api, p.namespace, p.name),
    settled(p, want, timeoutMs = 15_000) {
      return waitFor(
        `${p.namespace}/${p.name} ${want}`,
        () => {
          const pod = api.getPod(p.namespace, p.name);
          const s = statusOf(api, p.namespace, p.name);
          const text = pod?.metadata?.annotations?.['resizelet.io/resize'];
          if (!s || s.resizeStatus !== want || text === undefined) return undefined;
          return s.observedRequest === requestHashOf(text) ? s : undefined;
        },
        timeoutMs,
      );
    },
    settings: async (path) => (await sandbox.read(path)).settings,
    async close() {
      await h.agent?.kill('SIGKILL');
      await api.close();
      await sandbox.cleanup();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return h;
}
