// Parsing the request annotation (`resizelet.io/resize`) and the policy annotation. Structure is checked
// by a JSON schema (ajv); each schema failure is translated into a sentence a pod owner can act on.
// Pure apart from hashing.
import { createHash } from 'node:crypto';
import { Ajv, type ErrorObject } from 'ajv';
import { QuantityError, parseCpuMillicores, parseMemoryBytes } from './quantity.ts';
import type { ResourceValues } from './pod.ts';
import {
  ResizableResources,
  RestartPolicies,
  type RestartPolicy,
  type ResizableResource,
} from './vocabulary.ts';

/** A request annotation larger than this is refused unread: it can only be a mistake or an attack. */
export const MAX_REQUEST_BYTES = 16 * 1024;
/** Kubernetes caps a pod's containers well below this; the cap bounds work on hostile input. */
const MAX_CONTAINERS = 64;

export interface ContainerChange {
  requests: ResourceValues;
  limits: ResourceValues;
}

/** Containers in the order the request names them; a Map so keys like `__proto__` stay plain data. */
export type ResizeRequest = Map<string, ContainerChange>;

export type Parsed<T> = { ok: true; value: T } | { ok: false; message: string };

const quantityValue = { type: ['string', 'number'] } as const;
const side = {
  type: 'object',
  properties: { cpu: quantityValue, memory: quantityValue },
  additionalProperties: false,
} as const;

const requestSchema = {
  type: 'object',
  minProperties: 1,
  maxProperties: MAX_CONTAINERS,
  additionalProperties: {
    type: 'object',
    properties: { requests: side, limits: side },
    additionalProperties: false,
    minProperties: 1,
  },
} as const;

const policySchema = {
  type: 'object',
  properties: {
    cpu: { enum: [...RestartPolicies] },
    memory: { enum: [...RestartPolicies] },
  },
  additionalProperties: false,
} as const;

const ajv = new Ajv({ allErrors: false, strict: true, allowUnionTypes: true });
const validateRequestShape = ajv.compile(requestSchema);
const validatePolicyShape = ajv.compile(policySchema);

/** "/app/limits/gpu" -> ["app", "limits", "gpu"], undoing JSON Pointer escapes. */
function pointer(path: string): string[] {
  return path
    .split('/')
    .slice(1)
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function describeRequestError(e: ErrorObject): string {
  const [container, sideName] = pointer(e.instancePath);
  const where = container === undefined ? 'the request' : `container ${JSON.stringify(container)}`;
  switch (e.keyword) {
    case 'additionalProperties': {
      const extra = String((e.params as { additionalProperty: string }).additionalProperty);
      if (sideName !== undefined) {
        return `${where}: only cpu and memory can be resized in place, not ${JSON.stringify(extra)}`;
      }
      return `${where}: unknown field ${JSON.stringify(extra)} (expected "requests" and/or "limits")`;
    }
    case 'minProperties':
      return container === undefined
        ? 'the request names no container'
        : `${where}: nothing to change (give "requests" and/or "limits")`;
    case 'maxProperties':
      return `the request names more than ${MAX_CONTAINERS} containers`;
    case 'type':
      if (container === undefined) return 'the request must be a JSON object keyed by container name';
      if (sideName === undefined) return `${where}: must be an object with "requests" and/or "limits"`;
      if (pointer(e.instancePath).length === 2) return `${where}: ${sideName} must be an object`;
      return `${where}: ${sideName} values must be quantity strings such as "500m" or "256Mi"`;
    default:
      return `${where}: ${e.message ?? 'invalid'}`;
  }
}

function parseValue(
  container: string,
  sideName: string,
  r: ResizableResource,
  v: string | number,
): number | bigint {
  const text = String(v);
  try {
    return r === 'cpu' ? parseCpuMillicores(text) : parseMemoryBytes(text);
  } catch (err) {
    const detail = err instanceof QuantityError ? err.message : String(err);
    throw new RequestError(`container ${JSON.stringify(container)}: ${sideName}.${r}: ${detail}`);
  }
}

class RequestError extends Error {}

export function parseResizeRequest(text: string): Parsed<ResizeRequest> {
  if (text.length > MAX_REQUEST_BYTES) {
    return {
      ok: false,
      message: `the request is ${text.length} bytes; at most ${MAX_REQUEST_BYTES} are accepted`,
    };
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return { ok: false, message: `the request is not valid JSON: ${(err as Error).message}` };
  }
  if (!validateRequestShape(raw)) {
    const first = validateRequestShape.errors?.[0];
    return { ok: false, message: first ? describeRequestError(first) : 'the request is malformed' };
  }
  const out: ResizeRequest = new Map();
  try {
    for (const [container, change] of Object.entries(raw as Record<string, Record<string, unknown>>)) {
      const parsed: ContainerChange = { requests: {}, limits: {} };
      for (const sideName of ['requests', 'limits'] as const) {
        const values = (change[sideName] ?? {}) as Record<string, string | number>;
        for (const r of ResizableResources) {
          const v = values[r];
          if (v === undefined) continue;
          const n = parseValue(container, sideName, r, v);
          if (r === 'cpu') parsed[sideName].cpu = n as number;
          else parsed[sideName].memory = n as bigint;
        }
      }
      out.set(container, parsed);
    }
  } catch (err) {
    if (err instanceof RequestError) return { ok: false, message: err.message };
    throw err;
  }
  return { ok: true, value: out };
}

export type ResizePolicy = Record<ResizableResource, RestartPolicy>;

export function parseResizePolicy(text: string | undefined): Parsed<ResizePolicy> {
  const policy: ResizePolicy = { cpu: 'NotRequired', memory: 'NotRequired' };
  if (text === undefined || text.trim() === '') return { ok: true, value: policy };
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return { ok: false, message: `the resize policy is not valid JSON: ${(err as Error).message}` };
  }
  if (!validatePolicyShape(raw)) {
    const e = validatePolicyShape.errors?.[0];
    if (e?.keyword === 'enum') {
      return {
        ok: false,
        message: `the resize policy for ${pointer(e.instancePath).join('.')} must be one of ${RestartPolicies.join(', ')}`,
      };
    }
    if (e?.keyword === 'additionalProperties') {
      const extra = String((e.params as { additionalProperty: string }).additionalProperty);
      return {
        ok: false,
        message: `the resize policy names ${JSON.stringify(extra)}; only cpu and memory have one`,
      };
    }
    return {
      ok: false,
      message: 'the resize policy must be an object such as {"memory":"RestartContainer"}',
    };
  }
  return { ok: true, value: { ...policy, ...(raw as Partial<ResizePolicy>) } };
}

/**
 * Identifies a request: the status carries it as `observedRequest`, so the agent knows which request a status
 * answers and a re-applied identical annotation is not judged twice.
 */
export function requestHash(text: string): string {
  return createHash('sha256').update(text.trim()).digest('hex').slice(0, 16);
}
