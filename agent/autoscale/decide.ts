// The autoscaler's decisions for one container, from a sliding window of cgroup samples. Pure: the sampler
// reads the cgroups and carries a decision out through the ordinary resize request.
//
// The rules (defaults in policy.ts, all documented in docs/autoscale.md):
// - CPU up: the CPU use in each half of the last `window` is at least `targetUtilization` of the limit, or
//   at least `throttledRatio` of the CFS periods in each half were throttled (so the condition held across
//   the window, not in a burst at one end of it). The limit is multiplied by `scaleUpFactor`, capped at `max`.
// - Memory up: the working set reaches `highWatermark` of the limit, or an OOM kill was recorded (at once,
//   cooldown or not). The limit grows by `scaleUpFactor` (and at least to where the working set sits below
//   the watermark), capped at `max`.
// - Only limits are raised (requests stay, so a Burstable pod stays Burstable); on a Guaranteed pod the
//   request moves with the limit. A container without a limit for a resource is not scaled up on it.
// - Down: once `quietWindow` of samples has been recorded since the last change, requests are lowered to
//   max(min, p-th percentile of use x (1 + margin), current use x (1 + margin)), but only when that is at
//   least `hysteresis` below the current request. Limits are lowered only when the policy says so, and
//   then to where the percentile use sits below the scale-up trigger by the margin, never below the request.
// - Every change (ours or anyone's) restarts the windows: samples taken under old limits say nothing about
//   the new ones. That, the hysteresis and the margins are what keep it from flapping.
import type { QosClass, Resources, ResourceValues } from '../resize/pod.ts';
import { formatBytes, formatMillicores } from '../resize/quantity.ts';
import { DEFAULTS, type ContainerPolicy } from './policy.ts';

/** One reading of a container's cgroup. Counters are cumulative, as the kernel keeps them. */
export interface Sample {
  /** Milliseconds (the injected clock). */
  at: number;
  cpuUsageNs: number;
  /** CFS periods and throttled periods; null without a quota (the kernel keeps none then). */
  nrPeriods: number | null;
  nrThrottled: number | null;
  workingSetBytes: number;
  oomKills: number;
}

/** The quiet-window history is kept as at most this many buckets (each the maximum of its samples). */
const QUIET_BUCKETS = 60;
/** Fewer CFS periods than this in a window say nothing about throttling. */
const MIN_PERIODS = 10;
const MiB = 1024n * 1024n;

interface Bucket {
  start: number;
  cpuMilli: number;
  workingSet: number;
}

/** What the autoscaler remembers of one container; reset whenever its resources change. */
export interface Tracker {
  containerId: string;
  /** The resources the samples were taken under (a change of them restarts every window). */
  holding: string;
  /** When the current windows started. */
  since: number;
  /** Raw samples covering the longest short window (CPU), oldest first. */
  samples: Sample[];
  /** Maxima per bucket over the quiet window, oldest first. */
  buckets: Bucket[];
  /** The cgroup's OOM-kill counter when last seen; only increases count. */
  oomSeen: number | undefined;
  /** An OOM kill recorded and not yet answered. */
  oomPending: boolean;
  /** Last scale-up per resource (cooldown). */
  lastUp: { cpu?: number; memory?: number };
}

export function newTracker(containerId: string): Tracker {
  return {
    containerId,
    holding: '',
    since: 0,
    samples: [],
    buckets: [],
    oomSeen: undefined,
    oomPending: false,
    lastUp: {},
  };
}

const holdingKey = (r: Resources): string =>
  `${r.requests.cpu ?? '-'}/${r.limits.cpu ?? '-'}/${r.requests.memory ?? '-'}/${r.limits.memory ?? '-'}`;

/** Restart every window (after a change); the OOM counter and cooldowns carry over. */
export function resetWindows(t: Tracker, now: number): void {
  t.samples = [];
  t.buckets = [];
  t.since = now;
}

/** Milli-cores used between two samples. */
function rateMilli(a: Sample, b: Sample): number {
  const ms = b.at - a.at;
  if (ms <= 0) return 0;
  return Math.max(0, b.cpuUsageNs - a.cpuUsageNs) / ms / 1_000;
}

