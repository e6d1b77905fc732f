// What `resize` writes, from a pod: the request in the agent's own format, a Proposed status that keeps
// the allocation, and the container choice with its sentences.
import { describe, expect, it } from 'vitest';
import { parseResizeRequest, requestHash } from '../../agent/resize/request.ts';
import { decodeStatus, encodeStatus } from '../../agent/resize/status.ts';
import type { PodLike } from '../../agent/resize/pod.ts';
import { CliError } from '../../bin/cli/errors.ts';
import { chooseContainer, planResize } from '../../bin/cli/request.ts';

const now = new Date('2025-06-01T12:00:00Z');

function pod(containers: string[], annotations: Record<string, string> = {}): PodLike {
  return {
    metadata: { name: 'web', namespace: 'shop', resourceVersion: '42', annotations },
    spec: { nodeName: 'n1', containers: containers.map((name) => ({ name })) },
  };
}

const completed = (requestText: string, allocated: unknown[] = []) =>
  encodeStatus({
    resizeStatus: 'Completed',
    allocatedResources: allocated as never,
    observedRequest: requestHash(requestText),
    lastTransitionTime: '2025-06-01T11:00:00Z',
  });

describe('chooseContainer', () => {
  it('takes the only container when -c is left out', () => {
    expect(chooseContainer(pod(['app']), undefined)).toBe('app');
  });

  it.each([
    [
      ['app', 'sidecar'],
      undefined,
      'pod shop/web has 2 containers (app, sidecar); choose one with -c, e.g. -c app',
    ],
    [['app', 'sidecar'], 'db', 'pod shop/web has no container "db"; its containers are: app, sidecar'],
    [['app'], 'App', 'pod shop/web has no container "App"; its containers are: app'],
  ])('%j -c %s -> %s', (names, wanted, message) => {
    expect(() => chooseContainer(pod(names), wanted)).toThrow(new CliError(message));
  });

  it('says why an init container cannot be chosen', () => {
    const p = pod(['app']);
    p.spec!.initContainers = [{ name: 'migrate' }];
    expect(() => chooseContainer(p, 'migrate')).toThrow(/is an init or ephemeral container/);
  });
});

describe('planResize', () => {
  it('writes exactly what the agent parses, a Proposed status for that request, and drops a stale source', () => {
    const plan = planResize({
      pod: pod(['app']),
      container: 'app',
      requests: { cpu: '500m', memory: '256Mi' },
      limits: { cpu: '1' },
      now,
    });
    expect(plan.requestText).toBe(
      '{"app":{"requests":{"cpu":"500m","memory":"256Mi"},"limits":{"cpu":"1"}}}',
    );
    const parsed = parseResizeRequest(plan.requestText);
    expect(parsed.ok && parsed.value.get('app')).toEqual({
      requests: { cpu: 500, memory: 268435456n },
      limits: { cpu: 1000 },
    });
    const annotations = plan.patch.metadata.annotations;
    expect(annotations['resizelet.io/resize']).toBe(plan.requestText);
    expect(annotations['resizelet.io/resize-source']).toBeNull();
    expect(decodeStatus(annotations['resizelet.io/resource-status']!)).toEqual({
      resizeStatus: 'Proposed',
      allocatedResources: [],
      observedRequest: requestHash(plan.requestText),
      lastTransitionTime: '2025-06-01T12:00:00.000Z',
    });
    expect(plan.hash).toBe(requestHash(plan.requestText));
    expect(plan.patch.metadata.resourceVersion).toBe('42');
    expect(plan.kept).toEqual([]);
    expect(plan.alreadyAnswered).toBeUndefined();
  });

  it('keeps the allocation the agent last reported', () => {
    const alloc = [{ name: 'app', requests: { cpu: '100m' }, limits: { cpu: '1' } }];
    const plan = planResize({
      pod: pod(['app'], {
        'resizelet.io/resize': '{"app":{"limits":{"cpu":"1"}}}',
        'resizelet.io/resource-status': completed('{"app":{"limits":{"cpu":"1"}}}', alloc),
      }),
      container: 'app',
      requests: {},
      limits: { cpu: '2' },
      now,
    });
    expect(plan.requestText).toBe('{"app":{"limits":{"cpu":"2"}}}');
    expect(
      decodeStatus(plan.patch.metadata.annotations['resizelet.io/resource-status']!)?.allocatedResources,
    ).toEqual(alloc);
    expect(plan.kept).toEqual([]);
  });

  it('keeps the parts of an earlier request the agent has not answered yet', () => {
    const earlier = '{"sidecar":{"limits":{"cpu":"2"}},"app":{"requests":{"cpu":"300m"}}}';
    const plan = planResize({
      pod: pod(['app', 'sidecar'], { 'resizelet.io/resize': earlier }),
      container: 'app',
      requests: {},
      limits: { memory: '1Gi' },
      now,
    });
    expect(JSON.parse(plan.requestText)).toEqual({
      sidecar: { limits: { cpu: '2' } },
      app: { requests: { cpu: '300m' }, limits: { memory: '1Gi' } },
    });
    expect(plan.kept).toEqual(['sidecar limits cpu=2', 'app requests cpu=300m']);
  });

  it('does not carry an answered request, nor an unparseable one', () => {
    const answered = '{"sidecar":{"limits":{"cpu":"2"}}}';
    const a = planResize({
      pod: pod(['app', 'sidecar'], {
        'resizelet.io/resize': answered,
        'resizelet.io/resource-status': completed(answered),
      }),
      container: 'app',
      requests: { cpu: '1' },
      limits: {},
      now,
    });
    expect(a.requestText).toBe('{"app":{"requests":{"cpu":"1"}}}');
    const b = planResize({
      pod: pod(['app'], { 'resizelet.io/resize': '{"app":{"limits":{"gpu":"1"}}}' }),
      container: 'app',
      requests: { cpu: '1' },
      limits: {},
      now,
    });
    expect(b.requestText).toBe('{"app":{"requests":{"cpu":"1"}}}');
  });

  it('recognises the exact request already answered (the agent would not judge it again)', () => {
    const text = '{"app":{"limits":{"cpu":"1"}}}';
    const plan = planResize({
      pod: pod(['app'], { 'resizelet.io/resize': text, 'resizelet.io/resource-status': completed(text) }),
      container: 'app',
      requests: {},
      limits: { cpu: '1' },
      now,
    });
    expect(plan.alreadyAnswered?.resizeStatus).toBe('Completed');
  });
});
