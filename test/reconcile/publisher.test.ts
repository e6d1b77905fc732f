import { describe, expect, it } from 'vitest';
import type { KubePort } from '../../agent/kube/api.ts';
import { createStatusPublisher } from '../../agent/reconcile/publisher.ts';
import type { Clock } from '../../agent/util/backoff.ts';

const pod = { metadata: { namespace: 'shop', name: 'web', uid: 'u' }, spec: { containers: [] } };
const quietLog = { warn: () => undefined, debug: () => undefined };
const instantClock: Clock = { now: () => 0, sleep: () => new Promise((r) => setTimeout(r, 0)) };

function fakeKube(failures: number[], patches: string[]): KubePort {
  let call = 0;
  return {
    async patchPodAnnotations(_ns, _name, annotations) {
      const status = failures[call++];
      if (status !== undefined && status !== 200)
        throw Object.assign(new Error(`HTTP ${status}`), { code: status });
      patches.push(String(annotations['resizelet.io/resource-status']));
    },
    async createPodEvent() {},
    async readNode() {
      return { name: 'n', allocatable: {}, capacity: {} };
    },
  };
}

describe('status publisher', () => {
  it('retries until the API server takes the status, and acknowledges once', async () => {
    const patches: string[] = [];
    let acks = 0;
    let failuresSeen = 0;
    const p = createStatusPublisher({
      kube: fakeKube([500, 503, 200], patches),
      clock: instantClock,
      log: quietLog,
      onFailure: () => failuresSeen++,
    });
    p.publish(pod, 'S1', () => acks++);
    await p.idle();
    expect(patches).toEqual(['S1']);
    expect(acks).toBe(1);
    expect(failuresSeen).toBe(2);
  });

  it('latest wins: a newer status replaces an unsent one', async () => {
    const patches: string[] = [];
    const p = createStatusPublisher({ kube: fakeKube([500], patches), clock: instantClock, log: quietLog });
    p.publish(pod, 'S1');
    p.publish(pod, 'S2');
    p.publish(pod, 'S3');
    await p.idle();
    expect(patches.at(-1)).toBe('S3');
    expect(patches).not.toContain('S2');
  });

  it('drops the status of a pod that is gone (404)', async () => {
    const patches: string[] = [];
    const p = createStatusPublisher({ kube: fakeKube([404], patches), clock: instantClock, log: quietLog });
    p.publish(pod, 'S1');
    await p.idle();
    expect(patches).toEqual([]);
    expect(p.backlog).toBe(0);
  });
});

describe('status publisher: Events', () => {
  it('sends Events a few at a time, drops the oldest beyond the backlog (counted), and waits for them in idle()', async () => {
    const sent: string[] = [];
    let inFlight = 0;
    let maxInFlight = 0;
    const release: Array<() => void> = [];
    const kube: KubePort = {
      ...fakeKube([], []),
      async createPodEvent(_pod, e) {
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        await new Promise<void>((r) => release.push(r));
        inFlight--;
        sent.push(e.message);
      },
    };
    let dropped = 0;
    const p = createStatusPublisher({
      kube,
      clock: instantClock,
      log: quietLog,
      eventConcurrency: 2,
      maxEventBacklog: 3,
      onEventDropped: () => dropped++,
    });
    for (let i = 0; i < 8; i++) p.event(pod, { reason: 'R', type: 'Normal', message: `e${i}` });
    // Two in flight (e0, e1); e2..e7 queued, of which only the newest three are kept.
    expect(dropped).toBe(3);
    let idle = false;
    void p.idle().then(() => (idle = true));
    while (sent.length < 5) {
      release.shift()?.();
      await new Promise((r) => setTimeout(r, 1));
    }
    await new Promise((r) => setTimeout(r, 5));
    expect(idle).toBe(true);
    expect(maxInFlight).toBe(2);
    expect(sent).toEqual(['e0', 'e1', 'e5', 'e6', 'e7']);
  });

  it('gives an Event up after three failed tries (counted), and forgets one for a pod that is gone', async () => {
    let calls = 0;
    const kube: KubePort = {
      ...fakeKube([], []),
      async createPodEvent(_pod, e) {
        calls++;
        throw Object.assign(new Error('nope'), { code: e.reason === 'Gone' ? 404 : 500 });
      },
    };
    let dropped = 0;
    const p = createStatusPublisher({
      kube,
      clock: instantClock,
      log: quietLog,
      onEventDropped: () => dropped++,
    });
    p.event(pod, { reason: 'R', type: 'Normal', message: 'm' });
    p.event(pod, { reason: 'Gone', type: 'Normal', message: 'm' });
    await p.idle();
    expect(calls).toBe(4);
    expect(dropped).toBe(1);
  });
});
