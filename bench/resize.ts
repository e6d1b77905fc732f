// `npm run bench -- resize [seconds]`: the resize path under load. A node of 110 and then 250 pods (real
// cgroup v1 directories, removed afterwards) on the in-repo fake API server, which runs in its own process
// as a real API server would; the real agent runs in this process (for its timing hook) and receives
// resize requests at 500/s, written by the API server process as if clients elsewhere had patched the pods
// (so sending them costs the agent nothing). Per request we time the watch event ->
// cgroups written, and -> Completed acknowledged by the API server. Completed waits for the checkpoint, so
// the checkpoint is set up as deployed: the disk copy on this machine's disk, the run copy on tmpfs
// (/dev/shm, standing in for the node's /run). The 250-pod node also runs with the disk copy alone
// (`--run-checkpoint` unset), where Completed waits for the disk's fsync.
// Writes bench/results/resize.json (the main figures: 250 pods, as deployed).
import { type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { pino } from 'pino';
import { loadConfig, type Config } from '../agent/config.ts';
import { startAgent } from '../agent/main.ts';
import {
  createRealSandbox,
  newContainerId,
  newPodUid,
  realCgroupsAvailable,
} from '../test/support/real-cgroup.ts';
import { sandboxAgentArgs } from '../test/agent/support.ts';
import { startApiProcess, stopApiProcess } from './_api-process.ts';
import { percentile, printTable, round, writeResult } from './_report.ts';

const RATE_PER_S = Number(process.argv[3] ?? 500);
const seconds = Number(process.argv[2] ?? 5);
const Mi = 1024n * 1024n;

/** `disk+run`: as deployed (disk copy, run copy on tmpfs); `disk`: no run copy. */
type CheckpointOn = 'disk+run' | 'disk';

interface RunResult {
  pods: number;
  checkpoint_on: CheckpointOn;
  requests: number;
  completed: number;
  cgroup_p50_ms: number;
  cgroup_p99_ms: number;
  completed_p50_ms: number;
  completed_p99_ms: number;
  throughput_per_s: number;
  drain_ms: number;
  /** Event-loop utilization of the agent's process (which also runs this driver) while requests arrive. */
  agent_elu: number;
  /** The longest the agent's event loop was blocked while requests arrived (a stall delays every request). */
  event_loop_max_ms: number;
  /** Checkpoint writes (fsync included) meanwhile, per copy; Completed waits for the run copy's if any. */
  checkpoint_disk_write_p99_ms: number;
  checkpoint_disk_write_max_ms: number;
  checkpoint_run_write_p99_ms: number | null;
  checkpoint_run_write_max_ms: number | null;
  /** CPU time of that process from the first request to the last completion, per completed resize. */
  cpu_ms_per_completed: number;
}

async function run(podCount: number, checkpointOn: CheckpointOn): Promise<RunResult> {
  const dir = await mkdtemp(join(tmpdir(), 'resizelet-bench-'));
  const runDir = checkpointOn === 'disk+run' ? await mkdtemp('/dev/shm/resizelet-bench-') : undefined;
  const sandbox = await createRealSandbox();
  let api: ChildProcess | undefined;
  let agent: Awaited<ReturnType<typeof startAgent>> | undefined;
  try {
    const pods: unknown[] = [];
    const names: string[] = [];
    for (let i = 0; i < podCount; i++) {
      const uid = newPodUid();
      const id = newContainerId();
      const podPath = await sandbox.makePod(uid, 'Burstable', {
        cpuShares: 102,
        cpuQuotaUs: 20_000,
        memoryLimitBytes: 128n * Mi,
      });
      await sandbox.makeContainer(podPath, id, {
        cpuShares: 102,
        cpuQuotaUs: 20_000,
        memoryLimitBytes: 128n * Mi,
      });
      const name = `p${i}`;
      names.push(name);
      pods.push({
        metadata: { name, namespace: 'bench', uid },
        spec: {
          nodeName: 'bench-node',
          containers: [
            {
              name: 'app',
              image: 'x',
              resources: {
                requests: { cpu: '100m', memory: '64Mi' },
                limits: { cpu: '200m', memory: '128Mi' },
              },
            },
          ],
        },
        status: {
          phase: 'Running',
          qosClass: 'Burstable',
          containerStatuses: [{ name: 'app', containerID: `containerd://${id}`, state: { running: {} } }],
        },
      });
    }
    const state = {
      namespaces: [{ metadata: { name: 'bench' } }],
      nodes: [
        {
          metadata: { name: 'bench-node' },
          status: { allocatable: { cpu: '1000', memory: '4Ti' }, capacity: { cpu: '1000', memory: '4Ti' } },
        },
      ],
      pods,
    };
    await writeFile(join(dir, 'state.json'), JSON.stringify(state));
    const server = await startApiProcess(join(dir, 'state.json'), join(dir, 'kubeconfig'));
    api = server.child;
    const config: Config = {
      ...(loadConfig({
        argv: sandboxAgentArgs({
          nodeName: 'bench-node',
          dir,
          podsRoot: sandbox.layout.podsRoot,
          reconcileInterval: '1h',
        }),
        env: {},
        homeKubeconfig: undefined,
      }) as Config),
      checkpointPath: join(dir, 'checkpoint.json'),
      runCheckpointPath: runDir && join(runDir, 'checkpoint.json'),
    };

    const cgroupMs: number[] = [];
    const checkpointMs = { disk: [] as number[], run: [] as number[] };
    const completedMs: number[] = [];
    let lastCompletionAt = 0;
    agent = await startAgent(config, pino({ level: 'silent' }), {
      onCheckpointWrite: (ms, copy) => checkpointMs[copy].push(ms),
      onResizeTiming: ({ stage, ms }) => {
        if (stage === 'cgroup') cgroupMs.push(ms);
        else {
          completedMs.push(ms);
          lastCompletionAt = performance.now();
        }
      },
    });
    while (!agent.informer.synced || agent.informer.list().length < podCount)
      await new Promise((r) => setTimeout(r, 20));

    // Pace requests at `rate` in 10 ms ticks, round-robin over the pods, each a new CPU limit, then wait
    // until every pod's status (as the agent's own watch sees it) answers its last request.
    // The requests are written by the API server process itself (--annotate-stdin), as if kubectl ran
    // elsewhere: generating them must not cost the agent's event loop, which this process shares.
    let serial = 0;
    const drive = async (count: number): Promise<{ sentAt: number; elu: number; loopMaxMs: number }> => {
      const perTick = RATE_PER_S / 100;
      const lastRequest = new Map<string, string>();
      const t0 = performance.now();
      const eluAt = performance.eventLoopUtilization();
      const loopDelay = monitorEventLoopDelay({ resolution: 10 });
      loopDelay.enable();
      let sent = 0;
      while (sent < count) {
        const due = Math.min(count, Math.floor(((performance.now() - t0) / 10) * perTick) + perTick);
        const batch: Array<{ namespace: string; name: string; annotations: Record<string, string> }> = [];
        for (; sent < due; sent++, serial++) {
          const name = names[serial % names.length]!;
          const limit = `${300 + (serial % 700)}m`;
          lastRequest.set(name, limit);
          const text = JSON.stringify({ app: { limits: { cpu: limit } } });
          batch.push({ namespace: 'bench', name, annotations: { 'resizelet.io/resize': text } });
        }
        if (batch.length > 0) api!.stdin!.write(JSON.stringify(batch) + '\n');
        await new Promise((r) => setTimeout(r, 10));
      }
      const sentAt = performance.now();
      const elu = performance.eventLoopUtilization(eluAt).utilization;
      loopDelay.disable();
      // The histogram counts the timer's own 10 ms resolution in every sample: subtract it.
      const loopMaxMs = Math.max(0, loopDelay.max / 1e6 - 10);
      const answered = (): boolean =>
        [...lastRequest].every(([n, limit]) => {
          const s = agent!.informer.get('bench', n)?.metadata?.annotations?.['resizelet.io/resource-status'];
          return s !== undefined && s.includes('"Completed"') && s.includes(`"cpu":"${limit}"`);
        });
      while (!answered()) {
        if (performance.now() - sentAt > 30_000) break;
        await new Promise((r) => setTimeout(r, 5));
      }
      return { sentAt, elu, loopMaxMs };
    };

    // Warm-up, not measured: one second at the same rate, so the measured run does not pay for the JIT
    // compiling the resize path (otherwise whichever node size runs first looks slower).
    await drive(RATE_PER_S);
    // Warm-up statuses still being acknowledged must not count in the measured run.
    for (let seen = -1; seen !== completedMs.length;) {
      seen = completedMs.length;
      await new Promise((r) => setTimeout(r, 300));
    }
    cgroupMs.length = 0;
    completedMs.length = 0;
    checkpointMs.disk.length = 0;
    checkpointMs.run.length = 0;

    const total = Math.round(RATE_PER_S * seconds);
    const start = performance.now();
    const cpuAtStart = process.cpuUsage();
    const { sentAt, elu, loopMaxMs } = await drive(total);
    const cpu = process.cpuUsage(cpuAtStart);
    return {
      pods: podCount,
      checkpoint_on: checkpointOn,
      requests: total,
      completed: completedMs.length,
      cgroup_p50_ms: round(percentile(cgroupMs, 50)),
      cgroup_p99_ms: round(percentile(cgroupMs, 99)),
      completed_p50_ms: round(percentile(completedMs, 50)),
      completed_p99_ms: round(percentile(completedMs, 99)),
      throughput_per_s: round(completedMs.length / ((lastCompletionAt - start) / 1000), 1),
      drain_ms: round(Math.max(0, lastCompletionAt - sentAt), 1),
      agent_elu: round(elu, 2),
      event_loop_max_ms: round(loopMaxMs, 1),
      checkpoint_disk_write_p99_ms: round(percentile(checkpointMs.disk, 99), 1),
      checkpoint_disk_write_max_ms: round(Math.max(0, ...checkpointMs.disk), 1),
      checkpoint_run_write_p99_ms: runDir ? round(percentile(checkpointMs.run, 99), 1) : null,
      checkpoint_run_write_max_ms: runDir ? round(Math.max(0, ...checkpointMs.run), 1) : null,
      cpu_ms_per_completed: round((cpu.user + cpu.system) / 1000 / Math.max(1, completedMs.length), 2),
    };
  } finally {
    await agent?.stop();
    if (api) await stopApiProcess(api);
    await sandbox.cleanup();
    await rm(dir, { recursive: true, force: true });
    if (runDir) await rm(runDir, { recursive: true, force: true });
  }
}

const available = realCgroupsAvailable();
if (!available.ok) {
  process.stderr.write(`bench resize needs writable cgroup v1 hierarchies: ${available.reason}\n`);
  process.exit(1);
}
const runs: RunResult[] = [];
runs.push(await run(110, 'disk+run'), await run(250, 'disk+run'), await run(250, 'disk'));
printTable(runs.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, v ?? '-']))));
const main = runs.find((r) => r.pods === 250 && r.checkpoint_on === 'disk+run')!;
const path = writeResult('resize', { ...main, rate_per_s: RATE_PER_S, seconds, runs });
process.stdout.write(
  `\ntargets: cgroup p99 < 10 ms, Completed p99 < 50 ms, ${RATE_PER_S}/s without a growing backlog (drain_ms small)\nwrote ${path}\n`,
);
process.exit(0);
