// Property tests on everything a pod owner can write: the request annotation (request parser), the policy
// annotation (policy parser) and the request against the pod (validator). Each target runs 10,000 generated
// cases through the real reconciler, with a recording actuator standing in for the cgroups: it never throws,
// never writes a cgroup for a request that is not valid, and always answers with a status whose message a
// person can read (non-empty, at most 1 KiB, printable, well-formed). Inputs include huge annotations, deeply
// nested JSON, prototype-pollution keys, unicode container names and quantities at the edge of the integer
// range.
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { createAgentMetrics } from '../../agent/metrics.ts';
import type { Actuator } from '../../agent/reconcile/actuator.ts';
import type { CheckpointEntry } from '../../agent/reconcile/checkpoint.ts';
import { memoryCheckpoint } from '../support/memory-checkpoint.ts';
import type { StatusPublisher } from '../../agent/reconcile/publisher.ts';
import { createReconciler } from '../../agent/reconcile/reconciler.ts';
import { humanMessage, MAX_MESSAGE_CHARS } from '../../agent/resize/decide.ts';
import {
  sameResources,
  specResources,
  type ContainerLike,
  type PodLike,
  type Resources,
} from '../../agent/resize/pod.ts';
import { parseResizePolicy, parseResizeRequest, type ResizeRequest } from '../../agent/resize/request.ts';
import { decodeStatus } from '../../agent/resize/status.ts';
import { validateResize, ValidationRules } from '../../agent/resize/validate.ts';
import { systemClock } from '../../agent/util/backoff.ts';

const RUNS = { numRuns: 10_000 };
const Gi = 1024n ** 3n;

// ---- generators -------------------------------------------------------------------------------------

/** Strings a Kubernetes quantity parser must survive: the int64 and 2^53 edges, exponents, junk. */
const edgeQuantityText = fc.constantFrom(
  '0',
  '1',
  '-1',
  '1m',
  '0.0001',
  '1n',
  '100m',
  '1.5Gi',
  '9223372036854775807',
  '9223372036854775808',
  '-9223372036854775808',
  '9223372036854775807m',
  '9007199254740991m',
  '9007199254740992m',
  '9007199254740993',
  '1e18',
  '1e19',
  '1e308',
  '1e309',
  '1e-9',
  '8Ei',
  '16Ei',
  '1e100',
  '1e2147483647',
  '1e-2147483648',
  '0.1Ki',
  '.5',
  '5.',
  '+1',
  '-',
  '1_000',
  '\uff11',
  ' 1',
  '1 ',
  'NaN',
  'Infinity',
  '0x10',
  '',
);
const edgeNumber = fc.constantFrom(
  0,
  -0,
  1,
  -1,
  0.5,
  2 ** 53 - 1,
  2 ** 53,
  2 ** 63,
  2 ** 64,
  1.7976931348623157e308,
  Number.MIN_VALUE,
  1e21,
  -1e21,
);
const quantity = fc.oneof(
  edgeQuantityText,
  edgeNumber,
  fc.integer(),
  fc.double({ noNaN: false }),
  fc.string({ maxLength: 12 }),
);

/** Names a pod owner may choose: prototype keys, path tricks, unicode, NUL, lone surrogates. */
const hostileName = fc.oneof(
  fc.constantFrom(
    'app',
    'sidecar',
    '__proto__',
    'constructor',
    'prototype',
    'toString',
    'hasOwnProperty',
    'valueOf',
    '',
    ' ',
    'app\u0000x',
    '../../etc',
    '/',
    '\uff41\uff50\uff50',
    '\u{1F680}',
    '\ud800',
    'a'.repeat(300),
  ),
  fc.string({ unit: 'binary', maxLength: 16 }),
  fc.string({ unit: 'grapheme', maxLength: 16 }),
);

const jsonText = fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v) ?? 'null');
/** An object's JSON text from [key, value-text] pairs: keys such as "__proto__" stay own keys on the wire. */
const objectText = (entry: fc.Arbitrary<[string, string]>, maxLength: number) =>
  fc
    .array(entry, { maxLength })
    .map((es) => `{${es.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(',')}}`);
const sideText = objectText(
  fc.tuple(
    fc.oneof(fc.constantFrom('cpu', 'memory', 'nvidia.com/gpu', '__proto__'), hostileName),
    fc.oneof({ weight: 4, arbitrary: quantity.map((q) => JSON.stringify(q)) }, jsonText),
  ),
  3,
);
const changeText = objectText(
  fc.tuple(
    fc.oneof({ weight: 4, arbitrary: fc.constantFrom('requests', 'limits') }, hostileName),
    fc.oneof({ weight: 4, arbitrary: sideText }, jsonText),
  ),
  3,
);
const requestTextFor = (names: string[]) =>
  objectText(
    fc.tuple(
      fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...names) }, hostileName),
      fc.oneof({ weight: 6, arbitrary: changeText }, jsonText),
    ),
    4,
  );
