import { describe, expect, it } from 'vitest';
import {
  DEFAULTS,
  parseAutoscalePolicy,
  parseDurationMs,
  policyFor,
  type AutoscalePolicy,
} from '../../agent/autoscale/policy.ts';

const Mi = 1024n * 1024n;

function ok(text: string): AutoscalePolicy {
  const r = parseAutoscalePolicy(text);
  if (!r.ok) throw new Error(`expected ${text} to parse: ${r.message}`);
  return r.value;
}

describe('parseAutoscalePolicy', () => {
  it('fills every default for an empty policy: cpu and memory on, scale-down off, Auto', () => {
    const p = policyFor(ok('{}'), 'any')!;
    expect(p).toEqual({
      mode: 'Auto',
      cpu: {
        targetUtilization: 0.8,
        windowMs: 2_000,
        scaleUpFactor: 2,
        maxMilli: undefined,
        minMilli: 25,
        cooldownMs: 5_000,
        throttledRatio: 0.25,
      },
      memory: {
        highWatermark: 0.9,
        scaleUpFactor: 2,
        maxBytes: undefined,
        minBytes: 64n * Mi,
        cooldownMs: 0,
      },
      scaleDown: null,
    });
  });

  it('reads quantities through the Kubernetes parser and durations with units', () => {
    const p = policyFor(
      ok(
        '{"cpu":{"max":"1.5","min":"100m","window":"3s","cooldown":"1m","targetUtilization":0.7},' +
          '"memory":{"max":"2Gi","min":128e6},"scaleDown":{"quietWindow":"10m","limits":true}}',
      ),
      'app',
    )!;
    expect(p.cpu).toMatchObject({
      maxMilli: 1500,
      minMilli: 100,
      windowMs: 3_000,
      cooldownMs: 60_000,
      targetUtilization: 0.7,
    });
    expect(p.memory).toMatchObject({ maxBytes: 2048n * Mi, minBytes: 128_000_000n });
    expect(p.scaleDown).toEqual({
      quietWindowMs: 600_000,
      percentile: DEFAULTS.scaleDown.percentile,
      margin: 0.15,
      hysteresis: 0.2,
      limits: true,
    });
  });

  it('turns sections off with false, and scaleDown on with true', () => {
    const p = policyFor(ok('{"cpu":false,"scaleDown":true}'), 'x')!;
    expect(p.cpu).toBeNull();
    expect(p.memory).not.toBeNull();
    expect(p.scaleDown?.quietWindowMs).toBe(300_000);
    expect(policyFor(ok('{"cpu":{"throttledRatio":false}}'), 'x')!.cpu?.throttledRatio).toBeNull();
  });

  it('applies a policy without "containers" to every container', () => {
    const policy = ok('{"mode":"Recommend"}');
    expect(policyFor(policy, 'a')?.mode).toBe('Recommend');
    expect(policyFor(policy, 'b')?.mode).toBe('Recommend');
  });

  it('autoscales only named containers, merging each entry over the top-level fields', () => {
    const policy = ok(
      '{"mode":"Recommend","cpu":{"max":"2","window":"4s"},"containers":{"app":{"cpu":{"max":"1"}},"db":{"mode":"Auto"}}}',
    );
    expect(policyFor(policy, 'app')).toMatchObject({
      mode: 'Recommend',
      cpu: { maxMilli: 1000, windowMs: 4000 },
    });
    expect(policyFor(policy, 'db')).toMatchObject({ mode: 'Auto', cpu: { maxMilli: 2000 } });
    expect(policyFor(policy, 'sidecar')).toBeUndefined();
  });

  it('"*" covers the containers not named; mode Off leaves a container alone', () => {
    const policy = ok('{"containers":{"*":{"cpu":{"max":"1"}},"istio-proxy":{"mode":"Off"}}}');
    expect(policyFor(policy, 'anything')?.cpu?.maxMilli).toBe(1000);
    expect(policyFor(policy, 'istio-proxy')).toBeUndefined();
  });

  it('a container entry can switch a top-level section off', () => {
    const policy = ok('{"memory":{"max":"1Gi"},"containers":{"app":{"memory":false}}}');
    expect(policyFor(policy, 'app')?.memory).toBeNull();
  });

  it.each([
    ['', /not valid JSON/],
    ['[]', /must be a JSON object/],
    ['{"foo":1}', /unknown field "foo" \(known: mode, cpu, memory, scaleDown, containers\)/],
    [
      '{"cpu":{"targetUtilisation":0.8}}',
      /cpu: unknown field "targetUtilisation" \(did you mean "targetUtilization"\?\)/,
    ],
    ['{"scaledown":{}}', /did you mean "scaleDown"/],
    ['{"mode":"auto"}', /mode must be one of Auto, Recommend, Off/],
    ['{"cpu":{"targetUtilization":80}}', /targetUtilization must be a fraction .*0\.8 means 80 %/],
    ['{"cpu":{"scaleUpFactor":1}}', /scaleUpFactor must be above 1/],
    ['{"memory":{"highWatermark":1}}', /highWatermark must be a fraction of the limit above 0 and below 1/],
    ['{"cpu":{"window":"2 sec"}}', /cpu\.window: "2 sec" is not a duration; write e\.g\. "500ms", "2s"/],
    ['{"cpu":{"window":"2"}}', /a unit is required/],
    ['{"cpu":{"window":2}}', /cpu\.window must be a duration string/],
    ['{"cpu":{"window":"500ms"}}', /cpu\.window: 500ms is outside 1s\.\.1h/],
    ['{"cpu":{"max":"2x"}}', /cpu\.max: "2x": unknown suffix "x"/],
    ['{"memory":{"max":"1GB"}}', /memory\.max: .*did you mean "Gi" or "G"/],
    ['{"cpu":{"max":"0"}}', /cpu\.max must be positive/],
    ['{"cpu":{"max":"-1"}}', /cannot be negative/],
    ['{"cpu":{"max":true}}', /cpu\.max must be a quantity such as "500m"/],
    ['{"cpu":{"max":"100m","min":"200m"}}', /cpu: min 200m is above max 100m/],
    ['{"cpu":"fast"}', /cpu must be an object of settings \(or false to turn it off\)/],
    ['{"scaleDown":{"percentile":0.2}}', /percentile must be between 0\.5 and 1/],
    ['{"scaleDown":{"limits":"yes"}}', /scaleDown\.limits must be true or false/],
    ['{"containers":{"App":{}}}', /containers: "App" is not a container name/],
    ['{"containers":{"app":5}}', /container "app" must be an object/],
    ['{"containers":{"app":{"cpu":{"window":"x"}}}}', /container "app" cpu\.window: "x" is not a duration/],
    ['{"containers":{"app":{"cpu":{"bogus":1}}}}', /container "app" cpu: unknown field "bogus"/],
  ])('refuses %j with a sentence: %s', (text, message) => {
    const r = parseAutoscalePolicy(text);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.message).toMatch(message);
  });

  it('checks the top-level fields even when every container has its own entry', () => {
    const r = parseAutoscalePolicy('{"cpu":{"window":"forever"},"containers":{"app":{"cpu":false}}}');
    expect(r.ok).toBe(false);
  });

  it('refuses oversized policies unread', () => {
    const r = parseAutoscalePolicy(`{"mode":"Auto"${' '.repeat(20_000)}}`);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.message).toMatch(/at most 16384/);
  });
});

describe('parseDurationMs', () => {
  it.each([
    ['500ms', 500],
    ['2s', 2_000],
    ['1.5m', 90_000],
    ['1h', 3_600_000],
  ])('%s is %d ms', (text, ms) => {
    expect(parseDurationMs(text, 'x', 0, 86_400_000)).toBe(ms);
  });
});