/**
 * Adds a sample. `holding` is what the container is allocated now; when it differs from what earlier
 * samples were taken under, the windows restart with this sample.
 */
export function observe(t: Tracker, s: Sample, holding: Resources, policy: ContainerPolicy): void {
  if (t.oomSeen !== undefined && s.oomKills > t.oomSeen) t.oomPending = true;
  t.oomSeen = s.oomKills;
  const key = holdingKey(holding);
  if (key !== t.holding) {
    t.holding = key;
    resetWindows(t, s.at);
  }
  const prev = t.samples[t.samples.length - 1];
  if (prev && s.at <= prev.at) return;
  t.samples.push(s);
  // Keep one sample older than the window, so the window is always covered end to end (and always two, for
  // the latest interval's rate).
  const windowMs = policy.cpu?.windowMs ?? 0;
  while (t.samples.length > 2 && t.samples[1]!.at <= s.at - windowMs) t.samples.shift();

  if (policy.scaleDown && prev) {
    const width = Math.max(1, Math.floor(policy.scaleDown.quietWindowMs / QUIET_BUCKETS));
    const start = s.at - (s.at % width);
    const cpuMilli = rateMilli(prev, s);
    const last = t.buckets[t.buckets.length - 1];
    if (last && last.start === start) {
      last.cpuMilli = Math.max(last.cpuMilli, cpuMilli);
      last.workingSet = Math.max(last.workingSet, s.workingSetBytes);
    } else {
      t.buckets.push({ start, cpuMilli, workingSet: s.workingSetBytes });
    }
    const from = s.at - policy.scaleDown.quietWindowMs;
    while (t.buckets.length > 0 && t.buckets[0]!.start + width <= from) t.buckets.shift();
  }
}

export type Trigger = 'cpu-utilization' | 'cpu-throttling' | 'memory-watermark' | 'oom-kill' | 'quiet';

export interface Change {
  resource: 'cpu' | 'memory';
  kind: 'request' | 'limit';
  from: number | bigint;
  to: number | bigint;
}

export interface ContainerDecision {
  container: string;
  direction: 'up' | 'down';
  triggers: Trigger[];
  /** Every value the container would hold afterwards. */
  resources: Resources;
  /** Only what changes, as the request annotation carries it. */
  change: { requests: ResourceValues; limits: ResourceValues };
  changes: Change[];
  reason: string;
}

export interface DecideInput {
  container: string;
  policy: ContainerPolicy;
  /** What the container holds now (allocation, else spec). */
  holding: Resources;
  /** The pod spec's values: the default max is a multiple of them. */
  spec: Resources;
  qos: QosClass;
  now: number;
}

export interface DecideResult {
  decision?: ContainerDecision;
  /** A trigger fired but the value is already at its max: worth a log line, not a request. */
  capped?: string;
}

