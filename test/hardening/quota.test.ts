// The pure namespace rules: what a pod counts against a ResourceQuota, which quotas apply to it, the verdicts
// (fits / Deferred / Rejected with the quota named), LimitRange on resized values, and how decide() wires
// them in (opt-out label, lookups only when a quota can be hit, "never" outranking "not now").
import { describe, expect, it } from 'vitest';
import { decide, type DecideInput, type NamespaceView } from '../../agent/resize/decide.ts';
import { checkLimitRanges, type LimitRangeLike } from '../../agent/resize/limitrange.ts';
import type { PodLike, Resources } from '../../agent/resize/pod.ts';
import {
  checkQuotas,
  effectiveUsage,
  podUsage,
  projectedUsage,
  quotaApplies,
  quotasConstrain,
  type NamespacePod,
  type PodUsage,
  type QuotaLike,
  type QuotaPod,
} from '../../agent/resize/quota.ts';
import { parseResizeRequest } from '../../agent/resize/request.ts';

const Mi = 1024n * 1024n;
const Gi = 1024n * Mi;

function pod(name: string, extra: Partial<NonNullable<QuotaPod['spec']>> = {}, qos = 'Burstable'): QuotaPod {
  return {
    metadata: { name, namespace: 'shop', uid: `uid-${name}` },
    spec: {
      nodeName: 'node-a',
      containers: [
        {
          name: 'app',
          resources: { requests: { cpu: '100m', memory: '64Mi' }, limits: { cpu: '200m', memory: '256Mi' } },
        },
      ],
      ...extra,
    },
    status: { phase: 'Running', qosClass: qos },
  };
}

const usage = (cpuReq: number, memReqMi: number, cpuLim: number, memLimMi: number): PodUsage => ({
  requestsCpu: BigInt(cpuReq),
  requestsMemory: BigInt(memReqMi) * Mi,
  limitsCpu: BigInt(cpuLim),
  limitsMemory: BigInt(memLimMi) * Mi,
});
const quota = (
  name: string,
  hard: Record<string, string>,
  spec: Partial<QuotaLike['spec']> = {},
): QuotaLike => ({
  metadata: { name, namespace: 'shop' },
  spec: { hard, ...spec },
});
const other = (name: string, now: PodUsage, projected = now): NamespacePod => ({
  pod: pod(name),
  usage: now,
  projected,
});
const res = (reqCpu: number, limCpu: number, reqMem = 64n * Mi, limMem = 256n * Mi): Resources => ({
  requests: { cpu: reqCpu, memory: reqMem },
  limits: { cpu: limCpu, memory: limMem },
});

describe('what a pod counts against a quota', () => {
  it('sums app containers, takes the largest init container if bigger, adds the RuntimeClass overhead', () => {
    const p = pod('p', {
      initContainers: [{ name: 'init', resources: { requests: { cpu: '500m' }, limits: { cpu: '500m' } } }],
      overhead: { cpu: '10m', memory: '1Mi' },
    });
    expect(podUsage(p)).toEqual({
      requestsCpu: 510n,
      requestsMemory: 65n * Mi,
      limitsCpu: 510n,
      limitsMemory: 257n * Mi,
    });
  });

  it('counts max(spec, allocation) per aggregate: a shrink below the spec still counts the spec', () => {
    const allocation = new Map([['app', res(50, 900, 32n * Mi, 128n * Mi)]]);
    expect(effectiveUsage(pod('p'), allocation)).toEqual(usage(100, 64, 900, 256));
  });

  it("projects a pod's open request on top of what it holds (for telling Deferred from Rejected)", () => {
    const req = parseResizeRequest('{"app":{"limits":{"cpu":"150m"}}}');
    expect(req.ok).toBe(true);
    const held = new Map([['app', res(100, 800)]]);
    expect(projectedUsage(pod('p'), held, req.ok ? req.value : undefined).limitsCpu).toBe(200n);
  });

  it('reads edge quantities exactly (bigint sums never round)', () => {
    const big = pod('big');
    big.spec!.containers[0]!.resources = {
      requests: { cpu: '9007199254740991m', memory: '8Ei' },
      limits: { cpu: '9007199254740991m', memory: '8Ei' },
    };
    const u = podUsage(big);
    expect(u.requestsCpu + u.requestsCpu).toBe(18014398509481982n);
    // "8Ei" reads as 2^63-1, as upstream caps it.
    expect(u.limitsMemory).toBe(2n ** 63n - 1n);
  });
});

