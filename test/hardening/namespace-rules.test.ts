// Namespace rules with the agent as a real process: ResourceQuota counted over every pod of the namespace on
// every node at max(spec, allocated), LimitRange on resized values, the namespace opt-out label, the
// --namespaces scope, and a forged status annotation that must not buy a pod anything.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { realCgroupsAvailable } from '../support/real-cgroup.ts';
import { encodeStatus } from '../../agent/resize/status.ts';
import { requestHash } from '../../agent/resize/request.ts';
import { createHarness, waitFor, type Harness, type PodFixture } from './harness.ts';

const available = realCgroupsAvailable();
if (!available.ok) console.warn(`skipping namespace rule tests: ${available.reason}`);

const NS = 'team-a';
const completed = (allocation: object, request: string): string =>
  encodeStatus({
    resizeStatus: 'Completed',
    allocatedResources: [allocation as never],
    observedRequest: requestHash(request),
    message: 'resized app in place',
    lastTransitionTime: new Date().toISOString(),
  });

describe.skipIf(!available.ok)('namespace rules (real agent, fake API server, real cgroups)', () => {
  let h: Harness;
  let a: PodFixture;
  let b: PodFixture;
  let forged: PodFixture;
  let outside: PodFixture;
  const remoteRequest = '{"app":{"limits":{"cpu":"500m"}}}';

  beforeAll(async () => {
    h = await createHarness();
    h.api.upsertObject({
      apiVersion: 'v1',
      kind: 'ResourceQuota',
      metadata: { name: 'compute', namespace: NS },
      spec: { hard: { 'limits.cpu': '1200m', 'requests.memory': '1Gi', pods: '10' } },
    });
    h.api.upsertObject({
      apiVersion: 'v1',
      kind: 'LimitRange',
      metadata: { name: 'bounds', namespace: NS },
      spec: { limits: [{ type: 'Container', max: { cpu: '2' }, maxLimitRequestRatio: { memory: '4' } }] },
    });
    a = await h.addPod(NS, 'a');
    b = await h.addPod(NS, 'b');
    // A pod of the namespace on another node, which that node's agent resized to a 500m limit.
    await h.addPod(NS, 'remote', {
      node: 'other-node',
      annotations: {
        'resizelet.io/resize': remoteRequest,
        'resizelet.io/resource-status': completed(
          {
            name: 'app',
            requests: { cpu: '100m', memory: '64Mi' },
            limits: { cpu: '500m', memory: '256Mi' },
          },
          remoteRequest,
        ),
      },
    });
    // A pod owner's hand-written status claiming 3 CPUs that no agent ever granted.
    const forgedRequest = '{"app":{"limits":{"cpu":"3"}}}';
    forged = await h.addPod(NS, 'forged', {
      annotations: {
        'resizelet.io/resize': forgedRequest,
        'resizelet.io/resource-status': completed(
          { name: 'app', requests: { cpu: '3', memory: '64Mi' }, limits: { cpu: '3', memory: '256Mi' } },
          forgedRequest,
        ),
      },
    });
    h.api.upsertObject({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'opted-out', labels: { 'resizelet.io/disabled': 'true' } },
    });
    outside = await h.addPod('not-in-scope', 'c');
    await h.start(['--namespaces', `${NS},opted-out,free`]);
  }, 60_000);

  afterAll(async () => {
    await h?.close();
  });

  it('rejects a resize that would take the namespace past a quota, naming the quota and counting other nodes', async () => {
    // limits.cpu: a 200m + b 200m + forged 200m (its spec: the forged status counts for nothing) + remote
    // max(200m spec, 500m allocated by the other node's agent) = 1100m of 1200m.
    h.request(a, '{"app":{"limits":{"cpu":"700m"}}}');
    const s = await h.settled(a, 'Rejected');
    expect(s.message).toBe(
      'exceeds ResourceQuota "compute" in namespace "team-a": limits.cpu would be 1600m of 1200m (other pods use 900m, this pod would use 700m)',
    );
    expect((await h.settings(a.containerPath)).cpuQuotaUs).toBe(20_000);
  });

  it('defers a resize that fits once another resize in the namespace completes, then completes it', async () => {
    // The remote pod is shrinking back to 200m (its agent has not answered yet): 400m fits after that.
    const shrink = '{"app":{"limits":{"cpu":"200m"}}}';
    const remote = h.api.getPod(NS, 'remote')!;
    h.api.upsertPod({
      ...remote,
      metadata: {
        ...remote.metadata,
        annotations: { ...remote.metadata!.annotations, 'resizelet.io/resize': shrink },
      },
    });
    h.request(a, '{"app":{"limits":{"cpu":"400m"}}}');
    const deferred = await h.settled(a, 'Deferred');
    expect(deferred.message).toMatch(
      /^exceeds ResourceQuota "compute" in namespace "team-a" until other resizes or deletions in the namespace complete: limits.cpu would be 1300m of 1200m \(other pods use 900m, this pod would use 400m\)$/,
    );
    expect((await h.settings(a.containerPath)).cpuQuotaUs).toBe(20_000);
    // The other node's agent completes the shrink.
    const now = h.api.getPod(NS, 'remote')!;
    h.api.upsertPod({
      ...now,
      metadata: {
        ...now.metadata,
        annotations: {
          ...now.metadata!.annotations,
          'resizelet.io/resource-status': completed(
            {
              name: 'app',
              requests: { cpu: '100m', memory: '64Mi' },
              limits: { cpu: '200m', memory: '256Mi' },
            },
            shrink,
          ),
        },
      },
    });
    const done = await h.settled(a, 'Completed');
    expect(done.allocatedResources).toEqual([
      { name: 'app', requests: { cpu: '100m', memory: '64Mi' }, limits: { cpu: '400m', memory: '256Mi' } },
    ]);
    expect((await h.settings(a.containerPath)).cpuQuotaUs).toBe(40_000);
  });

  it('applies LimitRange max and maxLimitRequestRatio to resized values', async () => {
    h.request(b, '{"app":{"limits":{"memory":"512Mi"}}}');
    const ratio = await h.settled(b, 'Rejected');
    expect(ratio.message).toBe(
      'container "app": memory limit 512Mi is more than 4 times its request 64Mi (maxLimitRequestRatio of LimitRange "bounds")',
    );
    h.request(b, '{"app":{"requests":{"cpu":"150m"},"limits":{"cpu":"3"}}}');
    const max = await h.settled(b, 'Rejected');
    expect(max.message).toBe('container "app": cpu limit 3 is above the maximum 2 of LimitRange "bounds"');
    expect((await h.settings(b.containerPath)).memoryLimitBytes).toBe(256n * 1024n * 1024n);
  });

  it('rejects every resize in a namespace labelled resizelet.io/disabled=true, writing nothing', async () => {
    const c = await h.addPod('opted-out', 'c');
    h.request(c, '{"app":{"limits":{"cpu":"300m"}}}');
    const s = await h.settled(c, 'Rejected');
    expect(s.message).toBe(
      'resizing is disabled in namespace "opted-out" (the Namespace has the label resizelet.io/disabled=true)',
    );
    expect((await h.settings(c.containerPath)).cpuQuotaUs).toBe(20_000);
  });

  it('leaves pods outside --namespaces alone: no status, no writes', async () => {
    h.request(outside, '{"app":{"limits":{"cpu":"300m"}}}');
    // A request in scope, made after, is answered: the agent has had every chance to see the other.
    h.request(b, '{"app":{"limits":{"cpu":"250m"}}}');
    await h.settled(b, 'Completed');
    await new Promise((r) => setTimeout(r, 500));
    expect(h.status(outside)).toBeUndefined();
    expect((await h.settings(outside.containerPath)).cpuQuotaUs).toBe(20_000);
  });

  it('never adopts a forged Completed status: judged anew, the cgroups keep the spec, node and quota do not count it', async () => {
    await h.agent!.waitForLog(/claims an allocation that neither the checkpoint nor the live cgroups hold/);
    // Its request is judged like any other, and the status is put right.
    const judged = await h.settled(forged, 'Rejected');
    expect(judged.message).toBe('container "app": cpu limit 3 is above the maximum 2 of LimitRange "bounds"');
    expect(judged.allocatedResources).toEqual([
      { name: 'app', requests: { cpu: '100m', memory: '64Mi' }, limits: { cpu: '200m', memory: '256Mi' } },
    ]);
    expect((await h.settings(forged.containerPath)).cpuQuotaUs).toBe(20_000);
    expect((await h.settings(forged.podPath)).cpuQuotaUs).toBe(20_000);
    // Counted at the 3 CPUs it claims, it would leave no room on the 4-CPU node for a 1500m request.
    const big = await h.addPod('free', 'big');
    h.request(big, '{"app":{"requests":{"cpu":"1500m"},"limits":{"cpu":"2"}}}');
    await h.settled(big, 'Completed');
    expect((await h.settings(forged.containerPath)).cpuQuotaUs).toBe(20_000);
  });

  it('writes no cgroup before the API server has stored the quota reservation', async () => {
    const fault = h.api.injectFault({
      method: 'PATCH',
      pathPrefix: `/api/v1/namespaces/${NS}/pods/b`,
      status: 503,
    });
    h.request(b, '{"app":{"limits":{"cpu":"300m"}}}');
    await waitFor('a refused reservation patch', () => (fault.hits > 0 ? true : undefined));
    await new Promise((r) => setTimeout(r, 1_000));
    expect((await h.settings(b.containerPath)).cpuQuotaUs).toBe(25_000);
    fault.clear();
    await h.settled(b, 'Completed', 20_000);
    expect((await h.settings(b.containerPath)).cpuQuotaUs).toBe(30_000);
  }, 30_000);
});
