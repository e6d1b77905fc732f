// The autoscaling policy annotation (`resizelet.io/autoscale`): JSON checked by a schema (ajv), then read
// into typed, defaulted values in integer units (millicores, bytes, milliseconds). Pure. Every refusal is a
// sentence a pod owner can act on; the sampler reports it on the pod (an Event), it never crashes or guesses.
//
//   {"cpu":{"max":"2"},"memory":{"max":"1Gi"},"scaleDown":{"quietWindow":"10m"}}          every container
//   {"mode":"Recommend","containers":{"app":{"cpu":{"max":"2"}},"*":{"mode":"Off"}}}       per container
//
// Without `containers` the policy applies to every container. With it, only the named containers (and every
// other one when "*" is named) are autoscaled, each with its entry merged field by field over the top-level
// fields. `cpu` and `memory` are on unless set to false; `scaleDown` is off unless given (it lowers what the
// pod's owner asked for, so it is opted into).
import { Ajv, type ErrorObject } from 'ajv';
import { QuantityError, parseCpuMillicores, parseMemoryBytes } from '../resize/quantity.ts';

export const AutoscaleModes = ['Auto', 'Recommend', 'Off'] as const;
export type AutoscaleMode = (typeof AutoscaleModes)[number];

export interface CpuPolicy {
  /** Fraction of the CPU limit that, held over `windowMs`, raises the limit. */
  targetUtilization: number;
  windowMs: number;
  scaleUpFactor: number;
  /** Upper bound of what the autoscaler asks for; undefined = 4x the pod spec's value. */
  maxMilli: number | undefined;
  /** Lower bound for scale-down. */
  minMilli: number;
  /** Least time between two CPU scale-ups of one container. */
  cooldownMs: number;
  /** Throttled periods / periods over the window that also raises the limit; null = not a trigger. */
  throttledRatio: number | null;
}

export interface MemoryPolicy {
  /** Fraction of the memory limit the working set may reach before the limit is raised. */
  highWatermark: number;
  scaleUpFactor: number;
  maxBytes: bigint | undefined;
  minBytes: bigint;
  cooldownMs: number;
}

export interface ScaleDownPolicy {
  /** How long usage must have been recorded (since the last change) before anything is lowered. */
  quietWindowMs: number;
  /** Usage percentile over the quiet window the request is lowered toward (0.95 = p95). */
  percentile: number;
  /** Headroom over the percentile and over current usage: 0.15 = 15 %. */
  margin: number;
  /** Lower only when the new value is at least this fraction below the current one. */
  hysteresis: number;
  /** Also lower limits (never below the lowered request); Guaranteed pods are only lowered when true. */
  limits: boolean;
}

export interface ContainerPolicy {
  mode: AutoscaleMode;
  cpu: CpuPolicy | null;
  memory: MemoryPolicy | null;
  scaleDown: ScaleDownPolicy | null;
}

export interface AutoscalePolicy {
  /** Policy for containers not named in `containers` ("*" or the top level); undefined = not autoscaled. */
  rest: ContainerPolicy | undefined;
  containers: Map<string, ContainerPolicy>;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; message: string };

export const DEFAULTS = {
  mode: 'Auto',
  cpu: {
    targetUtilization: 0.8,
    window: '2s',
    scaleUpFactor: 2,
    min: '25m',
    cooldown: '5s',
    throttledRatio: 0.25,
  },
  memory: { highWatermark: 0.9, scaleUpFactor: 2, min: '64Mi', cooldown: '0s' },
  scaleDown: { quietWindow: '5m', percentile: 0.95, margin: 0.15, hysteresis: 0.2, limits: false },
  /** Without `max`, the autoscaler stops at this multiple of the pod spec's value. */
  maxSpecMultiple: 4,
} as const;

export const MAX_POLICY_BYTES = 16 * 1024;

const duration = { type: 'string' } as const;
const quantity = { type: ['string', 'number'] } as const;
const fraction = { type: 'number', exclusiveMinimum: 0, maximum: 1 } as const;
const factor = { type: 'number', exclusiveMinimum: 1, maximum: 16 } as const;

const CPU_FIELDS = [
  'targetUtilization',
  'window',
  'scaleUpFactor',
  'max',
  'min',
  'cooldown',
  'throttledRatio',
] as const;
const MEMORY_FIELDS = ['highWatermark', 'scaleUpFactor', 'max', 'min', 'cooldown'] as const;
const SCALE_DOWN_FIELDS = ['quietWindow', 'percentile', 'margin', 'hysteresis', 'limits'] as const;
const POLICY_FIELDS = ['mode', 'cpu', 'memory', 'scaleDown'] as const;

