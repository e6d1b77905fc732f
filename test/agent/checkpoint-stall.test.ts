// A node disk that stalls the checkpoint's fsync (it happens: this machine's disk stalls one for about
// 290 ms every 15 s or so). The agent runs in this process so the test can hold its checkpoint's fsync;
// API server (fake, over HTTP) and cgroups (real v1 directories) as everywhere else.
// What must hold while the fsync is stuck: the cgroups are written anyway, a second request for the same
// pod is written too (the pod's worker does not wait for the disk), and no Completed status is published
// until the checkpoint holding it is durable. With a run copy (on /run in the DaemonSet), Completed waits
// for that copy instead, and a restarted agent loads it.
import * as fsp from 'node:fs/promises';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../../agent/config.ts';
import { startAgent } from '../../agent/main.ts';
import { createCheckpoint, type CheckpointFs } from '../../agent/reconcile/checkpoint.ts';
import type { FakeApiServer } from '../fakes/apiserver.ts';
import { gatedFsync } from '../support/fsync-gate.ts';
import { createRealSandbox, realCgroupsAvailable, type RealSandbox } from '../support/real-cgroup.ts';
import { oneAppPodNode, sandboxAgentArgs, statusOf, waitFor, withAnnotations } from './support.ts';

const available = realCgroupsAvailable();
if (!available.ok) console.warn(`skipping checkpoint stall test: ${available.reason}`);

const NODE = 'stall-node';
const NS = 'disk';

describe.skipIf(!available.ok)('a stalled checkpoint fsync (agent in process, real cgroups)', () => {
  let sandbox: RealSandbox;
  let api: FakeApiServer;
  let dir: string;
  let agent: Awaited<ReturnType<typeof startAgent>> | undefined;
  let containerPath: string;
  // The disk copy's fsyncs: its temp file and its directory, `dir` itself. The run copy is under dir/run.
  const disk = gatedFsync((p) => p === dir || p === join(dir, '.checkpoint.json.tmp'));
  let uid: string;

  const quota = async (): Promise<number | null> => (await sandbox.read(containerPath)).settings.cpuQuotaUs;
  const request = (text: string): void => {
    api.upsertPod(withAnnotations(api.getPod(NS, 'web')!, { 'resizelet.io/resize': text }));
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'resizelet-stall-'));
    sandbox = await createRealSandbox();
    ({ api, uid, containerPath } = await oneAppPodNode({ sandbox, dir, node: NODE, namespace: NS }));
    const config = loadConfig({
      argv: sandboxAgentArgs({
        nodeName: NODE,
        dir,
        podsRoot: sandbox.layout.podsRoot,
        reconcileInterval: '1h',
      }),
      env: {},
      homeKubeconfig: undefined,
    }) as Config;
    await start(config);
  }, 60_000);

  async function start(config: Config): Promise<void> {
    agent = await startAgent(config, pino({ level: 'silent' }), { checkpointFs: disk.fs });
    await waitFor('the informer synced', () => (agent!.informer.synced ? true : undefined));
  }

  const completedCpuLimit = (): string | undefined => {
    const s = statusOf(api, NS, 'web') as
      { resizeStatus?: string; allocatedResources?: Array<{ limits?: { cpu?: string } }> } | undefined;
    return s?.resizeStatus === 'Completed' ? s.allocatedResources?.[0]?.limits?.cpu : undefined;
  };
  const checkpointCpuLimit = async (path: string): Promise<string | undefined> => {
    const file = JSON.parse(await fsp.readFile(path, 'utf8')) as {
      entries: Array<{ uid: string; allocation: Array<{ limits: { cpu: string } }> }>;
    };
    return file.entries.find((e) => e.uid === uid)?.allocation[0]?.limits.cpu;
  };

  afterAll(async () => {
    disk.open();
    await agent?.stop();
    await api?.close();
    await sandbox?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('writes the cgroups of two requests in a row while the fsync hangs, and says Completed only after', async () => {
    disk.close();
    request('{"app":{"limits":{"cpu":"500m"}}}');
    await waitFor('the first request in the cgroups', async () =>
      (await quota()) === 50_000 ? true : undefined,
    );
    // The pod's next request is not queued behind the stuck disk.
    request('{"app":{"limits":{"cpu":"700m"}}}');
    await waitFor('the second request in the cgroups', async () =>
      (await quota()) === 70_000 ? true : undefined,
    );
    expect(disk.held).toBeGreaterThan(0);
    // Nothing durable yet, so nothing Completed: a restart now would re-apply the checkpoint's old values.
    await new Promise((r) => setTimeout(r, 300));
    expect(statusOf(api, NS, 'web')?.resizeStatus).not.toBe('Completed');

    disk.open();
    const status = await waitFor('Completed for the second request', () => {
      const s = statusOf(api, NS, 'web') as
        { resizeStatus?: string; allocatedResources?: Array<{ limits?: { cpu?: string } }> } | undefined;
      return s?.resizeStatus === 'Completed' && s.allocatedResources?.[0]?.limits?.cpu === '700m'
        ? s
        : undefined;
    });
    expect(status.resizeStatus).toBe('Completed');
    const onDisk = JSON.parse(await fsp.readFile(join(dir, 'checkpoint.json'), 'utf8')) as {
      entries: Array<{ uid: string; allocation: Array<{ limits: { cpu: string } }> }>;
    };
    expect(onDisk.entries.find((e) => e.uid === uid)?.allocation[0]?.limits.cpu).toBe('700m');
  }, 30_000);

  it('with a run copy, says Completed while the disk fsync hangs, and a restarted agent would load it', async () => {
    await agent?.stop();
    const runPath = join(dir, 'run', 'checkpoint.json');
    const argv = sandboxAgentArgs({
      nodeName: NODE,
      dir,
      podsRoot: sandbox.layout.podsRoot,
      reconcileInterval: '1h',
    });
    await start(
      loadConfig({
        argv: [...argv, `--run-checkpoint=${runPath}`],
        env: {},
        homeKubeconfig: undefined,
      }) as Config,
    );

    disk.close();
    const heldBefore = disk.held;
    request('{"app":{"limits":{"cpu":"900m"}}}');
    await waitFor(
      'Completed for 900m with the disk stuck',
      () => completedCpuLimit() === '900m' || undefined,
    );
    expect(disk.held).toBeGreaterThan(heldBefore);
    expect(await quota()).toBe(90_000);
    // The disk copy still holds the previous allocation; the run copy, which an agent restart loads, the new.
    expect(await checkpointCpuLimit(join(dir, 'checkpoint.json'))).toBe('700m');
    expect(await checkpointCpuLimit(runPath)).toBe('900m');
    const restarted = createCheckpoint({
      fs: fsp as unknown as CheckpointFs,
      path: join(dir, 'checkpoint.json'),
      runPath,
      node: NODE,
    });
    expect((await restarted.load()).loadedFrom).toBe('run');
    expect(restarted.get(uid)?.allocation[0]?.limits.cpu).toBe('900m');

    disk.open();
    await waitFor(
      'the disk copy caught up',
      async () => (await checkpointCpuLimit(join(dir, 'checkpoint.json'))) === '900m' || undefined,
    );
  }, 30_000);
});
