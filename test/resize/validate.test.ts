import { describe, expect, it } from 'vitest';
import { specResources, type PodLike } from '../../agent/resize/pod.ts';
import { parseResizeRequest } from '../../agent/resize/request.ts';
import { validateResize, ValidationRules, type ValidationRule } from '../../agent/resize/validate.ts';

function pod(overrides: Partial<PodLike['spec']> = {}, qosClass?: string): PodLike {
  return {
    metadata: { name: 'web', namespace: 'shop', uid: '11111111-2222-3333-4444-555555555555' },
    spec: {
      nodeName: 'node-a',
      containers: [
        {
          name: 'app',
          resources: { requests: { cpu: '30m', memory: '64Mi' }, limits: { cpu: '50m', memory: '128Mi' } },
        },
        { name: 'side', resources: { requests: { memory: '16Mi' } } },
      ],
      initContainers: [{ name: 'init', resources: {} }],
      ephemeralContainers: [{ name: 'debug' }],
      ...overrides,
    },
    status: { phase: 'Running', qosClass: qosClass ?? 'Burstable' },
  };
}

function judge(p: PodLike, requestJson: unknown, node = 'node-a') {
  const parsed = parseResizeRequest(JSON.stringify(requestJson));
  if (!parsed.ok) throw new Error(parsed.message);
  const current = new Map(p.spec!.containers.map((c) => [c.name, specResources(c)]));
  return validateResize({ pod: p, nodeName: node, request: parsed.value, current });
}

const guaranteed: PodLike = {
  ...pod(),
  spec: {
    nodeName: 'node-a',
    containers: [
      {
        name: 'g',
        resources: { requests: { cpu: '1', memory: '1Gi' }, limits: { cpu: '1', memory: '1Gi' } },
      },
    ],
  },
  status: { phase: 'Running', qosClass: 'Guaranteed' },
};

const rejected: Array<[string, PodLike, unknown, ValidationRule, RegExp, string?]> = [
  [
    'pod on another node',
    pod(),
    { app: { limits: { cpu: '40m' } } },
    ValidationRules.notOnNode,
    /not running on node "node-b"/,
    'node-b',
  ],
  [
    'pod not running',
    { ...pod(), status: { phase: 'Pending' } },
    { app: { limits: { cpu: '40m' } } },
    ValidationRules.notRunning,
    /Pending/,
  ],
  [
    'unknown container',
    pod(),
    { nope: { limits: { cpu: '1' } } },
    ValidationRules.unknownContainer,
    /no container named "nope" \(it has "app", "side"\)/,
  ],
  [
    'init container',
    pod(),
    { init: { limits: { cpu: '1' } } },
    ValidationRules.initContainer,
    /"init" is an init container/,
  ],
  [
    'ephemeral container',
    pod(),
    { debug: { limits: { cpu: '1' } } },
    ValidationRules.ephemeralContainer,
    /ephemeral/,
  ],
  [
    'zero quantity',
    pod(),
    { app: { requests: { cpu: '0' } } },
    ValidationRules.notPositive,
    /requests.cpu must be positive/,
  ],
  [
    'limit added where none was set',
    pod(),
    { side: { limits: { memory: '64Mi' } } },
    ValidationRules.limitAdded,
    /"side" has no memory limit; a limit cannot be added/,
  ],
  [
    'request above limit',
    pod(),
    { app: { requests: { memory: '256Mi' } } },
    ValidationRules.requestAboveLimit,
    /memory request 256Mi would exceed its limit 128Mi/,
  ],
  [
    'cpu below 100m without a request',
    pod(),
    { side: { requests: { cpu: '50m' } } },
    ValidationRules.cpuFloor,
    /no CPU request in its spec; its CPU request cannot go below 100m \(asked 50m\)/,
  ],
  // TKE's example: from requests 30 / limits 50 the most is 49 / 50; 50 / 50 would make app Guaranteed-like,
  // and with side also at request = limit the pod would turn Guaranteed.
  [
    'QoS change Burstable -> Guaranteed',
    { ...pod(), spec: { nodeName: 'node-a', containers: [pod().spec!.containers[0]!] } },
    { app: { requests: { cpu: '50m', memory: '128Mi' } } },
    ValidationRules.qosChange,
    /from Burstable to Guaranteed; keep at least one request below its limit/,
  ],
  [
    'QoS change Guaranteed -> Burstable',
    guaranteed,
    { g: { requests: { cpu: '500m' } } },
    ValidationRules.qosChange,
    /from Guaranteed to Burstable; keep every request equal to its limit/,
  ],
];

describe('validateResize rejects, one row per rule', () => {
  it.each(rejected)('%s', (_name, p, req, rule, message, node) => {
    const v = judge(p, req, node);
    expect(v.ok).toBe(false);
    if (v.ok) return;
    expect(v.rule).toBe(rule);
    expect(v.message).toMatch(message);
  });
});

describe('validateResize accepts', () => {
  it('TKE example: requests 30 -> 49 with limit 50 stays Burstable', () => {
    const single = { ...pod(), spec: { nodeName: 'node-a', containers: [pod().spec!.containers[0]!] } };
    const v = judge(single, { app: { requests: { cpu: '49m' } } });
    expect(v.ok).toBe(true);
  });

  it('merges only what changes and keeps container order', () => {
    const v = judge(pod(), { app: { limits: { cpu: '1', memory: '512Mi' } } });
    expect(v.ok).toBe(true);
    if (!v.ok) return;
    expect(v.changed).toEqual(['app']);
    expect(v.desired.map((d) => d.name)).toEqual(['app', 'side']);
    expect(v.desired[0]!.resources).toEqual({
      requests: { cpu: 30, memory: 67108864n },
      limits: { cpu: 1000, memory: 536870912n },
    });
    expect(v.desired[1]!.resources).toEqual({ requests: { memory: 16777216n }, limits: {} });
  });

  it('a container without a CPU request may be given one of at least 100m', () => {
    expect(judge(pod(), { side: { requests: { cpu: '100m' } } }).ok).toBe(true);
  });

  it('Guaranteed stays Guaranteed when request and limit move together', () => {
    expect(judge(guaranteed, { g: { requests: { cpu: '2' }, limits: { cpu: '2' } } }).ok).toBe(true);
  });
});
