// `npm run demo`: the whole story on a machine with no cluster. The real agent (a child process) against
// the in-repo fake Kubernetes API server (in this process), real cgroups on this machine shaped like a
// kubelet's, a real process burning CPU under a 200m limit, a resize to 1 CPU through the real CLI (a child
// process, its output streamed), and the process's CPU rate before and after with its unchanged PID.
//
// Everything it creates is removed when it ends, on success, failure, Ctrl-C or SIGTERM: the cgroups live
// under a fresh `resizelet-test-<pid>-<random>` root (test/support/real-cgroup.ts), the rest in a temp dir.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startAgentProcess, statusOf, type AgentProcess } from '../test/agent/support.ts';
import { startFakeApiServer, type FakeApiServer, type Pod } from '../test/fakes/apiserver.ts';
import {
  TEST_SCRIPTS,
  cpuTimeMs,
  createRealSandbox,
  newContainerId,
  newPodUid,
  realCgroupsAvailable,
  type RealSandbox,
  type SandboxChild,
} from '../test/support/real-cgroup.ts';

const NODE = 'demo-node';
const NS = 'demo';
const POD = 'web';
const MEASURE_MS = 2_000;
const Mi = 1024n * 1024n;
const launcher = fileURLToPath(new URL('./resizelet.mjs', import.meta.url));

const say = (text = '') => process.stdout.write(`${text}\n`);
const step = (n: number, text: string) => say(`\n${n}. ${text}`);

interface Resources {
  dir?: string;
  sandbox?: RealSandbox;
  api?: FakeApiServer;
  agent?: AgentProcess;
}
const held: Resources = {};
let cleaning: Promise<void> | undefined;
let interrupted = false;

/** Idempotent; kills what we started, then removes the cgroups and the temp dir. */
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    await held.agent?.kill('SIGTERM').catch(() => undefined);
    await held.api?.close().catch(() => undefined);
    await held.sandbox?.cleanup().catch((err: unknown) => {
      process.stderr.write(
        `demo: could not remove the cgroup sandbox ${held.sandbox?.name}: ${String(err)}\n`,
      );
    });
    if (held.dir) await rm(held.dir, { recursive: true, force: true });
  })();
  return cleaning;
}

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(signal, () => {
    interrupted = true;
    say(`\n${signal}: cleaning up...`);
    void cleanup().finally(() => process.exit(130));
  });
}

/** Cores used by a process over a window, from /proc/<pid>/stat. */
async function coresOver(pid: number, ms: number): Promise<number> {
  const a = cpuTimeMs(pid);
  const t = Date.now();
  await new Promise((r) => setTimeout(r, ms));
  return (cpuTimeMs(pid) - a) / (Date.now() - t);
}

/** Runs the CLI as a user would, indenting its output as it arrives. Resolves with its exit code. */
function runCli(args: string[], kubeconfig: string): Promise<number> {
  say(`   $ resizelet ${args.join(' ')}`);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [launcher, ...args], {
      env: { ...process.env, KUBECONFIG: kubeconfig },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const indent = (chunk: Buffer) => chunk.toString().replace(/^(?=.)/gm, '   ');
    child.stdout.on('data', (c: Buffer) => process.stdout.write(indent(c)));
    child.stderr.on('data', (c: Buffer) => process.stdout.write(indent(c)));
    child.on('error', reject);
    child.on('exit', (code) => resolve(code ?? 1));
  });
}

function runningPod(uid: string, containerId: string): Pod {
  return {
    metadata: { name: POD, namespace: NS, uid },
    spec: {
      nodeName: NODE,
      restartPolicy: 'Always',
      containers: [
        {
          name: 'app',
          image: 'busybox',
          resources: {
            requests: { cpu: '100m', memory: '64Mi' },
            limits: { cpu: '200m', memory: '256Mi' },
          },
        },
      ],
    },
    status: {
      phase: 'Running',
      qosClass: 'Burstable',
      containerStatuses: [
        {
          name: 'app',
          containerID: `containerd://${containerId}`,
          restartCount: 0,
          ready: true,
          image: 'busybox',
          imageID: 'busybox',
          state: { running: { startedAt: new Date().toISOString() } },
        } as never,
      ],
    },
  };
}