const deepJson = fc
  .tuple(fc.integer({ min: 1, max: 6_000 }), fc.constantFrom('[', '{"a":', '{"app":'))
  .map(([n, open]) => `${open.repeat(n)}1${(open === '[' ? ']' : '}').repeat(n)}`);
const huge = fc
  .tuple(fc.constantFrom('9', 'a', '{', '"', '\u{1F680}', ' '), fc.integer({ min: 10_000, max: 100_000 }))
  .map(([c, n]) => `{"app":{"limits":{"cpu":"${c.repeat(n)}"}}}`);
const pollution = fc.constantFrom(
  '{"__proto__":{"polluted":true}}',
  '{"__proto__":{"requests":{"cpu":"1"}}}',
  '{"app":{"__proto__":{"cpu":"1"}}}',
  '{"app":{"requests":{"__proto__":"1"}}}',
  '{"app":{"requests":{"cpu":"1","__proto__":{"memory":"1Gi"}}}}',
  '{"constructor":{"prototype":{"polluted":true}}}',
  '{"app":{"constructor":{"prototype":{"cpu":"1"}}}}',
);
const hostileTextFor = (names: string[]) =>
  fc.oneof(
    { weight: 8, arbitrary: requestTextFor(names) },
    { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 64 }) },
    { weight: 1, arbitrary: deepJson },
    { weight: 1, arbitrary: huge },
    { weight: 1, arbitrary: pollution },
    { weight: 1, arbitrary: fc.json({ maxDepth: 3 }) },
  );

/** Quantities a real pod spec may hold (the API server validated them; still, some extreme). */
const specCpu = fc.constantFrom('10m', '100m', '250m', '1', '2', '64', '9007199254740991m');
const specMemory = fc.constantFrom('1Mi', '64Mi', '256Mi', '1Gi', '8Ei', '9223372036854775807');
const resourcesArb = fc.record(
  {
    requests: fc.record({ cpu: specCpu, memory: specMemory }, { requiredKeys: [] }),
    limits: fc.record({ cpu: specCpu, memory: specMemory }, { requiredKeys: [] }),
  },
  { requiredKeys: [] },
);
const namesArb = fc.uniqueArray(hostileName, { minLength: 1, maxLength: 3 });

// ---- the reconciler with recording fakes ------------------------------------------------------------

const noop = (): void => undefined;
const pods = new Map<string, PodLike>();
const entries = new Map<string, CheckpointEntry>();
const applied: string[] = [];
const restarted: string[] = [];
const published: Array<{ key: string; text: string }> = [];
const checkpoint = memoryCheckpoint(entries);
/**
 * Stands in for the cgroups with their one rule that matters here: only a value that differs is written.
 * Each pod's cgroups start at its spec, as the kubelet creates them; `applied` lists the pods whose values
 * the agent changed.
 */
const cgroups = new Map<string, Map<string, Resources>>();
const actuator: Actuator = {
  async apply(pod, desired) {
    const uid = pod.metadata?.uid ?? '';
    let held = cgroups.get(uid);
    if (!held) {
      held = new Map((pod.spec?.containers ?? []).map((c) => [c.name, specResources(c)]));
      cgroups.set(uid, held);
    }
    let written = 0;
    for (const d of desired) {
      const now = held.get(d.name);
      if (!now || !sameResources(now, d.resources)) written++;
      held.set(d.name, d.resources);
    }
    if (written > 0) applied.push(pod.metadata?.name ?? '');
    return { ok: true, results: [], written, containerIds: {} };
  },
  async restartContainers(pod) {
    restarted.push(pod.metadata?.name ?? '');
    return 0;
  },
  updateOomScoreAdj: async () => ({ updated: 0, refused: [] }),
};
const publisher: StatusPublisher = {
  publish(pod, text, onAck) {
    published.push({ key: `${pod.metadata?.namespace}/${pod.metadata?.name}`, text });
    onAck?.();
  },
  event: noop,
  cancel: noop,
  backlog: 0,
  idle: async () => undefined,
  stop: noop,
};
const reconciler = createReconciler({
  nodeName: 'node-a',
  cache: { get: (ns, name) => pods.get(`${ns}/${name}`), list: () => [...pods.values()] },
  actuator,
  checkpoint,
  publisher,
  metrics: createAgentMetrics(),
  log: { info: noop, warn: noop, error: noop, debug: noop },
  clock: systemClock,
  node: () => ({ allocatable: { cpuMilli: 64_000, memoryBytes: 256n * Gi }, memoryCapacityBytes: 256n * Gi }),
  enqueue: noop,
  deferredRetryMs: 3_600_000,
});
afterAll(() => reconciler.stop());