const cpuSchema = {
  type: ['object', 'boolean'],
  properties: {
    targetUtilization: fraction,
    window: duration,
    scaleUpFactor: factor,
    max: quantity,
    min: quantity,
    cooldown: duration,
    throttledRatio: { type: ['number', 'boolean'], minimum: 0, maximum: 1 },
  },
  additionalProperties: false,
} as const;
const memorySchema = {
  type: ['object', 'boolean'],
  properties: {
    highWatermark: { type: 'number', exclusiveMinimum: 0, exclusiveMaximum: 1 },
    scaleUpFactor: factor,
    max: quantity,
    min: quantity,
    cooldown: duration,
  },
  additionalProperties: false,
} as const;
const scaleDownSchema = {
  type: ['object', 'boolean'],
  properties: {
    quietWindow: duration,
    percentile: { type: 'number', minimum: 0.5, maximum: 1 },
    margin: { type: 'number', minimum: 0, maximum: 10 },
    hysteresis: { type: 'number', minimum: 0, maximum: 0.9 },
    limits: { type: 'boolean' },
  },
  additionalProperties: false,
} as const;
const containerSchema = {
  type: 'object',
  properties: {
    mode: { enum: [...AutoscaleModes] },
    cpu: cpuSchema,
    memory: memorySchema,
    scaleDown: scaleDownSchema,
  },
  additionalProperties: false,
} as const;
const policySchema = {
  type: 'object',
  properties: {
    ...containerSchema.properties,
    containers: {
      type: 'object',
      // Container names are DNS-1123 labels; "*" stands for every container not named.
      propertyNames: { pattern: '^(?:\\*|[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)$' },
      additionalProperties: containerSchema,
      maxProperties: 64,
    },
  },
  additionalProperties: false,
} as const;

const ajv = new Ajv({ allErrors: false, strict: true, allowUnionTypes: true });
const validateShape = ajv.compile(policySchema);

/** "/containers/app/cpu/window" -> ["containers", "app", "cpu", "window"], undoing JSON Pointer escapes. */
function pointer(path: string): string[] {
  return path
    .split('/')
    .slice(1)
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
}

/** "containers.app.cpu" style, with the container name quoted: what a pod owner would look for. */
function where(parts: string[]): string {
  if (parts[0] === 'containers' && parts.length >= 2) {
    const rest = parts.slice(2);
    return `container ${JSON.stringify(parts[1])}${rest.length > 0 ? ` ${rest.join('.')}` : ''}`;
  }
  return parts.length > 0 ? parts.join('.') : 'the policy';
}

/** Edit distance of at most 2 (or a case-only difference): the likely intended field. */
function closest(word: string, candidates: readonly string[]): string | undefined {
  const lower = word.toLowerCase();
  for (const c of candidates) if (c.toLowerCase() === lower) return c;
  let best: { c: string; d: number } | undefined;
  for (const c of candidates) {
    const d = levenshtein(lower, c.toLowerCase());
    if (d <= 2 && (!best || d < best.d)) best = { c, d };
  }
  return best?.c;
}

function levenshtein(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length]!;
}

function fieldsAt(parts: string[]): readonly string[] {
  const last = parts[parts.length - 1];
  if (parts.length === 0) return [...POLICY_FIELDS, 'containers'];
  if (last === 'cpu') return CPU_FIELDS;
  if (last === 'memory') return MEMORY_FIELDS;
  if (last === 'scaleDown') return SCALE_DOWN_FIELDS;
  return POLICY_FIELDS;
}

function describeShapeError(e: ErrorObject): string {
  const parts = pointer(e.instancePath);
  const at = where(parts);
  const field = parts[parts.length - 1] ?? '';
  switch (e.keyword) {
    case 'additionalProperties': {
      const extra = String((e.params as { additionalProperty: string }).additionalProperty);
      const known = fieldsAt(parts);
      const guess = closest(extra, known);
      const hint = guess ? ` (did you mean ${JSON.stringify(guess)}?)` : ` (known: ${known.join(', ')})`;
      const on = parts.length === 0 ? 'the policy' : at;
      return `${on}: unknown field ${JSON.stringify(extra)}${hint}`;
    }
    case 'propertyNames':
    case 'pattern': {
      // ajv reports a bad key as a `pattern` error carrying the key as `propertyName`.
      const name = (e as { propertyName?: string }).propertyName ?? field;
      return `containers: ${JSON.stringify(name)} is not a container name (lowercase letters, digits and "-"), nor "*" for every other container`;
    }
    case 'maxProperties':
      return `containers: at most 64 containers can be named`;
    case 'enum':
      return `${at} must be one of ${AutoscaleModes.join(', ')}`;
    case 'type': {
      if (parts.length === 0) return 'the policy must be a JSON object such as {"cpu":{"max":"2"}}';
      if (field === 'cpu' || field === 'memory' || field === 'scaleDown') {
        return `${at} must be an object of settings (or false to turn it off)`;
      }
      if (field === 'containers') return 'containers must be an object keyed by container name';
      if (parts[0] === 'containers' && parts.length === 2) return `${at} must be an object`;
      if (field === 'max' || field === 'min') return `${at} must be a quantity such as "500m" or "1Gi"`;
      if (field === 'window' || field === 'cooldown' || field === 'quietWindow') {
        return `${at} must be a duration string such as "2s" or "5m"`;
      }
      if (field === 'limits') return `${at} must be true or false`;
      if (field === 'throttledRatio') return `${at} must be a fraction between 0 and 1, or false`;
      return `${at} must be a number`;
    }
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum':
      return `${at} ${rangeText(field)}`;
    default:
      return `${at}: ${e.message ?? 'invalid'}`;
  }
}

