// Crashes with the agent as a real process: SIGKILL between two cgroup writes of one plan (held there by the
// test-only RESIZELET_TEST_PAUSE_AFTER_WRITES hook), and a truncated or corrupt checkpoint. After a restart a
// container holds the old or the new allocation whole, never a mix, and its status says which. Last, the
// checkpoint's run copy (as deployed): an agent restart loads it though the disk copy lags, and a node reboot
// (no run copy, a lagging disk copy, containers started again from their specs) converges.
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { realCgroupsAvailable } from '../support/real-cgroup.ts';
import { createHarness, Mi, waitFor, type Harness, type PodFixture } from './harness.ts';

const available = realCgroupsAvailable();
if (!available.ok) console.warn(`skipping crash tests: ${available.reason}`);

const NS = 'crash';

interface Values {
  podQuota: number | null;
  podMemory: bigint | null;
  quota: number | null;
  shares: number;
  memory: bigint | null;
}

describe.skipIf(!available.ok)('crashes (real agent, fake API server, real cgroups)', () => {
  let h: Harness;
  let w: PodFixture;
  let v: PodFixture;
  let u: PodFixture;
  const checkpointPath = () => join(h.dir, 'checkpoint.json');

  async function values(p: PodFixture): Promise<Values> {
    const pod = await h.settings(p.podPath);
    const c = await h.settings(p.containerPath);
    return {
      podQuota: pod.cpuQuotaUs,
      podMemory: pod.memoryLimitBytes,
      quota: c.cpuQuotaUs,
      shares: c.cpuShares,
      memory: c.memoryLimitBytes,
    };
  }
  const same = (a: Values, b: Values): boolean =>
    (Object.keys(a) as Array<keyof Values>).every((k) => a[k] === b[k]);
  const expected = (cpuLimitMilli: number, sharesOf: number, memoryMi: bigint): Values => ({
    podQuota: cpuLimitMilli * 100,
    podMemory: memoryMi * Mi,
    quota: cpuLimitMilli * 100,
    shares: sharesOf,
    memory: memoryMi * Mi,
  });
  const SPEC = expected(200, 102, 256n);
  const A = expected(1000, 102, 512n);
  const B = expected(1500, 512, 768n);
  const C = expected(2000, 512, 1024n);
  const REQ_A = '{"app":{"limits":{"cpu":"1","memory":"512Mi"}}}';
  const REQ_B = '{"app":{"requests":{"cpu":"500m"},"limits":{"cpu":"1500m","memory":"768Mi"}}}';
  const REQ_C = '{"app":{"limits":{"cpu":"2","memory":"1Gi"}}}';

  /** Starts the agent held after its first cgroup write, makes the request, waits for the hold. */
  async function pausedMidPlan(p: PodFixture, request: string, mode: 'stop' | 'hang'): Promise<Values> {
    await h.agent?.kill('SIGKILL');
    const agent = await h.start([], { RESIZELET_TEST_PAUSE_AFTER_WRITES: `1:${mode}` });
    h.request(p, request);
    if (mode === 'stop')
      await waitFor('the agent stopped (SIGSTOP)', async () => (await agent.state()) === 'T' || undefined);
    else await agent.waitForLog(/TEST HOOK: pausing after this cgroup write/);
    return values(p);
  }

  beforeAll(async () => {
    h = await createHarness();
    w = await h.addPod(NS, 'w');
    v = await h.addPod(NS, 'v');
    u = await h.addPod(NS, 'u');
    await h.start();
    h.request(w, REQ_A);
    await h.settled(w, 'Completed');
    expect(await values(w)).toEqual(A);
  }, 60_000);

  afterAll(async () => {
    await h?.close();
  });

  it('killed mid-plan before the new allocation was checkpointed: the old one, whole, is enforced before the API answers; the status says so', async () => {
    const mixed = await pausedMidPlan(w, REQ_B, 'stop');
    expect(mixed).not.toEqual(A);
    expect(mixed).not.toEqual(B);
    await h.agent!.kill('SIGKILL');

    // While the agent is down: the API goes away, and a pod takes the node's free CPU so B must wait.
    h.api.setUnreachable(true);
    await h.addPod(NS, 'hog', {
      cgroups: false,
      spec: { requests: { cpu: '3700m' }, limits: { cpu: '3700m' } },
    });
    const agent = await h.start();
    await agent.waitForLog(/checkpoint enforced/);
    expect(await values(w)).toEqual(A);

    h.api.setUnreachable(false);
    const deferred = await waitFor(
      'Deferred for want of CPU',
      () => {
        const s = h.status(w);
        return s?.resizeStatus === 'Deferred' && /^not enough free CPU/.test(String(s.message))
          ? s
          : undefined;
      },
      40_000,
    );
    expect(deferred.allocatedResources).toEqual([
      { name: 'app', requests: { cpu: '100m', memory: '64Mi' }, limits: { cpu: '1', memory: '512Mi' } },
    ]);
    expect(await values(w)).toEqual(A);

    h.api.deletePod(NS, 'hog');
    const done = await h.settled(w, 'Completed');
    expect(done.allocatedResources).toEqual([
      { name: 'app', requests: { cpu: '500m', memory: '64Mi' }, limits: { cpu: '1500m', memory: '768Mi' } },
    ]);
    expect(await values(w)).toEqual(B);
  }, 60_000);

  it('killed mid-plan after the new allocation was checkpointed (applying): the new one, whole, is enforced; the status says so', async () => {
    const mixed = await pausedMidPlan(w, REQ_C, 'hang');
    expect(mixed).not.toEqual(B);
    expect(mixed).not.toEqual(C);
    // The event loop ran on: the `applying` entry reached the disk before the kill.
    await waitFor('applying entry on disk', async () => {
      const file = JSON.parse(await readFile(checkpointPath(), 'utf8')) as {
        entries: Array<{ uid: string; phase: string; allocation: Array<{ limits: { cpu?: string } }> }>;
      };
      const e = file.entries.find((x) => x.uid === w.uid);
      return e?.phase === 'applying' && e.allocation[0]?.limits.cpu === '2' ? true : undefined;
    });
    await h.agent!.kill('SIGKILL');
    h.api.setUnreachable(true);
    const agent = await h.start();
    await agent.waitForLog(/checkpoint enforced/);
    expect(await values(w)).toEqual(C);
    h.api.setUnreachable(false);
    const done = await h.settled(w, 'Completed', 40_000);
    expect(done.allocatedResources).toEqual([
      { name: 'app', requests: { cpu: '500m', memory: '64Mi' }, limits: { cpu: '2', memory: '1Gi' } },
    ]);
    expect(await values(w)).toEqual(C);
  }, 60_000);

  it('killed mid-plan of a first resize (nothing checkpointed yet): the spec values are put back whole; the status says so', async () => {
    const mixed = await pausedMidPlan(v, REQ_B, 'stop');
    expect(mixed).not.toEqual(SPEC);
    expect(mixed).not.toEqual(B);
    await h.agent!.kill('SIGKILL');
    await h.addPod(NS, 'hog', {
      cgroups: false,
      spec: { requests: { cpu: '3000m' }, limits: { cpu: '3000m' } },
    });
    const agent = await h.start();
    const deferred = await waitFor('Deferred for want of CPU', () => {
      const s = h.status(v);
      return s?.resizeStatus === 'Deferred' && /^not enough free CPU/.test(String(s.message)) ? s : undefined;
    });
    expect(deferred.allocatedResources).toEqual([
      { name: 'app', requests: { cpu: '100m', memory: '64Mi' }, limits: { cpu: '200m', memory: '256Mi' } },
    ]);
    await waitFor('spec values back', async () => (same(await values(v), SPEC) ? true : undefined));
    await agent.waitForLog(/put the spec values back over a partly applied resize/);
    h.api.deletePod(NS, 'hog');
    await h.settled(v, 'Completed');
    expect(await values(v)).toEqual(B);
  }, 60_000);

  it('a truncated or edited checkpoint is detected, reported loudly and rebuilt from status annotations proven by the live cgroups', async () => {
    h.request(u, REQ_A);
    await h.settled(u, 'Completed');
    await h.agent!.kill('SIGKILL');
    // Truncated: half a file. And while the agent is down, u's container restarts with its spec values,
    // so u's Completed status is no longer what its cgroups hold.
    const text = await readFile(checkpointPath(), 'utf8');
    await writeFile(checkpointPath(), text.slice(0, Math.floor(text.length / 2)));
    await h.restartContainer(u);
    let agent = await h.start();
    await agent.waitForLog(/CHECKPOINT CORRUPT/);
    expect(agent.logs.find((l) => l.includes('CHECKPOINT CORRUPT'))).toMatch(/"level":50.*not valid JSON/);
    // w's and v's cgroups hold what their statuses claim: adopted, never reset.
    await agent.waitForLog(/allocation rebuilt from the status annotation/);
    expect(await values(w)).toEqual(C);
    expect(await values(v)).toEqual(B);
    // u's status claims what its new container does not hold: judged again, and applied again.
    await agent.waitForLog(/not adopted, its request is judged again/);
    await waitFor('u re-applied', async () => (same(await values(u), A) ? true : undefined));
    expect(h.status(u)?.resizeStatus).toBe('Completed');
    // The checkpoint is whole again and holds all three.
    await waitFor('checkpoint rebuilt', async () => {
      try {
        const file = JSON.parse(await readFile(checkpointPath(), 'utf8')) as {
          entries: Array<{ uid: string }>;
        };
        const uids = new Set(file.entries.map((e) => e.uid));
        return [w, v, u].every((p) => uids.has(p.uid)) ? true : undefined;
      } catch {
        return undefined;
      }
    });

    // Edited by hand (valid JSON, wrong checksum): detected the same way.
    await agent.kill('SIGKILL');
    const file = JSON.parse(await readFile(checkpointPath(), 'utf8')) as {
      entries: Array<{ allocation: unknown }>;
    };
    file.entries[0]!.allocation = [];
    await writeFile(checkpointPath(), JSON.stringify(file));
    agent = await h.start();
    expect(await agent.waitForLog(/CHECKPOINT CORRUPT/)).toMatch(/failed its checksum/);
    await waitFor('all three enforced again', async () => {
      const ok = same(await values(w), C) && same(await values(v), B) && same(await values(u), A);
      return ok ? true : undefined;
    });
  }, 60_000);

  it('with a run copy: a killed agent enforces what its Completed statuses say though the disk copy lags; after a reboot the requests are judged and applied again', async () => {
    const runDir = join(h.dir, 'run');
    const withRunCopy = [`--run-checkpoint=${join(runDir, 'checkpoint.json')}`];
    await h.agent?.kill('SIGKILL');
    const x = await h.addPod(NS, 'x');
    let agent = await h.start(withRunCopy);
    h.request(x, REQ_A);
    await h.settled(x, 'Completed');
    // The disk copy as it stood with x at A: what a disk that had not caught up would hold.
    const lagging = await waitFor('x at A on disk', async () => {
      const text = await readFile(checkpointPath(), 'utf8');
      return text.includes(x.uid) ? text : undefined;
    });
    h.request(x, REQ_B);
    const b = await h.settled(x, 'Completed');
    expect(b.allocatedResources).toEqual([
      expect.objectContaining({ limits: { cpu: '1500m', memory: '768Mi' } }),
    ]);
    await agent.kill('SIGKILL');
    await writeFile(checkpointPath(), lagging);

    // An agent restart, the API unreachable: the run copy (x at B) is loaded and enforced, not the disk's A.
    h.api.setUnreachable(true);
    agent = await h.start(withRunCopy);
    await agent.waitForLog(/checkpoint enforced/);
    expect(agent.logs.find((l) => l.includes('checkpoint loaded'))).toMatch(/"from":"run"/);
    expect(await values(x)).toEqual(B);
    h.api.setUnreachable(false);

    // A reboot: /run is empty, the disk copy lags (x at A), x's container starts again from its spec.
    await agent.kill('SIGKILL');
    await rm(runDir, { recursive: true, force: true });
    await writeFile(checkpointPath(), lagging);
    await h.restartContainer(x);
    agent = await h.start(withRunCopy);
    // The status (B) is ahead of the checkpoint (A) and the new container proves neither: B is judged again.
    await waitFor('x at B again', async () => (same(await values(x), B) ? true : undefined), 20_000);
    expect(h.status(x)?.resizeStatus).toBe('Completed');
    expect(h.status(x)?.allocatedResources).toEqual([
      expect.objectContaining({ limits: { cpu: '1500m', memory: '768Mi' } }),
    ]);
    expect(
      agent.logs.some((l) =>
        l.includes('the status annotation and the checkpoint answer different requests'),
      ),
    ).toBe(true);
    await waitFor('x at B in the run copy again', async () => {
      const text = await readFile(join(runDir, 'checkpoint.json'), 'utf8').catch(() => '');
      return text.includes('"cpu":"1500m"') && text.includes(x.uid) ? true : undefined;
    });
  }, 60_000);
});