let seq = 0;
function podOf(
  names: string[],
  annotations: Record<string, string>,
  resources?: Array<ContainerLike['resources']>,
): PodLike {
  const n = seq++;
  const pod: PodLike = {
    metadata: { name: `p${n}`, namespace: 'fuzz', uid: `uid-${n}`, annotations },
    spec: {
      nodeName: 'node-a',
      restartPolicy: 'Always',
      containers: names.map((name, i) => ({
        name,
        resources: resources?.[i] ?? {
          requests: { cpu: '100m', memory: '64Mi' },
          limits: { cpu: '200m', memory: '256Mi' },
        },
      })),
    },
    status: { phase: 'Running', qosClass: 'Burstable' },
  };
  pods.set(`fuzz/p${n}`, pod);
  return pod;
}

/** One reconcile of the pod; returns what it wrote (cgroups) and published (status). */
async function reconcile(pod: PodLike) {
  applied.length = 0;
  restarted.length = 0;
  published.length = 0;
  await reconciler.handle(`fuzz/${pod.metadata!.name}`);
  pods.delete(`fuzz/${pod.metadata!.name}`);
  cgroups.delete(pod.metadata!.uid!);
  return { applied: [...applied], restarted: [...restarted], published: [...published] };
}

function expectHuman(message: unknown): void {
  expect(typeof message).toBe('string');
  const m = message as string;
  expect(m.length).toBeGreaterThan(0);
  expect(m.length).toBeLessThanOrEqual(MAX_MESSAGE_CHARS);
  // eslint-disable-next-line no-control-regex -- a control character is what must not be there
  expect(/[\u0000-\u001f\u007f-\u009f]/.test(m)).toBe(false);
  expect(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(m)).toBe(false);
}

/** The single status the agent published, decoded; the annotation text must round-trip. */
function theStatus(out: { published: Array<{ text: string }> }) {
  expect(out.published).toHaveLength(1);
  const status = decodeStatus(out.published[0]!.text);
  expect(status).toBeDefined();
  expectHuman(status!.message);
  return status!;
}

function expectUnpolluted(): void {
  expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  expect(Object.getPrototypeOf({})).toBe(Object.prototype);
  expect(Object.keys(Object.prototype)).toEqual([]);
}