function rangeText(field: string): string {
  switch (field) {
    case 'targetUtilization':
      return 'must be a fraction of the limit above 0 and at most 1 (0.8 means 80 %)';
    case 'highWatermark':
      return 'must be a fraction of the limit above 0 and below 1 (0.9 means 90 %)';
    case 'throttledRatio':
      return 'must be a fraction of CFS periods between 0 and 1 (0.25 means a quarter of them)';
    case 'scaleUpFactor':
      return 'must be above 1 and at most 16 (2 doubles)';
    case 'percentile':
      return 'must be between 0.5 and 1 (0.95 means p95)';
    case 'margin':
      return 'must be between 0 and 10 (0.15 means 15 % headroom)';
    case 'hysteresis':
      return 'must be between 0 and 0.9 (0.2 means act only on a change of at least 20 %)';
    default:
      return 'is out of range';
  }
}

class PolicyError extends Error {}

const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const;

/** "500ms", "2s", "1.5m", "1h" -> milliseconds, within [minMs, maxMs]. */
export function parseDurationMs(text: string, at: string, minMs: number, maxMs: number): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(text);
  if (!m) {
    const bare = /^\d+(?:\.\d+)?$/.test(text) ? ' (a unit is required)' : '';
    throw new PolicyError(
      `${at}: ${JSON.stringify(text)} is not a duration${bare}; write e.g. "500ms", "2s", "5m" or "1h"`,
    );
  }
  const ms = Math.round(Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS]);
  if (ms < minMs || ms > maxMs) {
    throw new PolicyError(`${at}: ${text} is outside ${showMs(minMs)}..${showMs(maxMs)}`);
  }
  return ms;
}

function showMs(ms: number): string {
  if (ms === 0) return '0s';
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1_000 === 0) return `${ms / 1_000}s`;
  return `${ms}ms`;
}

function cpuQuantity(v: string | number, at: string): number {
  try {
    const n = parseCpuMillicores(String(v));
    if (n <= 0) throw new PolicyError(`${at} must be positive`);
    return n;
  } catch (err) {
    if (err instanceof QuantityError) throw new PolicyError(`${at}: ${err.message}`);
    throw err;
  }
}

function memoryQuantity(v: string | number, at: string): bigint {
  try {
    const n = parseMemoryBytes(String(v));
    if (n <= 0n) throw new PolicyError(`${at} must be positive`);
    return n;
  } catch (err) {
    if (err instanceof QuantityError) throw new PolicyError(`${at}: ${err.message}`);
    throw err;
  }
}

type RawSection = Record<string, unknown> | boolean | undefined;
interface RawContainer {
  mode?: AutoscaleMode;
  cpu?: RawSection;
  memory?: RawSection;
  scaleDown?: RawSection;
}

/** Field-by-field merge of a container's entry over the top level; `false` in either switches a section off. */
function mergeSection(top: RawSection, own: RawSection): RawSection {
  if (own === undefined) return top;
  if (own === false || own === true) return own;
  if (top === undefined || top === false || top === true) return own;
  return { ...top, ...own };
}

const sectionOf = (s: RawSection): Record<string, unknown> => (typeof s === 'object' ? s : {});

function readCpu(raw: RawSection, at: string): CpuPolicy | null {
  if (raw === false) return null;
  const s = sectionOf(raw);
  const d = DEFAULTS.cpu;
  const p = `${at}cpu`;
  const maxMilli = s.max === undefined ? undefined : cpuQuantity(s.max as string, `${p}.max`);
  const minMilli = cpuQuantity((s.min as string | undefined) ?? d.min, `${p}.min`);
  if (maxMilli !== undefined && minMilli > maxMilli) {
    throw new PolicyError(`${p}: min ${String(s.min)} is above max ${String(s.max)}`);
  }
  const tr = s.throttledRatio as number | boolean | undefined;
  return {
    targetUtilization: (s.targetUtilization as number | undefined) ?? d.targetUtilization,
    windowMs: parseDurationMs((s.window as string | undefined) ?? d.window, `${p}.window`, 1_000, 3_600_000),
    scaleUpFactor: (s.scaleUpFactor as number | undefined) ?? d.scaleUpFactor,
    maxMilli,
    minMilli,
    cooldownMs: parseDurationMs(
      (s.cooldown as string | undefined) ?? d.cooldown,
      `${p}.cooldown`,
      0,
      86_400_000,
    ),
    throttledRatio:
      tr === false ? null : tr === true || tr === undefined ? d.throttledRatio : tr === 0 ? null : tr,
  };
}

