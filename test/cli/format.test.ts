// What the CLI prints, from plain pods and a fixed clock.
import { describe, expect, it } from 'vitest';
import { encodeStatus } from '../../agent/resize/status.ts';
import type { PodLike } from '../../agent/resize/pod.ts';
import { formatAge, formatResources, progressLine, renderTable, statusTable } from '../../bin/cli/format.ts';

const now = new Date('2025-06-01T12:00:00Z');

describe('formatResources', () => {
  it.each([
    [{ cpu: '100m', memory: '64Mi' }, { cpu: '200m', memory: '256Mi' }, 'cpu 100m/200m, memory 64Mi/256Mi'],
    [{ cpu: '100m' }, undefined, 'cpu 100m/-'],
    [undefined, { memory: '1Gi' }, 'memory -/1Gi'],
    [undefined, undefined, '-'],
  ])('%j %j -> %s', (req, lim, want) => {
    expect(formatResources(req, lim)).toBe(want);
  });
});

describe('formatAge', () => {
  it.each([
    ['2025-06-01T11:59:15Z', '45s'],
    ['2025-06-01T11:57:00Z', '3m'],
    ['2025-06-01T10:00:00Z', '2h'],
    ['2025-05-27T12:00:00Z', '5d'],
    ['', '-'],
    [undefined, '-'],
    ['not a date', '-'],
  ])('%s -> %s', (from, want) => {
    expect(formatAge(from, now)).toBe(want);
  });
});

describe('statusTable', () => {
  const pods: PodLike[] = [
    {
      metadata: {
        name: 'web',
        namespace: 'shop',
        annotations: {
          'resizelet.io/resource-status': encodeStatus({
            resizeStatus: 'Completed',
            allocatedResources: [
              {
                name: 'app',
                requests: { cpu: '100m', memory: '64Mi' },
                limits: { cpu: '1', memory: '256Mi' },
              },
            ],
            message: 'resized in place',
            lastTransitionTime: '2025-06-01T11:59:48Z',
          }),
        },
      },
      spec: {
        containers: [
          {
            name: 'app',
            resources: {
              requests: { cpu: '100m', memory: '64Mi' },
              limits: { cpu: '200m', memory: '256Mi' },
            },
          },
          { name: 'sidecar' },
        ],
      },
    },
    {
      metadata: { name: 'api', namespace: 'shop', annotations: { 'resizelet.io/resize': '{"x":{}}' } },
      spec: { containers: [{ name: 'x', resources: { requests: { cpu: '1' } } }] },
    },
  ];

  it('one row per container: spec, allocation, status, age, message', () => {
    expect(statusTable(pods, { namespaces: false, now })).toBe(
      [
        'POD   CONTAINER   SPEC (REQ/LIM)                     ALLOCATED (REQ/LIM)             STATUS      AGE   MESSAGE',
        'web   app         cpu 100m/200m, memory 64Mi/256Mi   cpu 100m/1, memory 64Mi/256Mi   Completed   12s   resized in place',
        'web   sidecar     -                                  -                               Completed   12s   resized in place',
        'api   x           cpu 1/-                            -                               -           -',
        '',
      ].join('\n'),
    );
  });

  it('adds the namespace column for -A', () => {
    expect(statusTable(pods.slice(1), { namespaces: true, now }).split('\n')[1]).toBe(
      'shop        api   x           cpu 1/-          -                     -        -',
    );
  });

  it('renders a table with no rows as its header', () => {
    expect(renderTable(['A', 'B'], [])).toBe('A   B\n');
  });
});

describe('progressLine', () => {
  it.each([
    [{ resizeStatus: 'Proposed' as const }, 0, '  +0.0s  Proposed\n'],
    [
      { resizeStatus: 'Deferred' as const, message: 'not enough free CPU on the node' },
      1234,
      '  +1.2s  Deferred   not enough free CPU on the node\n',
    ],
    [
      {
        resizeStatus: 'Completed' as const,
        allocatedResources: [{ name: 'app', requests: { cpu: '100m' }, limits: { cpu: '1' } }],
      },
      15_000,
      ' +15.0s  Completed  allocated app: cpu 100m/1\n',
    ],
  ])('%j at %i ms', (s, ms, want) => {
    expect(progressLine({ allocatedResources: [], lastTransitionTime: '', ...s }, ms)).toBe(want);
  });
});