describe('hostile input, through the reconciler (fast-check, 10,000 cases per target)', () => {
  it('request parser: never throws, never writes for a request it refuses, always a readable status', async () => {
    await fc.assert(
      fc.asyncProperty(
        namesArb.chain((names) => fc.tuple(fc.constant(names), hostileTextFor(names))),
        async ([names, text]) => {
          const parsed = parseResizeRequest(text);
          const out = await reconcile(podOf(names, { 'resizelet.io/resize': text }));
          const status = theStatus(out);
          if (!parsed.ok) {
            expectHuman(humanMessage(parsed.message));
            expect(out.applied).toEqual([]);
            expect(status.resizeStatus).toBe('Rejected');
            expect(status.message).toBe(humanMessage(parsed.message));
          } else if (out.applied.length > 0) {
            expect(status.resizeStatus).toBe('Completed');
          } else {
            // Valid but nothing to change (Completed), or refused by the validator or the node.
            expect(['Completed', 'Rejected', 'Deferred']).toContain(status.resizeStatus);
          }
          expectUnpolluted();
        },
      ),
      RUNS,
    );
  }, 60_000);

  it('policy parser: never throws, never writes or restarts under a refused policy, always a readable status', async () => {
    const policyValue = fc.oneof(
      {
        weight: 4,
        arbitrary: fc.constantFrom('NotRequired', 'RestartContainer').map((v) => JSON.stringify(v)),
      },
      quantity.map((q) => JSON.stringify(q)),
      jsonText,
      fc.string({ unit: 'binary', maxLength: 8 }).map((s) => JSON.stringify(s)),
    );
    const policyText = fc.oneof(
      {
        weight: 6,
        arbitrary: objectText(
          fc.tuple(
            fc.oneof({ weight: 4, arbitrary: fc.constantFrom('cpu', 'memory') }, hostileName),
            policyValue,
          ),
          3,
        ),
      },
      fc.string({ unit: 'binary', maxLength: 32 }),
      pollution,
      deepJson,
      fc.constant(''),
    );
    await fc.assert(
      fc.asyncProperty(policyText, async (policy) => {
        const parsed = parseResizePolicy(policy);
        const pod = podOf(['app'], {
          'resizelet.io/resize': '{"app":{"requests":{"cpu":"150m"},"limits":{"memory":"200Mi"}}}',
          'resizelet.io/resize-policy': policy,
        });
        const out = await reconcile(pod);
        const status = theStatus(out);
        if (!parsed.ok) {
          expect(out.applied).toEqual([]);
          expect(out.restarted).toEqual([]);
          expect(status.resizeStatus).toBe('Rejected');
          expect(status.message).toBe(humanMessage(parsed.message));
        } else {
          const restart =
            parsed.value.cpu === 'RestartContainer' || parsed.value.memory === 'RestartContainer';
          expect(status.resizeStatus).toBe(restart ? 'Accepted' : 'Completed');
        }
        expectUnpolluted();
      }),
      RUNS,
    );
  }, 60_000);

  it('validator: never throws, never writes for a request it refuses, always a readable status', async () => {
    const requestMap = (names: string[]): fc.Arbitrary<ResizeRequest> => {
      const cpu = fc.oneof(
        fc.constantFrom(0, -1, 1, 99, 100, 150, 200, 1000, 2 ** 53 - 1, -(2 ** 53)),
        fc.integer(),
      );
      const memory = fc.oneof(
        fc.constantFrom(0n, -1n, 1n, 64n * 1024n ** 2n, 2n ** 63n - 1n, 2n ** 63n, 2n ** 64n, 10n ** 30n),
        fc.bigInt(),
      );
      const sideArb = fc.record({ cpu, memory }, { requiredKeys: [] });
      return fc
        .uniqueArray(
          fc.tuple(
            fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...names) }, hostileName),
            fc.record({ requests: sideArb, limits: sideArb }),
          ),
          { selector: ([k]) => k, maxLength: 4 },
        )
        .map((es) => new Map(es));
    };
    const caseArb = namesArb.chain((names) =>
      fc.tuple(
        fc.constant(names),
        fc.array(resourcesArb, { minLength: names.length, maxLength: names.length }),
        requestMap(names),
        fc.option(fc.array(resourcesArb, { minLength: names.length, maxLength: names.length })),
        fc.constantFrom('Burstable', 'Guaranteed', 'BestEffort', undefined),
      ),
    );
    const rules = new Set<string>(Object.values(ValidationRules));
    const toText = (req: ResizeRequest): string =>
      JSON.stringify(Object.fromEntries(req), (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
    await fc.assert(
      fc.asyncProperty(caseArb, async ([names, specs, request, allocated, qos]) => {
        const pod = podOf(names, {}, specs);
        pod.status!.qosClass = qos;
        const current = new Map<string, Resources>();
        if (allocated) {
          names.forEach((n, i) => current.set(n, specResources({ name: n, resources: allocated[i] })));
        }
        // The validator itself, on the parsed request (values the parser would never produce included).
        const v = validateResize({ pod, nodeName: 'node-a', request, current });
        if (v.ok) {
          expect(v.desired.map((d) => d.name)).toEqual(names);
          for (const c of v.changed) expect(request.has(c)).toBe(true);
        } else {
          expect(rules.has(v.rule)).toBe(true);
          expectHuman(humanMessage(v.message));
        }
        // And the same request as an annotation, through the reconciler.
        const text = toText(request);
        pod.metadata!.annotations = { 'resizelet.io/resize': text };
        const parsed = parseResizeRequest(text);
        const out = await reconcile(pod);
        const status = theStatus(out);
        const valid =
          parsed.ok &&
          validateResize({ pod, nodeName: 'node-a', request: parsed.value, current: new Map() }).ok;
        if (!valid) {
          expect(out.applied).toEqual([]);
          expect(status.resizeStatus).toBe('Rejected');
        }
        expectUnpolluted();
      }),
      RUNS,
    );
  }, 60_000);

  it('a pod whose own spec holds an out-of-range quantity is answered, and its neighbours still resize', async () => {
    const weird = podOf(['app'], { 'resizelet.io/resize': '{"app":{"limits":{"cpu":"300m"}}}' }, [
      { requests: { cpu: '100m' }, limits: { cpu: '1e16' } },
    ]);
    pods.set(`fuzz/${weird.metadata!.name}`, weird);
    const out = await reconcile(weird);
    const status = theStatus(out);
    expect(status.resizeStatus).toBe('Rejected');
    expect(status.message).toMatch(
      /^the pod's spec cannot be read: container "app" limits: "10e15" is out of range/,
    );
    expect(out.applied).toEqual([]);
    // The same pod present on the node does not stop another pod's admission.
    pods.set(`fuzz/${weird.metadata!.name}`, weird);
    const neighbour = podOf(['app'], { 'resizelet.io/resize': '{"app":{"requests":{"cpu":"150m"}}}' });
    const next = await reconcile(neighbour);
    expect(theStatus(next).resizeStatus).toBe('Completed');
    expect(next.applied).toHaveLength(1);
    pods.delete(`fuzz/${weird.metadata!.name}`);
  });
});