function readMemory(raw: RawSection, at: string): MemoryPolicy | null {
  if (raw === false) return null;
  const s = sectionOf(raw);
  const d = DEFAULTS.memory;
  const p = `${at}memory`;
  const maxBytes = s.max === undefined ? undefined : memoryQuantity(s.max as string, `${p}.max`);
  const minBytes = memoryQuantity((s.min as string | undefined) ?? d.min, `${p}.min`);
  if (maxBytes !== undefined && minBytes > maxBytes) {
    throw new PolicyError(`${p}: min ${String(s.min)} is above max ${String(s.max)}`);
  }
  return {
    highWatermark: (s.highWatermark as number | undefined) ?? d.highWatermark,
    scaleUpFactor: (s.scaleUpFactor as number | undefined) ?? d.scaleUpFactor,
    maxBytes,
    minBytes,
    cooldownMs: parseDurationMs(
      (s.cooldown as string | undefined) ?? d.cooldown,
      `${p}.cooldown`,
      0,
      86_400_000,
    ),
  };
}

function readScaleDown(raw: RawSection, at: string): ScaleDownPolicy | null {
  if (raw === undefined || raw === false) return null;
  const s = sectionOf(raw);
  const d = DEFAULTS.scaleDown;
  return {
    quietWindowMs: parseDurationMs(
      (s.quietWindow as string | undefined) ?? d.quietWindow,
      `${at}scaleDown.quietWindow`,
      1_000,
      7 * 86_400_000,
    ),
    percentile: (s.percentile as number | undefined) ?? d.percentile,
    margin: (s.margin as number | undefined) ?? d.margin,
    hysteresis: (s.hysteresis as number | undefined) ?? d.hysteresis,
    limits: (s.limits as boolean | undefined) ?? d.limits,
  };
}

function readContainer(raw: RawContainer, at: string): ContainerPolicy {
  return {
    mode: raw.mode ?? DEFAULTS.mode,
    cpu: readCpu(raw.cpu, at),
    memory: readMemory(raw.memory, at),
    scaleDown: readScaleDown(raw.scaleDown, at),
  };
}

export function parseAutoscalePolicy(text: string): Parsed<AutoscalePolicy> {
  if (text.length > MAX_POLICY_BYTES) {
    return {
      ok: false,
      message: `the policy is ${text.length} bytes; at most ${MAX_POLICY_BYTES} are accepted`,
    };
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return { ok: false, message: `the policy is not valid JSON: ${(err as Error).message}` };
  }
  if (!validateShape(raw)) {
    const first = validateShape.errors?.[0];
    return { ok: false, message: first ? describeShapeError(first) : 'the policy is malformed' };
  }
  const top = raw as RawContainer & { containers?: Record<string, RawContainer> };
  try {
    const merged = (own: RawContainer): RawContainer => ({
      mode: own.mode ?? top.mode,
      cpu: mergeSection(top.cpu, own.cpu),
      memory: mergeSection(top.memory, own.memory),
      scaleDown: mergeSection(top.scaleDown, own.scaleDown),
    });
    if (top.containers === undefined) {
      return { ok: true, value: { rest: readContainer(top, ''), containers: new Map() } };
    }
    const containers = new Map<string, ContainerPolicy>();
    let rest: ContainerPolicy | undefined;
    for (const [name, own] of Object.entries(top.containers)) {
      const policy = readContainer(merged(own), `container ${JSON.stringify(name)} `);
      if (name === '*') rest = policy;
      else containers.set(name, policy);
    }
    // Checked even when no container uses it, so a typo at the top level is never silently ignored.
    readContainer(top, '');
    return { ok: true, value: { rest, containers } };
  } catch (err) {
    if (err instanceof PolicyError) return { ok: false, message: err.message };
    throw err;
  }
}

/** The policy for one container, or undefined when it is not autoscaled (unnamed, or mode Off). */
export function policyFor(policy: AutoscalePolicy, container: string): ContainerPolicy | undefined {
  const p = policy.containers.get(container) ?? policy.rest;
  return p && p.mode !== 'Off' ? p : undefined;
}