async function main(): Promise<number> {
  say('resizelet demo: the real agent and CLI, a fake Kubernetes API server, real cgroups on this machine.');
  const available = realCgroupsAvailable();
  if (!available.ok) {
    say(`\nThis machine cannot run the demo: ${available.reason}.`);
    say('It needs Linux, root, and cgroup v1 cpu, cpuacct and memory hierarchies it may write to, because');
    say('it throttles a real process with the kernel. Nothing was changed. Try: sudo npm run demo');
    return 0;
  }

  held.dir = await mkdtemp(join(tmpdir(), 'resizelet-demo-'));
  const kubeconfig = join(held.dir, 'kubeconfig');
  held.sandbox = await createRealSandbox();
  const sandbox = held.sandbox;
  const uid = newPodUid();
  const containerId = newContainerId();
  // What the kubelet and runc write for requests 100m/64Mi, limits 200m/256Mi.
  const kubeletValues = { cpuShares: 102, cpuQuotaUs: 20_000, memoryLimitBytes: 256n * Mi };
  const podPath = await sandbox.makePod(uid, 'Burstable', kubeletValues);
  const ctrPath = await sandbox.makeContainer(podPath, containerId, kubeletValues);
  const quota = async () => (await sandbox.read(ctrPath)).settings.cpuQuotaUs;
  step(
    1,
    'A pod cgroup and a container cgroup, laid out as the kubelet (cgroupfs driver) and containerd do:',
  );
  say(`   ${sandbox.layout.controllers.cpu.mount}/${ctrPath}`);
  say(`   pod ${NS}/${POD}, container "app": requests cpu 100m, memory 64Mi; limits cpu 200m, memory 256Mi`);
  say(`   cpu.cfs_quota_us = ${await quota()} (200m of a 100000 us period)`);

  const burner: SandboxChild = await sandbox.spawnInCgroup(ctrPath, TEST_SCRIPTS.burnCpu, ['120']);
  step(2, `A process that burns as much CPU as it can, started inside that container: PID ${burner.pid}`);

  held.api = await startFakeApiServer({ namespaces: [NS] });
  const api = held.api;
  api.upsertNode({
    metadata: { name: NODE },
    status: { allocatable: { cpu: '2', memory: '8Gi' }, capacity: { cpu: '2', memory: '8Gi' } },
  });
  api.upsertPod(runningPod(uid, containerId));
  await api.writeKubeconfig(kubeconfig);
  step(3, `The fake Kubernetes API server at ${api.url}, with node ${NODE} and pod ${NS}/${POD}`);

  held.agent = startAgentProcess([
    '--node-name',
    NODE,
    '--kubeconfig',
    kubeconfig,
    '--pods-root',
    sandbox.layout.podsRoot,
    '--cgroup-driver',
    'cgroupfs',
    '--runtime',
    'containerd',
    '--checkpoint',
    join(held.dir, 'checkpoint.json'),
    '--listen',
    '127.0.0.1:0',
  ]);
  await held.agent.waitForLog(/endpoint listening/, 60_000);
  step(4, `The agent is running (resizelet agent --node-name ${NODE} ...), watching the pods of its node`);

  const before = await coresOver(burner.pid, MEASURE_MS);
  step(5, `CPU rate of PID ${burner.pid} under the 200m limit: ${before.toFixed(2)} cores`);
  say(`   (from /proc/${burner.pid}/stat over ${MEASURE_MS / 1000} s)`);

  step(6, 'Resize the running container to 1 CPU with the CLI, and follow its status:');
  const code = await runCli(
    ['resize', POD, '-n', NS, '--limits', 'cpu=1', '--wait', '--timeout', '30s'],
    kubeconfig,
  );
  if (interrupted) return 130;
  if (code !== 0) {
    say(`\nThe resize did not complete (exit ${code}). The agent's last log lines:`);
    for (const line of held.agent.logs.slice(-15)) say(`   ${line}`);
    return 1;
  }

  const after = await coresOver(burner.pid, MEASURE_MS);
  step(7, `After the resize: cpu.cfs_quota_us = ${await quota()}`);
  say(`   CPU rate of PID ${burner.pid}: ${after.toFixed(2)} cores (was ${before.toFixed(2)})`);
  const samePid = burner.alive();
  say(
    `   PID before: ${burner.pid}, after: ${burner.pid}, ${samePid ? 'still running: resized in place, not restarted' : 'NOT running'}`,
  );
  const status = statusOf(api, NS, POD);
  say(
    `   status annotation: ${JSON.stringify(status?.resizeStatus)}, allocated ${JSON.stringify(status?.allocatedResources)}`,
  );
  return samePid ? 0 : 1;
}

let code = 1;
try {
  code = await main();
} catch (err) {
  process.stderr.write(`demo failed: ${(err as Error)?.stack ?? String(err)}\n`);
  if (held.agent) for (const line of held.agent.logs.slice(-15)) process.stderr.write(`   ${line}\n`);
} finally {
  await cleanup();
}
say(code === 0 ? '\nDone; the cgroups, processes and files the demo made are gone.' : '\nCleaned up.');
process.exit(code);