describe('which quotas apply to a pod', () => {
  it('follows Terminating / NotTerminating, BestEffort / NotBestEffort', () => {
    const terminating = pod('t', { activeDeadlineSeconds: 30 });
    expect(quotaApplies(quota('q', {}, { scopes: ['Terminating'] }), terminating)).toBe(true);
    expect(quotaApplies(quota('q', {}, { scopes: ['NotTerminating'] }), terminating)).toBe(false);
    expect(quotaApplies(quota('q', {}, { scopes: ['BestEffort'] }), pod('b'))).toBe(false);
    expect(quotaApplies(quota('q', {}, { scopes: ['NotBestEffort'] }), pod('b'))).toBe(true);
  });

  it('follows PriorityClass scope selectors (In, NotIn, Exists, DoesNotExist)', () => {
    const high = pod('h', { priorityClassName: 'high' });
    const sel = (operator: string, values?: string[]) =>
      quota(
        'q',
        {},
        { scopeSelector: { matchExpressions: [{ scopeName: 'PriorityClass', operator, values }] } },
      );
    expect(quotaApplies(sel('In', ['high']), high)).toBe(true);
    expect(quotaApplies(sel('In', ['low']), high)).toBe(false);
    expect(quotaApplies(sel('NotIn', ['high']), high)).toBe(false);
    expect(quotaApplies(sel('Exists'), high)).toBe(true);
    expect(quotaApplies(sel('Exists'), pod('none'))).toBe(false);
    expect(quotaApplies(sel('DoesNotExist'), pod('none'))).toBe(true);
  });

  it('fails closed on a scope it does not know (stricter than the API server, never looser)', () => {
    expect(quotaApplies(quota('q', {}, { scopes: ['SomethingNew'] }), pod('p'))).toBe(true);
  });

  it('only cpu and memory quotas can constrain a resize', () => {
    const before = usage(100, 64, 200, 256);
    const more = usage(200, 128, 400, 512);
    const quotas = [quota('pods', { pods: '10', 'requests.storage': '1Ti' })];
    expect(quotasConstrain(quotas, pod('p'), before, more)).toBe(false);
    expect(quotasConstrain([quota('cpu', { cpu: '4' })], pod('p'), before, more)).toBe(true);
    // A quota on requests.cpu cannot be hit by a memory-only growth.
    expect(quotasConstrain([quota('cpu', { cpu: '4' })], pod('p'), before, usage(100, 128, 200, 512))).toBe(
      false,
    );
  });
});

