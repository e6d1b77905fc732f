// API server faults with the agent as a real process: watches closed and expired (410 Gone: relist, no
// duplicate actuation), then the API server unreachable for 30 s (allocations stay enforced, status writes
// resume after, nothing lost).
import { writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { realCgroupsAvailable } from '../support/real-cgroup.ts';
import { createHarness, waitFor, type Harness, type PodFixture } from './harness.ts';

const available = realCgroupsAvailable();
if (!available.ok) console.warn(`skipping API outage tests: ${available.reason}`);

const NS = 'outage';

describe.skipIf(!available.ok)('API server faults (real agent, fake API server, real cgroups)', () => {
  let h: Harness;
  let w: PodFixture;
  let x: PodFixture;

  const completions = (p: PodFixture): number =>
    h.agent!.logs.filter(
      (l) => l.includes('"msg":"resize completed"') && l.includes(`"pod":"${NS}/${p.name}"`),
    ).length;
  const cgroupWrites = (): number => h.agent!.logs.filter((l) => l.includes('"msg":"cgroup write"')).length;
  const podLists = (): number =>
    h.api.requests.filter((r) => r.method === 'GET' && r.path === '/api/v1/pods' && !r.watch).length;

  beforeAll(async () => {
    h = await createHarness();
    w = await h.addPod(NS, 'w');
    x = await h.addPod(NS, 'x');
    await h.start();
  }, 60_000);

  afterAll(async () => {
    await h?.close();
  });

  it('watch closed, then expired (410 Gone): resumes, relists, and actuates nothing twice', async () => {
    h.request(w, '{"app":{"limits":{"cpu":"1"}}}');
    await h.settled(w, 'Completed');
    expect(completions(w)).toBe(1);

    // A clean close (the server's watch timeout): resumes from the last resourceVersion, no relist.
    const lists = podLists();
    h.api.closeWatches();
    h.request(w, '{"app":{"limits":{"cpu":"1200m"}}}');
    await h.settled(w, 'Completed');
    expect(completions(w)).toBe(2);
    expect(podLists()).toBe(lists);

    // History gone: the resumed watch gets 410 Gone and the informer lists again. (A write elsewhere first,
    // so the pod watch's last resourceVersion is older than the new horizon.)
    const writes = cgroupWrites();
    h.api.upsertObject({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'elsewhere' } });
    h.api.expireHistory();
    h.api.closeWatches();
    await waitFor('a relist', () => (podLists() > lists ? true : undefined), 15_000);
    await waitFor('a new watch', () => (h.api.openWatchCount() > 0 ? true : undefined));
    await new Promise((r) => setTimeout(r, 1_500)); // every pod handled again after the relist, and a drift check
    expect(cgroupWrites()).toBe(writes);
    expect(completions(w)).toBe(2);
    expect(
      h.api.events().filter((e) => (e as { reason?: string }).reason === 'ResizeCompleted'),
    ).toHaveLength(2);
    // And the relisted informer still sees new requests.
    h.request(w, '{"app":{"limits":{"cpu":"1"}}}');
    await h.settled(w, 'Completed');
    expect(completions(w)).toBe(3);
  }, 40_000);

  it('unreachable for 30 s: allocations stay enforced, the status write resumes after, nothing is lost', async () => {
    // A status the API server refuses to store: the cgroups are written, the Completed status waits.
    const refused = h.api.injectFault({
      method: 'PATCH',
      pathPrefix: `/api/v1/namespaces/${NS}/pods/w`,
      status: 503,
    });
    h.request(w, '{"app":{"limits":{"cpu":"1500m"}}}');
    await waitFor('cgroups written', async () =>
      (await h.settings(w.containerPath)).cpuQuotaUs === 150_000 ? true : undefined,
    );
    await waitFor('the status patch refused', () => (refused.hits > 0 ? true : undefined));
    expect(h.status(w)?.resizeStatus).toBe('Completed'); // still the previous request's
    h.api.setUnreachable(true);
    refused.clear();
    const start = Date.now();

    // During the outage the kernel side goes on: drift is corrected from the checkpoint.
    await new Promise((r) => setTimeout(r, 3_000));
    await writeFile(`${h.sandbox.layout.controllers.cpu.mount}/${w.containerPath}/cpu.cfs_quota_us`, '30000');
    await waitFor(
      'drift corrected while unreachable',
      async () => ((await h.settings(w.containerPath)).cpuQuotaUs === 150_000 ? true : undefined),
      5_000,
    );
    // A request written meanwhile (the agent cannot see it yet).
    h.request(x, '{"app":{"limits":{"cpu":"700m"}}}');
    await new Promise((r) => setTimeout(r, Math.max(0, 30_000 - (Date.now() - start))));
    expect((await h.settings(w.containerPath)).cpuQuotaUs).toBe(150_000);
    expect((await h.settings(x.containerPath)).cpuQuotaUs).toBe(20_000);
    expect(h.agent!.child.exitCode).toBeNull();

    h.api.setUnreachable(false);
    // The pod informer's restart backoff is capped at 30 s: allow for it.
    const wDone = await waitFor(
      'w Completed at 1500m',
      () => {
        const s = h.status(w);
        return s?.resizeStatus === 'Completed' && JSON.stringify(s.allocatedResources).includes('1500m')
          ? s
          : undefined;
      },
      40_000,
    );
    expect(wDone.allocatedResources).toEqual([
      { name: 'app', requests: { cpu: '100m', memory: '64Mi' }, limits: { cpu: '1500m', memory: '256Mi' } },
    ]);
    await h.settled(x, 'Completed', 40_000);
    expect((await h.settings(x.containerPath)).cpuQuotaUs).toBe(70_000);
    expect((await h.settings(w.containerPath)).cpuQuotaUs).toBe(150_000);
  }, 90_000);
});
