// The status annotation (`resizelet.io/resource-status`): a superset of TKE's
// `tke.cloud.tencent.com/resource-status`. Encoding and tolerant decoding; pure.
import { formatBytes, formatMillicores, parseCpuMillicores, parseMemoryBytes } from './quantity.ts';
import type { Resources, ResourceValues } from './pod.ts';
import { ResizeStatuses, type ResizeStatus } from './vocabulary.ts';

export interface WireResourceValues {
  cpu?: string;
  memory?: string;
}

export interface WireAllocation {
  name: string;
  requests: WireResourceValues;
  limits: WireResourceValues;
}

export interface ResourceStatus {
  resizeStatus: ResizeStatus;
  /** What the agent has allocated to each container, in container order. */
  allocatedResources: WireAllocation[];
  /** Hash of the request annotation this status answers (see requestHash). */
  observedRequest?: string;
  message?: string;
  /** RFC 3339, when resizeStatus last changed. */
  lastTransitionTime: string;
  /** `autoscaler` when the request came from resizelet's autoscaler. */
  source?: string;
  /** Autoscaler recommendation in Recommend mode (container -> resources). */
  recommendation?: WireAllocation[];
}

function wireSide(v: ResourceValues): WireResourceValues {
  const out: WireResourceValues = {};
  if (v.cpu !== undefined) out.cpu = formatMillicores(v.cpu);
  if (v.memory !== undefined) out.memory = formatBytes(v.memory);
  return out;
}

export function toWireAllocation(name: string, r: Resources): WireAllocation {
  return { name, requests: wireSide(r.requests), limits: wireSide(r.limits) };
}

function fromWireSide(v: unknown): ResourceValues | undefined {
  if (v === undefined) return {};
  if (v === null || typeof v !== 'object') return undefined;
  const side = v as Record<string, unknown>;
  const out: ResourceValues = {};
  try {
    if (typeof side.cpu === 'string') out.cpu = parseCpuMillicores(side.cpu);
    if (typeof side.memory === 'string') out.memory = parseMemoryBytes(side.memory);
  } catch {
    return undefined;
  }
  return out;
}

/**
 * Decode the allocation map of a status. Returns undefined for anything malformed: the annotation is
 * writable by pod owners, so a garbled one must read as "no allocation", never crash the agent.
 */
export function allocationsFrom(status: ResourceStatus | undefined): Map<string, Resources> | undefined {
  if (!status || !Array.isArray(status.allocatedResources)) return undefined;
  const out = new Map<string, Resources>();
  for (const a of status.allocatedResources as unknown[]) {
    if (!a || typeof a !== 'object') return undefined;
    const entry = a as Record<string, unknown>;
    if (typeof entry.name !== 'string') return undefined;
    const requests = fromWireSide(entry.requests);
    const limits = fromWireSide(entry.limits);
    if (!requests || !limits) return undefined;
    out.set(entry.name, { requests, limits });
  }
  return out;
}

const statusValues = new Set<string>(Object.values(ResizeStatuses));

export function decodeStatus(text: string | undefined): ResourceStatus | undefined {
  if (text === undefined || text.length > 64 * 1024) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) return undefined;
  const s = parsed as Record<string, unknown>;
  if (typeof s.resizeStatus !== 'string' || !statusValues.has(s.resizeStatus)) return undefined;
  return {
    resizeStatus: s.resizeStatus as ResizeStatus,
    allocatedResources: Array.isArray(s.allocatedResources) ? (s.allocatedResources as WireAllocation[]) : [],
    observedRequest: typeof s.observedRequest === 'string' ? s.observedRequest : undefined,
    message: typeof s.message === 'string' ? s.message : undefined,
    lastTransitionTime: typeof s.lastTransitionTime === 'string' ? s.lastTransitionTime : '',
    source: typeof s.source === 'string' ? s.source : undefined,
    recommendation: Array.isArray(s.recommendation) ? (s.recommendation as WireAllocation[]) : undefined,
  };
}

/** Stable JSON (fixed key order) so equal statuses encode to equal strings and patches can be skipped. */
export function encodeStatus(s: ResourceStatus): string {
  const out: Record<string, unknown> = {
    resizeStatus: s.resizeStatus,
    allocatedResources: s.allocatedResources,
  };
  if (s.observedRequest !== undefined) out.observedRequest = s.observedRequest;
  if (s.message !== undefined) out.message = s.message;
  out.lastTransitionTime = s.lastTransitionTime;
  if (s.source !== undefined) out.source = s.source;
  if (s.recommendation !== undefined) out.recommendation = s.recommendation;
  return JSON.stringify(out);
}