describe('quota verdicts', () => {
  const me = pod('me');
  const before = usage(100, 64, 200, 256);

  it('fits when every applying quota keeps room', () => {
    const v = checkQuotas({
      pod: me,
      quotas: [quota('compute', { 'limits.cpu': '1' })],
      others: [other('x', usage(100, 64, 500, 256))],
      before,
      after: usage(100, 64, 500, 256),
    });
    expect(v).toEqual({ verdict: 'fits' });
  });

  it('rejects, naming the quota, when other pods leave too little room and nothing is on its way out', () => {
    const v = checkQuotas({
      pod: me,
      quotas: [quota('compute', { 'limits.cpu': '1' })],
      others: [other('x', usage(100, 64, 700, 256))],
      before,
      after: usage(100, 64, 400, 256),
    });
    expect(v).toEqual({
      verdict: 'never',
      quota: 'compute',
      message:
        'exceeds ResourceQuota "compute" in namespace "shop": limits.cpu would be 1100m of 1 (other pods use 700m, this pod would use 400m)',
    });
  });

  it('rejects when the pod alone would exceed the quota', () => {
    const v = checkQuotas({
      pod: me,
      quotas: [quota('mem', { 'requests.memory': '1Gi' })],
      others: [],
      before,
      after: usage(100, 2048, 200, 2048),
    });
    expect(v.verdict).toBe('never');
    expect(v.verdict !== 'fits' && v.message).toBe(
      'requests.memory of this pod alone would be 2048Mi, above the 1024Mi allowed by ResourceQuota "mem" in namespace "shop"',
    );
  });

  it('defers when a pending shrink or a deletion in the namespace would make room', () => {
    const shrinking = other('x', usage(100, 64, 700, 256), usage(100, 64, 200, 256));
    const deleting: NamespacePod = { ...other('y', usage(100, 64, 700, 256)), projected: usage(0, 0, 0, 0) };
    for (const o of [shrinking, deleting]) {
      const v = checkQuotas({
        pod: me,
        quotas: [quota('compute', { 'limits.cpu': '1' })],
        others: [o],
        before,
        after: usage(100, 64, 400, 256),
      });
      expect(v.verdict).toBe('not-now');
      expect(v.verdict !== 'fits' && v.quota).toBe('compute');
    }
  });

  it('checks only what the resize raises: a namespace already over a quota can still shrink or grow elsewhere', () => {
    const over = [other('x', usage(5000, 64, 5000, 256))];
    const quotas = [quota('compute', { 'requests.cpu': '1', 'limits.cpu': '1' })];
    expect(checkQuotas({ pod: me, quotas, others: over, before, after: usage(50, 64, 150, 256) })).toEqual({
      verdict: 'fits',
    });
    expect(checkQuotas({ pod: me, quotas, others: over, before, after: usage(100, 128, 200, 512) })).toEqual({
      verdict: 'fits',
    });
  });

  it('reads the old spellings (cpu, memory) as request totals, skips malformed values and quotas that do not apply', () => {
    const v = checkQuotas({
      pod: me,
      quotas: [
        quota('old', { cpu: '300m', memory: 'lots' }),
        quota('terminating-only', { 'limits.cpu': '1m' }, { scopes: ['Terminating'] }),
      ],
      others: [other('x', usage(100, 64, 200, 256))],
      before,
      after: usage(250, 64, 250, 256),
    });
    expect(v.verdict !== 'fits' && v.message).toBe(
      'exceeds ResourceQuota "old" in namespace "shop": cpu would be 350m of 300m (other pods use 100m, this pod would use 250m)',
    );
  });
});

describe('LimitRange on resized values', () => {
  const lr = (limits: NonNullable<LimitRangeLike['spec']>['limits']): LimitRangeLike => ({
    metadata: { name: 'bounds' },
    spec: { limits },
  });
  const current = new Map([
    ['app', res(100, 200)],
    ['side', res(100, 200)],
  ]);
  const desired = (app: Resources, side = res(100, 200)) => [
    { name: 'app', resources: app },
    { name: 'side', resources: side },
  ];

  it('applies Container min, max and maxLimitRequestRatio to the containers and resources that change', () => {
    const ranges = [
      lr([
        { type: 'Container', min: { cpu: '50m' }, max: { cpu: '1' }, maxLimitRequestRatio: { cpu: '1.5' } },
      ]),
    ];
    expect(checkLimitRanges({ limitRanges: ranges, desired: desired(res(20, 25)), current })).toEqual({
      ok: false,
      limitRange: 'bounds',
      message: 'container "app": cpu request 20m is below the minimum 50m of LimitRange "bounds"',
    });
    expect(
      checkLimitRanges({ limitRanges: ranges, desired: desired(res(800, 1100)), current }),
    ).toMatchObject({
      message: 'container "app": cpu limit 1100m is above the maximum 1 of LimitRange "bounds"',
    });
    expect(checkLimitRanges({ limitRanges: ranges, desired: desired(res(100, 151)), current })).toMatchObject(
      {
        message:
          'container "app": cpu limit 151m is more than 1.5 times its request 100m (maxLimitRequestRatio of LimitRange "bounds")',
      },
    );
    expect(checkLimitRanges({ limitRanges: ranges, desired: desired(res(100, 150)), current }).ok).toBe(true);
  });

  it('leaves alone what the resize does not touch, even where it predates the LimitRange', () => {
    const ranges = [lr([{ type: 'Container', max: { memory: '128Mi' } }])];
    // Both containers have a 256Mi limit, above the max; only CPU changes.
    expect(checkLimitRanges({ limitRanges: ranges, desired: desired(res(150, 200)), current }).ok).toBe(true);
  });

  it('applies Pod limits to the pod totals', () => {
    const ranges = [lr([{ type: 'Pod', max: { cpu: '500m' } }])];
    expect(checkLimitRanges({ limitRanges: ranges, desired: desired(res(100, 350)), current })).toMatchObject(
      {
        message: 'the pod: cpu limit 550m is above the maximum 500m of LimitRange "bounds"',
      },
    );
  });

  it('ignores values it cannot read and other LimitRange types', () => {
    const ranges = [
      lr([
        { type: 'Container', max: { cpu: 'a lot' }, maxLimitRequestRatio: { cpu: '-1' } },
        { type: 'PersistentVolumeClaim', max: { storage: '1Gi' } },
      ]),
    ];
    expect(checkLimitRanges({ limitRanges: ranges, desired: desired(res(100, 9000)), current }).ok).toBe(
      true,
    );
  });
});