const pct = (x: number): string => `${Math.round(x * 100)}%`;
const showMs = (ms: number): string => (ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`);
const cpuText = (m: number): string => formatMillicores(Math.round(m));
/** Memory for a sentence: "256Mi" or "1Gi" when whole MiB, else MiB to one decimal ("21.8Mi"). */
function memText(b: bigint | number): string {
  const n = BigInt(Math.round(Number(b)));
  return n % MiB === 0n ? formatBytes(n) : `${(Number(n) / 1048576).toFixed(1)}Mi`;
}

/** Bytes rounded up to whole MiB, so requests read as "320Mi" rather than 335544321. */
function roundUpMiB(b: number | bigint): bigint {
  const n = BigInt(Math.ceil(Number(b)));
  return ((n + MiB - 1n) / MiB) * MiB;
}

function percentileOf(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[idx]!;
}

/** The newest sample at least `windowMs` old: the start of a fully covered window. */
function windowStart(samples: Sample[], now: number, windowMs: number): Sample | undefined {
  let found: Sample | undefined;
  for (const s of samples) {
    if (s.at <= now - windowMs) found = s;
    else break;
  }
  return found;
}

interface Up {
  triggers: Trigger[];
  reasons: string[];
  capped: string[];
  cpuLimit?: number;
  memoryLimit?: bigint;
}

/** Throttled periods / periods between two samples, or undefined without enough periods to tell. */
function throttledRatio(a: Sample, b: Sample, minPeriods: number): number | undefined {
  if (a.nrPeriods === null || b.nrPeriods === null || a.nrThrottled === null || b.nrThrottled === null) {
    return undefined;
  }
  const periods = b.nrPeriods - a.nrPeriods;
  return periods >= minPeriods ? (b.nrThrottled - a.nrThrottled) / periods : undefined;
}

/**
 * "Held over the window" means in each half of it: a burst filling only part of the window (a process that
 * started a second ago, or stopped a second ago) does not count, however high the whole window's average.
 */
function cpuUp(t: Tracker, input: DecideInput, up: Up): void {
  const cpu = input.policy.cpu;
  const limit = input.holding.limits.cpu;
  if (!cpu || limit === undefined) return;
  if (t.lastUp.cpu !== undefined && input.now - t.lastUp.cpu < cpu.cooldownMs) return;
  const latest = t.samples[t.samples.length - 1];
  if (!latest) return;
  const base = windowStart(t.samples, latest.at, cpu.windowMs);
  const mid = windowStart(t.samples, latest.at, cpu.windowMs / 2);
  if (!base || !mid || mid === base || mid === latest) return;
  const halves = [rateMilli(base, mid) / limit, rateMilli(mid, latest) / limit];
  const avg = rateMilli(base, latest) / limit;
  const over = showMs(cpu.windowMs);
  let fired = false;
  if (halves.every((u) => u >= cpu.targetUtilization)) {
    up.triggers.push('cpu-utilization');
    up.reasons.push(
      `cpu at ${pct(avg)} of its ${cpuText(limit)} limit over ${over} (target ${pct(cpu.targetUtilization)})`,
    );
    fired = true;
  } else if (cpu.throttledRatio !== null) {
    const threshold = cpu.throttledRatio;
    const ratios = [throttledRatio(base, mid, MIN_PERIODS / 2), throttledRatio(mid, latest, MIN_PERIODS / 2)];
    if (ratios.every((r) => r !== undefined && r >= threshold)) {
      const whole = throttledRatio(base, latest, 0) ?? 0;
      up.triggers.push('cpu-throttling');
      up.reasons.push(
        `cpu throttled in ${pct(whole)} of its periods over ${over} (trigger ${pct(threshold)})`,
      );
      fired = true;
    }
  }
  if (!fired) return;
  const specValue = input.spec.limits.cpu ?? limit;
  const max = cpu.maxMilli ?? specValue * DEFAULTS.maxSpecMultiple;
  const next = Math.min(max, Math.ceil(limit * cpu.scaleUpFactor));
  if (next <= limit) {
    up.capped.push(`cpu limit ${cpuText(limit)} is at its max ${cpuText(max)}`);
    up.triggers.pop();
    up.reasons.pop();
    return;
  }
  up.cpuLimit = next;
}

function memoryUp(t: Tracker, input: DecideInput, up: Up): void {
  const memory = input.policy.memory;
  const limit = input.holding.limits.memory;
  if (!memory || limit === undefined) return;
  const latest = t.samples[t.samples.length - 1];
  if (!latest && !t.oomPending) return;
  const ws = latest?.workingSetBytes ?? 0;
  const cooled = t.lastUp.memory === undefined || input.now - t.lastUp.memory >= memory.cooldownMs;
  const fraction = ws / Number(limit);
  let trigger: Trigger | undefined;
  if (t.oomPending) {
    trigger = 'oom-kill';
    up.reasons.push(`an OOM kill was recorded under the ${memText(limit)} memory limit`);
  } else if (cooled && fraction >= memory.highWatermark) {
    trigger = 'memory-watermark';
    up.reasons.push(
      `working set ${memText(ws)} is ${pct(fraction)} of the ${memText(limit)} memory limit (watermark ${pct(memory.highWatermark)})`,
    );
  }
  if (!trigger) return;
  up.triggers.push(trigger);
  const specValue = input.spec.limits.memory ?? limit;
  const max = memory.maxBytes ?? specValue * BigInt(DEFAULTS.maxSpecMultiple);
  // At least the factor; more if the working set already sits above the watermark of the raised limit.
  const wanted = roundUpMiB(
    Math.max(Number(limit) * memory.scaleUpFactor, (ws / memory.highWatermark) * 1.05),
  );
  const next = wanted < max ? wanted : max;
  if (next <= limit) {
    up.capped.push(`memory limit ${memText(limit)} is at its max ${memText(max)}`);
    up.triggers.pop();
    up.reasons.pop();
    return;
  }
  up.memoryLimit = next;
}

interface Down {
  reasons: string[];
  cpuRequest?: number;
  cpuLimit?: number;
  memoryRequest?: bigint;
  memoryLimit?: bigint;
}

/** Floor of a CPU request: the validator refuses less than 100m on a container with no CPU request in its spec. */
function cpuFloor(input: DecideInput, min: number): number {
  return input.spec.requests.cpu === undefined ? Math.max(min, 100) : Math.max(min, 1);
}

function scaleDown(t: Tracker, input: DecideInput): Down | undefined {
  const sd = input.policy.scaleDown;
  if (!sd) return undefined;
  const latest = t.samples[t.samples.length - 1];
  const prev = t.samples[t.samples.length - 2];
  if (!latest || !prev || t.buckets.length === 0) return undefined;
  if (latest.at - t.since < sd.quietWindowMs) return undefined;
  const guaranteed = input.qos === 'Guaranteed';
  // A Guaranteed pod keeps request = limit: lowering one lowers the other, which the policy must allow.
  if (guaranteed && !sd.limits) return undefined;
  const down: Down = { reasons: [] };
  const lowerEnough = (to: number, from: number): boolean => to <= from * (1 - sd.hysteresis) && to < from;
  const quiet = `quiet for ${showMs(sd.quietWindowMs)}`;
  const pName = `p${Math.round(sd.percentile * 100)}`;

  const cpu = input.policy.cpu;
  const cpuReq = input.holding.requests.cpu;
  const cpuLim = input.holding.limits.cpu;
  if (cpu && cpuReq !== undefined) {
    const p = percentileOf(
      t.buckets.map((b) => b.cpuMilli),
      sd.percentile,
    );
    const now = rateMilli(prev, latest);
    const used = Math.max(p, now);
    const floor = cpuFloor(input, cpu.minMilli);
    const request = Math.ceil(Math.max(floor, used * (1 + sd.margin)));
    // A lowered limit keeps the percentile use below the scale-up trigger by the margin.
    const limitTarget = Math.ceil(Math.max(floor, (used * (1 + sd.margin)) / cpu.targetUtilization));
    if (guaranteed && cpuLim !== undefined) {
      if (lowerEnough(limitTarget, cpuLim)) {
        down.cpuRequest = limitTarget;
        down.cpuLimit = limitTarget;
      }
    } else {
      if (lowerEnough(request, cpuReq)) down.cpuRequest = request;
      if (sd.limits && cpuLim !== undefined) {
        const lim = Math.max(limitTarget, down.cpuRequest ?? cpuReq);
        if (lowerEnough(lim, cpuLim)) down.cpuLimit = lim;
      }
    }
    if (down.cpuRequest !== undefined || down.cpuLimit !== undefined) {
      down.reasons.push(`${quiet}: cpu ${pName} ${cpuText(p)}, now ${cpuText(now)}`);
    }
  }

  const memory = input.policy.memory;
  const memReq = input.holding.requests.memory;
  const memLim = input.holding.limits.memory;
  if (memory && memReq !== undefined) {
    const p = percentileOf(
      t.buckets.map((b) => b.workingSet),
      sd.percentile,
    );
    const used = Math.max(p, latest.workingSetBytes);
    const floor = memory.minBytes;
    const atLeast = (b: bigint): bigint => (b > floor ? b : floor);
    const request = atLeast(roundUpMiB(used * (1 + sd.margin)));
    const limitTarget = atLeast(roundUpMiB((used * (1 + sd.margin)) / memory.highWatermark));
    const lower = (to: bigint, from: bigint): boolean => lowerEnough(Number(to), Number(from));
    const before = down.reasons.length;
    if (guaranteed && memLim !== undefined) {
      if (lower(limitTarget, memLim)) {
        down.memoryRequest = limitTarget;
        down.memoryLimit = limitTarget;
      }
    } else {
      if (lower(request, memReq)) down.memoryRequest = request;
      if (sd.limits && memLim !== undefined) {
        const req = down.memoryRequest ?? memReq;
        const lim = limitTarget > req ? limitTarget : req;
        if (lower(lim, memLim)) down.memoryLimit = lim;
      }
    }
    if (
      (down.memoryRequest !== undefined || down.memoryLimit !== undefined) &&
      down.reasons.length === before
    ) {
      down.reasons.push(
        `${quiet}: working set ${pName} ${memText(p)}, now ${memText(latest.workingSetBytes)}`,
      );
    }
  }
  return down.reasons.length > 0 ? down : undefined;
}

function build(
  input: DecideInput,
  direction: 'up' | 'down',
  triggers: Trigger[],
  reasons: string[],
  values: { cpuRequest?: number; cpuLimit?: number; memoryRequest?: bigint; memoryLimit?: bigint },
): ContainerDecision | undefined {
  const { holding } = input;
  const resources: Resources = { requests: { ...holding.requests }, limits: { ...holding.limits } };
  const change: ContainerDecision['change'] = { requests: {}, limits: {} };
  const changes: Change[] = [];
  const set = (resource: 'cpu' | 'memory', kind: 'request' | 'limit', to: number | bigint | undefined) => {
    if (to === undefined) return;
    const side = kind === 'request' ? 'requests' : 'limits';
    const from = holding[side][resource];
    if (from === undefined || from === to) return;
    if (resource === 'cpu') {
      resources[side].cpu = Number(to);
      change[side].cpu = Number(to);
    } else {
      resources[side].memory = BigInt(to);
      change[side].memory = BigInt(to);
    }
    changes.push({ resource, kind, from, to });
  };
  set('cpu', 'limit', values.cpuLimit);
  set('cpu', 'request', values.cpuRequest);
  set('memory', 'limit', values.memoryLimit);
  set('memory', 'request', values.memoryRequest);
  if (changes.length === 0) return undefined;
  const what = changes
    .map((c) => {
      const show = (v: number | bigint) => (c.resource === 'cpu' ? cpuText(Number(v)) : memText(v));
      return `${c.resource} ${c.kind} ${show(c.from)} -> ${show(c.to)}`;
    })
    .join(', ');
  return {
    container: input.container,
    direction,
    triggers,
    resources,
    change,
    changes,
    reason: `${direction === 'up' ? 'raise' : 'lower'} ${what}: ${reasons.join('; ')}`,
  };
}

/**
 * What to do for one container now, if anything. Scale-ups win over scale-downs; CPU and memory triggers
 * that fire together become one decision (one request).
 */
export function decideContainer(t: Tracker, input: DecideInput): DecideResult {
  const up: Up = { triggers: [], reasons: [], capped: [] };
  cpuUp(t, input, up);
  memoryUp(t, input, up);
  const capped = up.capped.length > 0 ? up.capped.join('; ') : undefined;
  if (up.cpuLimit !== undefined || up.memoryLimit !== undefined) {
    const guaranteed = input.qos === 'Guaranteed';
    const decision = build(input, 'up', up.triggers, up.reasons, {
      cpuLimit: up.cpuLimit,
      memoryLimit: up.memoryLimit,
      // QoS: a Guaranteed pod's requests equal its limits, so they move together; a Burstable pod's
      // requests stay where they are (still at or below the raised limit).
      cpuRequest: guaranteed ? up.cpuLimit : undefined,
      memoryRequest: guaranteed ? up.memoryLimit : undefined,
    });
    return { decision, capped };
  }
  // An OOM kill at the max cannot be answered by raising; do not keep it pending forever.
  if (up.capped.some((c) => c.startsWith('memory'))) t.oomPending = false;
  const down = scaleDown(t, input);
  if (down) {
    return { decision: build(input, 'down', ['quiet'], down.reasons, down), capped };
  }
  return { capped };
}

/** Record that a decision was carried out (or recommended): cooldowns start, windows restart. */
export function acted(t: Tracker, d: ContainerDecision, now: number): void {
  for (const c of d.changes) {
    if (d.direction === 'up' && c.kind === 'limit') t.lastUp[c.resource] = now;
  }
  if (d.triggers.includes('oom-kill')) t.oomPending = false;
  resetWindows(t, now);
}
