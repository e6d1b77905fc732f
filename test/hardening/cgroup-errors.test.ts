// Kernel refusals of cgroup writes, with the agent as a real process: each is answered Deferred with the
// reason, the values already written are put back, and the write is retried until it succeeds.
// - EINVAL from the real kernel: a hand-made QoS cgroup with a CPU quota below what the pod needs (v1 refuses
//   a child's quota above its parent's; the kubelet never sets one there, a person can).
// - EBUSY and EACCES injected by the test-only RESIZELET_TEST_CGROUP_FAULTS hook: EBUSY needs memory the
//   kernel cannot reclaim below a limit the planner would allow (its working-set guard refuses the honest
//   way there), and root is never refused EACCES by a writable cgroupfs.
import { writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { realCgroupsAvailable } from '../support/real-cgroup.ts';
import { createHarness, Mi, type Harness, type PodFixture } from './harness.ts';

const available = realCgroupsAvailable();
if (!available.ok) console.warn(`skipping cgroup error tests: ${available.reason}`);

const NS = 'errors';

describe.skipIf(!available.ok)('cgroup write errors (real agent, fake API server, real cgroups)', () => {
  let h: Harness;
  let busy: PodFixture;
  let denied: PodFixture;
  let invalid: PodFixture;

  /**
   * Every distinct (status, message) the pod's status shows until it is Completed. Read from every stored
   * version of the pod, not by polling: a Deferred retried within milliseconds can be gone before a poll
   * sees it (a CI run polled every 20 ms and saw only Completed).
   */
  async function statusesUntilCompleted(p: PodFixture, timeoutMs = 20_000): Promise<string[]> {
    const seen: string[] = [];
    const note = (s: Record<string, unknown> | undefined): boolean => {
      const entry = s ? `${String(s.resizeStatus)}: ${String(s.message)}` : '';
      if (entry && seen.at(-1) !== entry) seen.push(entry);
      return s?.resizeStatus === 'Completed';
    };
    let done = false;
    const unsubscribe = h.api.onPodChange((pod) => {
      if (done || pod.metadata?.namespace !== p.namespace || pod.metadata.name !== p.name) return;
      const text = pod.metadata.annotations?.['resizelet.io/resource-status'];
      done = note(text ? (JSON.parse(text) as Record<string, unknown>) : undefined);
    });
    try {
      done ||= note(h.status(p));
      const deadline = Date.now() + timeoutMs;
      while (!done) {
        if (Date.now() > deadline) throw new Error(`not Completed in ${timeoutMs} ms: ${seen.join(' | ')}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      return seen;
    } finally {
      unsubscribe();
    }
  }

  beforeAll(async () => {
    h = await createHarness();
    busy = await h.addPod(NS, 'busy');
    denied = await h.addPod(NS, 'denied');
    invalid = await h.addPod(NS, 'invalid');
    await h.start([], {
      RESIZELET_TEST_CGROUP_FAULTS: 'EACCES:cpu.cfs_quota_us:1,EBUSY:memory.limit_in_bytes:2',
    });
  }, 60_000);

  afterAll(async () => {
    await h?.close();
  });

  it('EACCES: Deferred with the reason, retried, Completed', async () => {
    h.request(denied, '{"app":{"limits":{"cpu":"400m"}}}');
    const seen = await statusesUntilCompleted(denied);
    expect(seen[0]).toMatch(
      /^Deferred: a cgroup write failed \(RESIZELET_ERR_CGROUP_PERMISSION\): write .*cpu\.cfs_quota_us: EACCES.*; the previous values were restored$/,
    );
    expect(seen.at(-1)).toMatch(/^Completed: resized app in place/);
    expect((await h.settings(denied.containerPath)).cpuQuotaUs).toBe(40_000);
    expect((await h.settings(denied.podPath)).cpuQuotaUs).toBe(40_000);
  });

  it('EBUSY (twice): Deferred with the reason, retried until the kernel takes it, Completed', async () => {
    h.request(busy, '{"app":{"limits":{"memory":"128Mi"}}}');
    const seen = await statusesUntilCompleted(busy);
    expect(seen[0]).toMatch(
      /^Deferred: a cgroup write failed \(RESIZELET_ERR_CGROUP_BUSY\): write .*memory\.limit_in_bytes: EBUSY/,
    );
    expect(seen.at(-1)).toMatch(/^Completed/);
    // Two refusals, two retries: the log has both.
    expect(h.agent!.logs.filter((l) => l.includes('EBUSY') && l.includes('cgroup write failed')).length).toBe(
      2,
    );
    expect((await h.settings(busy.containerPath)).memoryLimitBytes).toBe(128n * Mi);
  });

  it('EINVAL from the kernel (pod quota above its parent QoS cgroup): Deferred, then Completed once the parent allows it', async () => {
    const parentQuota = `${h.sandbox.layout.controllers.cpu.mount}/${h.sandbox.layout.podsRoot}/burstable/cpu.cfs_quota_us`;
    // Above every child's quota now (the kernel checks that too), below the 50000 the pod will need.
    await writeFile(parentQuota, '45000');
    try {
      h.request(invalid, '{"app":{"limits":{"cpu":"500m"}}}');
      const deferred = await h.settled(invalid, 'Deferred');
      expect(deferred.message).toMatch(
        /^a cgroup write failed \(RESIZELET_ERR_CGROUP_INVALID\): write .*cpu\.cfs_quota_us: EINVAL.*; the previous values were restored$/,
      );
      // Retried meanwhile, and refused each time, with nothing left half-written.
      await new Promise((r) => setTimeout(r, 1_200));
      expect(h.status(invalid)?.resizeStatus).toBe('Deferred');
      expect((await h.settings(invalid.podPath)).cpuQuotaUs).toBe(20_000);
      expect((await h.settings(invalid.containerPath)).cpuQuotaUs).toBe(20_000);
    } finally {
      await writeFile(parentQuota, '-1');
    }
    await h.settled(invalid, 'Completed');
    expect((await h.settings(invalid.podPath)).cpuQuotaUs).toBe(50_000);
    expect((await h.settings(invalid.containerPath)).cpuQuotaUs).toBe(50_000);
  });
});
