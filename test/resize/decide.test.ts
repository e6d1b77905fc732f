import { describe, expect, it } from 'vitest';
import { decide, type DecideInput } from '../../agent/resize/decide.ts';
import type { PodLike } from '../../agent/resize/pod.ts';
import { requestHash } from '../../agent/resize/request.ts';
import { decodeStatus, encodeStatus } from '../../agent/resize/status.ts';
import { Annotations } from '../../agent/resize/vocabulary.ts';

const Gi = 1024n ** 3n;
const now = new Date('2026-11-22T10:00:00Z');

function pod(annotations: Record<string, string>): PodLike {
  return {
    metadata: { name: 'web', namespace: 'shop', uid: 'u', annotations },
    spec: {
      nodeName: 'node-a',
      restartPolicy: 'Always',
      containers: [
        {
          name: 'app',
          resources: { requests: { cpu: '250m', memory: '64Mi' }, limits: { cpu: '500m', memory: '128Mi' } },
        },
      ],
    },
    status: { phase: 'Running', qosClass: 'Burstable' },
  };
}

const base = (p: PodLike): DecideInput => ({
  pod: p,
  nodeName: 'node-a',
  now,
  allocatable: { cpuMilli: 2000, memoryBytes: 4n * Gi },
  others: [],
  allocation: undefined,
});

const req = '{"app":{"limits":{"cpu":"1"}}}';

describe('decide', () => {
  it('is idle without a request', () => {
    expect(decide(base(pod({}))).kind).toBe('idle');
  });

  it('actuates a valid request that fits', () => {
    const d = decide(base(pod({ [Annotations.request]: req })));
    expect(d.kind).toBe('actuate');
    if (d.kind !== 'actuate') return;
    expect(d.hash).toBe(requestHash(req));
    expect(d.desired[0]!.resources.limits.cpu).toBe(1000);
    expect(d.policy).toEqual({ cpu: 'NotRequired', memory: 'NotRequired' });
  });

  it('rejects an invalid request with the current allocation in the status', () => {
    const d = decide(base(pod({ [Annotations.request]: '{"app":{"limits":{"gpu":"1"}}}' })));
    expect(d.kind).toBe('answer');
    if (d.kind !== 'answer') return;
    expect(d.event).toBe('ResizeRejected');
    expect(d.status).toMatchObject({
      resizeStatus: 'Rejected',
      allocatedResources: [
        { name: 'app', requests: { cpu: '250m', memory: '64Mi' }, limits: { cpu: '500m', memory: '128Mi' } },
      ],
      lastTransitionTime: now.toISOString(),
    });
  });

  it('defers when the node has no room now, and when allocatable is unknown', () => {
    const big = '{"app":{"requests":{"cpu":"500m"}}}';
    const full = decide({
      ...base(pod({ [Annotations.request]: big })),
      others: [{ cpuMilli: 1800, memoryBytes: 0n }],
    });
    expect(full.kind === 'answer' && full.status.resizeStatus).toBe('Deferred');
    const unknown = decide({ ...base(pod({ [Annotations.request]: big })), allocatable: undefined });
    expect(unknown.kind === 'answer' && unknown.status.message).toMatch(/allocatable is not known/);
  });

  it('rejects what can never fit the node', () => {
    const d = decide(
      base(pod({ [Annotations.request]: '{"app":{"requests":{"cpu":"3"},"limits":{"cpu":"3"}}}' })),
    );
    expect(d.kind === 'answer' && d.status.resizeStatus).toBe('Rejected');
  });

  it('is idle once the same request is Completed or Rejected, and retries Deferred and Accepted', () => {
    for (const [resizeStatus, kind] of [
      ['Completed', 'idle'],
      ['Rejected', 'idle'],
      ['Deferred', 'actuate'],
      ['Accepted', 'actuate'],
      ['Proposed', 'actuate'],
    ] as const) {
      const status = encodeStatus({
        resizeStatus,
        allocatedResources: [],
        observedRequest: requestHash(req),
        lastTransitionTime: '',
      });
      expect(
        decide(base(pod({ [Annotations.request]: req, [Annotations.status]: status }))).kind,
        resizeStatus,
      ).toBe(kind);
    }
  });

  it('judges a newer request even when an older one is settled', () => {
    const status = encodeStatus({
      resizeStatus: 'Completed',
      allocatedResources: [],
      observedRequest: 'old',
      lastTransitionTime: '',
    });
    expect(decide(base(pod({ [Annotations.request]: req, [Annotations.status]: status }))).kind).toBe(
      'actuate',
    );
  });

  it('refuses RestartContainer on restartPolicy Never', () => {
    const p = pod({ [Annotations.request]: req, [Annotations.policy]: '{"cpu":"RestartContainer"}' });
    p.spec!.restartPolicy = 'Never';
    const d = decide(base(p));
    expect(d.kind === 'answer' && d.status.message).toMatch(/restartPolicy Never/);
  });

  it('keeps lastTransitionTime while the status does not change', () => {
    const big = '{"app":{"requests":{"cpu":"500m"}}}';
    const prev = encodeStatus({
      resizeStatus: 'Deferred',
      allocatedResources: [],
      observedRequest: requestHash(big),
      lastTransitionTime: '2026-01-01T00:00:00.000Z',
    });
    const d = decide({
      ...base(pod({ [Annotations.request]: big, [Annotations.status]: prev })),
      others: [{ cpuMilli: 1900, memoryBytes: 0n }],
    });
    expect(d.kind === 'answer' && d.status.lastTransitionTime).toBe('2026-01-01T00:00:00.000Z');
  });

  it('decodes garbage status annotations as absent', () => {
    for (const g of ['', '{', '[]', '{"resizeStatus":"Nope"}', 'null', '"x"'])
      expect(decodeStatus(g)).toBeUndefined();
  });
});