describe('decide with namespace rules', () => {
  const now = new Date('2026-11-22T10:00:00Z');
  const ns = (over: Partial<NamespaceView> = {}): NamespaceView => ({
    name: 'shop',
    known: true,
    disabled: false,
    quotas: [quota('compute', { 'limits.cpu': '1' })],
    limitRanges: [],
    ...over,
  });
  const input = (request: string, namespace: NamespaceView, allocatable = 4000): DecideInput => ({
    pod: {
      ...pod('me'),
      metadata: { ...pod('me').metadata, annotations: { 'resizelet.io/resize': request } },
    } as PodLike,
    nodeName: 'node-a',
    now,
    allocatable: { cpuMilli: allocatable, memoryBytes: 8n * Gi },
    others: [],
    allocation: undefined,
    namespace,
  });

  it('rejects every request in a namespace that opted out', () => {
    const d = decide(input('{"app":{"limits":{"cpu":"300m"}}}', ns({ disabled: true })));
    expect(d.kind === 'answer' && d.status.resizeStatus).toBe('Rejected');
    expect(d.kind === 'answer' && d.message).toBe(
      'resizing is disabled in namespace "shop" (the Namespace has the label resizelet.io/disabled=true)',
    );
  });

  it('waits (Deferred) while the namespace rules are not known yet', () => {
    const d = decide(input('{"app":{"limits":{"cpu":"300m"}}}', ns({ known: false })));
    expect(d.kind === 'answer' && d.status.resizeStatus).toBe('Deferred');
  });

  it('asks for the namespace pods only when a quota could be hit', () => {
    expect(decide(input('{"app":{"limits":{"cpu":"300m"}}}', ns())).kind).toBe('lookup');
    // A shrink cannot take the namespace past a quota: no list.
    expect(decide(input('{"app":{"limits":{"cpu":"150m"}}}', ns())).kind).toBe('actuate');
    // No quota tracks what changes: no list.
    expect(decide(input('{"app":{"limits":{"memory":"300Mi"}}}', ns())).kind).toBe('actuate');
  });

  it('with the pods: reserves a quota-checked resize, defers when they could not be listed', () => {
    const d = decide(input('{"app":{"limits":{"cpu":"300m"}}}', ns({ pods: [] })));
    expect(d.kind === 'actuate' && d.reserve).toBe(true);
    const e = decide(input('{"app":{"limits":{"cpu":"300m"}}}', ns({ pods: 'listing timed out' })));
    expect(e.kind === 'answer' && e.message).toBe(
      'cannot check the ResourceQuotas of namespace "shop": listing timed out',
    );
  });

  it('a quota "never" outranks the node\'s "not now"', () => {
    const crowded = ns({ pods: [other('x', usage(100, 64, 900, 256))] });
    const d = decide({
      ...input('{"app":{"requests":{"cpu":"300m"},"limits":{"cpu":"400m"}}}', crowded, 350),
    });
    expect(d.kind === 'answer' && d.status.resizeStatus).toBe('Rejected');
    expect(d.kind === 'answer' && d.message).toMatch(/^exceeds ResourceQuota "compute"/);
  });

  it('applies LimitRanges before quotas', () => {
    const d = decide(
      input(
        '{"app":{"limits":{"cpu":"3"}}}',
        ns({
          limitRanges: [
            { metadata: { name: 'lr' }, spec: { limits: [{ type: 'Container', max: { cpu: '2' } }] } },
          ],
        }),
      ),
    );
    expect(d.kind === 'answer' && d.message).toBe(
      'container "app": cpu limit 3 is above the maximum 2 of LimitRange "lr"',
    );
  });
});
