import { describe, expect, it } from 'vitest';
import { parseResizePolicy, parseResizeRequest, requestHash } from '../../agent/resize/request.ts';

describe('parseResizeRequest', () => {
  it('parses the documented example into integer units', () => {
    const r = parseResizeRequest('{"app":{"requests":{"cpu":"500m"},"limits":{"cpu":"1","memory":"512Mi"}}}');
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect([...r.value.entries()]).toEqual([
      ['app', { requests: { cpu: 500 }, limits: { cpu: 1000, memory: 536870912n } }],
    ]);
  });

  it('accepts plain numbers as quantities', () => {
    const r = parseResizeRequest('{"app":{"limits":{"cpu":2}}}');
    expect(r.ok && r.value.get('app')?.limits.cpu).toBe(2000);
  });

  it.each([
    ['', /not valid JSON/],
    ['[]', /must be a JSON object keyed by container name/],
    ['{}', /names no container/],
    ['{"app":{}}', /container "app": nothing to change/],
    ['{"app":5}', /container "app": must be an object/],
    [
      '{"app":{"requests":{"nvidia.com/gpu":"1"}}}',
      /only cpu and memory can be resized in place, not "nvidia.com\/gpu"/,
    ],
    ['{"app":{"requests":{"ephemeral-storage":"1Gi"}}}', /not "ephemeral-storage"/],
    ['{"app":{"request":{"cpu":"1"}}}', /unknown field "request"/],
    ['{"app":{"limits":"1"}}', /limits must be an object/],
    ['{"app":{"limits":{"cpu":true}}}', /quantity strings/],
    ['{"app":{"limits":{"memory":"10 Mi"}}}', /container "app": limits.memory: .*10 Mi/],
    ['{"app":{"limits":{"cpu":"1.2.3"}}}', /limits.cpu: .*1\.2\.3/],
    ['{"app":{"limits":{"memory":"-1Mi"}}}', /limits.memory: .*cannot be negative/],
  ])('rejects %j with a clear message', (text, message) => {
    const r = parseResizeRequest(text);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.message).toMatch(message);
  });

  it('refuses oversized annotations unread', () => {
    const r = parseResizeRequest(`{"a":{"limits":{"cpu":"1"}},"pad":"${'x'.repeat(20000)}"}`);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.message).toMatch(/at most 16384 are accepted/);
  });

  it('keeps prototype keys as plain data', () => {
    const r = parseResizeRequest('{"__proto__":{"limits":{"cpu":"1"}},"constructor":{"limits":{"cpu":"1"}}}');
    expect(r.ok).toBe(true);
    if (r.ok) expect([...r.value.keys()].sort()).toEqual(['__proto__', 'constructor']);
    expect(({} as Record<string, unknown>).limits).toBeUndefined();
  });
});

describe('parseResizePolicy', () => {
  it('defaults to NotRequired', () => {
    expect(parseResizePolicy(undefined)).toEqual({
      ok: true,
      value: { cpu: 'NotRequired', memory: 'NotRequired' },
    });
  });
  it('reads RestartContainer for memory', () => {
    expect(parseResizePolicy('{"memory":"RestartContainer"}')).toEqual({
      ok: true,
      value: { cpu: 'NotRequired', memory: 'RestartContainer' },
    });
  });
  it.each([
    ['{"memory":"Sometimes"}', /memory must be one of NotRequired, RestartContainer/],
    ['{"gpu":"NotRequired"}', /names "gpu"; only cpu and memory/],
    ['nope', /not valid JSON/],
  ])('rejects %s', (text, message) => {
    const r = parseResizePolicy(text);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.message).toMatch(message);
  });
});

describe('requestHash', () => {
  it('is stable and distinguishes requests', () => {
    expect(requestHash('{"a":1}')).toBe(requestHash(' {"a":1}\n'));
    expect(requestHash('{"a":1}')).not.toBe(requestHash('{"a":2}'));
    expect(requestHash('{"a":1}')).toMatch(/^[0-9a-f]{16}$/);
  });
});
