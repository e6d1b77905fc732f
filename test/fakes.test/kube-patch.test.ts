// The fake's patch and selector logic, as plain tables: these decide what the fake stores, so a bug
// here would make every client-level test lie.
import { describe, expect, it } from 'vitest';
import { PatchError, jsonPatch, mergePatch, strategicMergePatch } from '../fakes/kube/patch.ts';
import type { Json } from '../fakes/kube/patch.ts';
import { SelectorError, matches, parseSelector } from '../fakes/kube/selectors.ts';

describe('merge patch (RFC 7386)', () => {
  const cases: [string, Json, Json, Json][] = [
    ['replaces a scalar', { a: 'b' }, { a: 'c' }, { a: 'c' }],
    ['adds a key', { a: 'b' }, { b: 'c' }, { a: 'b', b: 'c' }],
    ['null deletes a key', { a: 'b', b: 'c' }, { a: null }, { b: 'c' }],
    ['arrays replace whole', { a: [1, 2] }, { a: [3] }, { a: [3] }],
    ['nested null deletes deep', { a: { b: 1, c: 2 } }, { a: { b: null } }, { a: { c: 2 } }],
    ['object onto scalar', { a: 'x' }, { a: { b: null, c: 1 } }, { a: { c: 1 } }],
    ['scalar patch replaces document', { a: 1 }, 'x', 'x'],
  ];
  it.each(cases)('%s', (_name, target, patch, want) => {
    expect(mergePatch(target, patch)).toEqual(want);
  });

  it('does not mutate its inputs', () => {
    const target = { a: { b: 1 } };
    mergePatch(target, { a: { b: 2 } });
    expect(target).toEqual({ a: { b: 1 } });
  });
});

describe('JSON patch (RFC 6902)', () => {
  const doc = { metadata: { annotations: { x: '1' } }, list: ['a', 'b'] };
  const cases: [string, Json, Json][] = [
    [
      'add to object',
      [{ op: 'add', path: '/metadata/labels', value: { k: 'v' } }],
      { ...doc, metadata: { ...doc.metadata, labels: { k: 'v' } } },
    ],
    [
      'add inserts into array',
      [{ op: 'add', path: '/list/1', value: 'z' }],
      { ...doc, list: ['a', 'z', 'b'] },
    ],
    ['add appends with -', [{ op: 'add', path: '/list/-', value: 'z' }], { ...doc, list: ['a', 'b', 'z'] }],
    [
      'remove',
      [{ op: 'remove', path: '/metadata/annotations/x' }],
      { ...doc, metadata: { annotations: {} } },
    ],
    ['replace', [{ op: 'replace', path: '/list/0', value: 'q' }], { ...doc, list: ['q', 'b'] }],
    ['move', [{ op: 'move', from: '/list/0', path: '/first' }], { ...doc, list: ['b'], first: 'a' }],
    ['copy', [{ op: 'copy', from: '/list', path: '/copy' }], { ...doc, copy: ['a', 'b'] }],
    [
      'test then act',
      [
        { op: 'test', path: '/list/1', value: 'b' },
        { op: 'remove', path: '/list' },
      ],
      { metadata: doc.metadata },
    ],
    [
      'escaped pointer',
      [{ op: 'add', path: '/metadata/annotations/a~1b~0c', value: 'v' }],
      { ...doc, metadata: { annotations: { x: '1', 'a/b~c': 'v' } } },
    ],
  ];
  it.each(cases)('%s', (_name, ops, want) => {
    expect(jsonPatch(doc, ops)).toEqual(want);
  });

  const failures: [string, Json, PatchError['kind']][] = [
    ['a failed test', [{ op: 'test', path: '/list/0', value: 'nope' }], 'unapplicable'],
    ['remove of a missing key', [{ op: 'remove', path: '/nope' }], 'unapplicable'],
    ['replace of a missing key', [{ op: 'replace', path: '/nope', value: 1 }], 'unapplicable'],
    ['add under a missing parent', [{ op: 'add', path: '/a/b', value: 1 }], 'unapplicable'],
    ['index past the end', [{ op: 'add', path: '/list/5', value: 1 }], 'unapplicable'],
    ['an unknown op', [{ op: 'frob', path: '/list' }], 'unapplicable'],
    ['a body that is not a list', { op: 'add' }, 'malformed'],
  ];
  it.each(failures)('rejects %s', (_name, ops, kind) => {
    expect(() => jsonPatch(doc, ops)).toThrow(expect.objectContaining({ kind }));
  });

  it('is atomic: a failing op leaves no partial result', () => {
    const target = { a: 1 };
    expect(() =>
      jsonPatch(target, [
        { op: 'add', path: '/b', value: 2 },
        { op: 'test', path: '/a', value: 9 },
      ]),
    ).toThrow(PatchError);
    expect(target).toEqual({ a: 1 });
  });
});

describe('strategic merge patch', () => {
  const pod: { spec: { containers: Json[]; tolerations: Json[] } } = {
    spec: {
      containers: [
        { name: 'app', image: 'a', resources: { limits: { cpu: '1' } } },
        { name: 'side', image: 's' },
      ],
      tolerations: [{ key: 'x' }],
    },
  };

  it('merges containers by name instead of replacing the list', () => {
    const out = strategicMergePatch(pod, {
      spec: { containers: [{ name: 'app', resources: { limits: { cpu: '2' } } }] },
    });
    expect(out).toEqual({
      spec: {
        containers: [
          { name: 'app', image: 'a', resources: { limits: { cpu: '2' } } },
          { name: 'side', image: 's' },
        ],
        tolerations: [{ key: 'x' }],
      },
    });
  });

  it('honours $patch: delete in a keyed list and replaces lists without a merge key', () => {
    const out = strategicMergePatch(pod, {
      spec: { containers: [{ name: 'side', $patch: 'delete' }], tolerations: [{ key: 'y' }] },
    });
    expect(out).toEqual({
      spec: { containers: [pod.spec.containers[0]], tolerations: [{ key: 'y' }] },
    });
  });
});

describe('selectors', () => {
  const obj = { metadata: { name: 'p', labels: { app: 'web', tier: 'front' } }, spec: { nodeName: 'n1' } };
  const cases: [string, string | undefined, string | undefined, boolean][] = [
    ['label equality', 'app=web', undefined, true],
    ['label double equals', 'app==web', undefined, true],
    ['label inequality', 'app!=web', undefined, false],
    ['label set', 'tier in (back, front)', undefined, true],
    ['label notin', 'tier notin (front)', undefined, false],
    ['label exists and not exists', 'app,!canary', undefined, true],
    ['field equality', undefined, 'spec.nodeName=n1', true],
    ['field on another node', undefined, 'spec.nodeName=n2', false],
    ['empty field matches unscheduled only', undefined, 'spec.nodeName=', false],
    ['both', 'app=web', 'metadata.name=p,spec.nodeName!=n2', true],
  ];
  it.each(cases)('%s', (_name, labels, fields, want) => {
    expect(matches(parseSelector(labels, fields, null), obj)).toBe(want);
  });

  it('rejects a field label the resource does not register, like the real server', () => {
    expect(() => parseSelector(undefined, 'spec.priority=1', ['spec.nodeName'])).toThrow(SelectorError);
  });
});
