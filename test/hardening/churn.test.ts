// Churn with the agent as a real process: a container restart storm, pods deleted in the middle of a resize,
// and the node's allocatable shrinking under requests that were Accepted (or are Deferred).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { realCgroupsAvailable } from '../support/real-cgroup.ts';
import { createHarness, Mi, waitFor, type Harness, type PodFixture } from './harness.ts';

const available = realCgroupsAvailable();
if (!available.ok) console.warn(`skipping churn tests: ${available.reason}`);

const NS = 'churn';

describe.skipIf(!available.ok)('churn (real agent, fake API server, real cgroups)', () => {
  let h: Harness;

  const checkpointUids = async (): Promise<Set<string>> => {
    try {
      const file = JSON.parse(await readFile(join(h.dir, 'checkpoint.json'), 'utf8')) as {
        entries: Array<{ uid: string }>;
      };
      return new Set(file.entries.map((e) => e.uid));
    } catch {
      return new Set();
    }
  };
  const patchesTo = (p: PodFixture): number =>
    h.api.requests.filter(
      (r) => r.method === 'PATCH' && r.path === `/api/v1/namespaces/${p.namespace}/pods/${p.name}`,
    ).length;

  beforeAll(async () => {
    h = await createHarness();
    await h.start();
  }, 60_000);

  afterAll(async () => {
    await h?.close();
  });

  it('a container restart storm: every new container gets the allocation, the last one keeps it', async () => {
    const s = await h.addPod(NS, 'storm');
    h.request(s, '{"app":{"limits":{"cpu":"1","memory":"512Mi"}}}');
    await h.settled(s, 'Completed');
    for (let i = 0; i < 20; i++) {
      await h.restartContainer(s);
      await new Promise((r) => setTimeout(r, 50 + (i % 3) * 50));
    }
    const last = s.containerPath;
    await waitFor(
      'the last container holds the allocation',
      async () => {
        const c = await h.settings(last);
        return c.cpuQuotaUs === 100_000 && c.memoryLimitBytes === 512n * Mi ? true : undefined;
      },
      5_000,
    );
    expect((await h.settings(s.podPath)).cpuQuotaUs).toBe(100_000);
    expect(h.status(s)?.resizeStatus).toBe('Completed');
    await waitFor('checkpoint has the last container', async () => {
      const file = JSON.parse(await readFile(join(h.dir, 'checkpoint.json'), 'utf8')) as {
        entries: Array<{ uid: string; containerIds: Record<string, string> }>;
      };
      return file.entries.find((e) => e.uid === s.uid)?.containerIds.app === `containerd://${s.containerId}`
        ? true
        : undefined;
    });
    expect(h.agent!.logs.some((l) => l.includes('reconcile failed'))).toBe(false);
    expect(h.agent!.child.exitCode).toBeNull();
  });

  it('a pod deleted while its resize waits (Deferred) or right as it is requested: forgotten, nothing retried', async () => {
    const hog = await h.addPod(NS, 'hog', {
      cgroups: false,
      spec: { requests: { cpu: '3500m' }, limits: { cpu: '3500m' } },
    });
    const waiting = await h.addPod(NS, 'waiting');
    h.request(waiting, '{"app":{"requests":{"cpu":"800m"},"limits":{"cpu":"1"}}}');
    await h.settled(waiting, 'Deferred');
    const sudden = await h.addPod(NS, 'sudden');
    h.request(sudden, '{"app":{"limits":{"cpu":"1"}}}');
    h.api.deletePod(NS, 'sudden');
    h.api.deletePod(NS, 'waiting');
    await new Promise((r) => setTimeout(r, 1_500)); // three Deferred retry periods
    const before = [patchesTo(waiting), patchesTo(sudden)];
    await new Promise((r) => setTimeout(r, 1_500));
    expect([patchesTo(waiting), patchesTo(sudden)]).toEqual(before);
    const uids = await checkpointUids();
    expect(uids.has(waiting.uid)).toBe(false);
    expect(uids.has(sudden.uid)).toBe(false);
    expect(h.agent!.logs.some((l) => l.includes('reconcile failed'))).toBe(false);
    h.api.deletePod(NS, hog.name);
  });

  it('the node shrinking under an Accepted resize: judged again, the previous allocation restored; Deferred ones that can never fit are Rejected', async () => {
    // Accepted: a RestartContainer resize waits for the kubelet to restart the container.
    const r = await h.addPod(NS, 'restarting');
    h.request(r, '{"app":{"requests":{"memory":"1Gi"},"limits":{"memory":"1Gi"}}}', {
      'resizelet.io/resize-policy': '{"memory":"RestartContainer"}',
    });
    await h.settled(r, 'Accepted');
    // Deferred: not enough free CPU now, but it would fit an empty node.
    const hog = await h.addPod(NS, 'hog2', {
      cgroups: false,
      spec: { requests: { cpu: '3000m' }, limits: { cpu: '3000m' } },
    });
    const q = await h.addPod(NS, 'queued');
    h.request(q, '{"app":{"requests":{"cpu":"2500m"},"limits":{"cpu":"3"}}}');
    await h.settled(q, 'Deferred');

    h.api.setNodeAllocatable(h.nodeName, { cpu: '2', memory: '768Mi' });
    const rejected = await h.settled(r, 'Rejected', 10_000);
    expect(rejected.message).toBe(
      "memory requests 1024Mi exceed the node's allocatable 768Mi (the node's allocatable changed while the resize waited for its containers to restart)",
    );
    expect(rejected.allocatedResources).toEqual([
      { name: 'app', requests: { cpu: '100m', memory: '64Mi' }, limits: { cpu: '200m', memory: '256Mi' } },
    ]);
    const never = await h.settled(q, 'Rejected', 10_000);
    expect(never.message).toBe("CPU requests 2500m exceed the node's allocatable 2000m");
    // The kubelet restarts the container now: it gets the previous allocation, not the withdrawn one.
    await h.restartContainer(r);
    await new Promise((res) => setTimeout(res, 1_500));
    expect((await h.settings(r.containerPath)).memoryLimitBytes).toBe(256n * Mi);
    expect(h.status(r)?.resizeStatus).toBe('Rejected');
    h.api.deletePod(NS, hog.name);
  });
});
