// LimitRange against resized values. Pure. The API server's LimitRanger admits a pod's spec once, at
// creation; a resize changes what the container really gets without touching the spec, so the same
// per-container (and per-pod) `min`, `max` and `maxLimitRequestRatio` are applied here to the new values.
//
// Only what the resize changes is judged: a container the request leaves alone, or a resource it does not
// touch, may predate a LimitRange written later, and refusing an unrelated resize for it would help no one.
// Defaults (`default`, `defaultRequest`) only fill in a spec at creation and play no part.
import { parseCpuMillicores, parseMemoryBytes, parseQuantity } from './quantity.ts';
import type { Resources } from './pod.ts';
import type { DesiredContainer } from './validate.ts';
import { ResizableResources, type ResizableResource } from './vocabulary.ts';

/** The fields of a v1 LimitRange this module reads; a client-node V1LimitRange fits. */
export interface LimitRangeLike {
  metadata?: { name?: string; namespace?: string };
  spec?: {
    limits?: Array<{
      type?: string;
      min?: Record<string, string | number | undefined>;
      max?: Record<string, string | number | undefined>;
      maxLimitRequestRatio?: Record<string, string | number | undefined>;
    }>;
  };
}

export type LimitRangeVerdict = { ok: true } | { ok: false; limitRange: string; message: string };

export interface LimitRangeInput {
  limitRanges: readonly LimitRangeLike[];
  /** Every app container after the resize, in pod order. */
  desired: readonly DesiredContainer[];
  /** What each container holds before the resize (to see which values change). */
  current: ReadonlyMap<string, Resources>;
}

type Side = 'requests' | 'limits';

/** A value in the resource's unit (millicores, bytes) as a bigint; undefined when absent or malformed. */
function amount(r: ResizableResource, v: string | number | undefined): bigint | undefined {
  if (v === undefined) return undefined;
  try {
    return r === 'cpu' ? BigInt(parseCpuMillicores(String(v))) : parseMemoryBytes(String(v));
  } catch {
    // The API server validated the LimitRange; a value we cannot read is not enforced rather than fatal.
    return undefined;
  }
}

/** A ratio in nano-units (1.5 -> 1_500_000_000n), so limit * 1e9 <= ratio * request stays exact. */
function ratioNanos(v: string | number | undefined): bigint | undefined {
  if (v === undefined) return undefined;
  try {
    const r = parseQuantity(String(v)).nanos;
    return r > 0n ? r : undefined;
  } catch {
    return undefined;
  }
}

const value = (res: Resources, side: Side, r: ResizableResource): bigint | undefined => {
  const v = res[side][r];
  return v === undefined ? undefined : BigInt(v);
};

function show(r: ResizableResource, v: bigint): string {
  if (r === 'cpu') return v % 1000n === 0n ? `${v / 1000n}` : `${v}m`;
  const Mi = 1024n * 1024n;
  return v % Mi === 0n ? `${v / Mi}Mi` : `${v}`;
}

function showRatio(nanos: bigint): string {
  const whole = nanos / 1_000_000_000n;
  const frac = (nanos % 1_000_000_000n).toString().padStart(9, '0').replace(/0+$/, '');
  return frac ? `${whole}.${frac}` : `${whole}`;
}

const sideName = (side: Side): string => (side === 'requests' ? 'request' : 'limit');

interface Bounds {
  name: string;
  min?: Record<string, string | number | undefined>;
  max?: Record<string, string | number | undefined>;
  ratio?: Record<string, string | number | undefined>;
}

/** min/max/ratio of one resource against one set of values; a message when broken. */
function checkBounds(
  where: string,
  r: ResizableResource,
  values: { requests: bigint | undefined; limits: bigint | undefined },
  b: Bounds,
): string | undefined {
  const lr = `LimitRange ${JSON.stringify(b.name)}`;
  const min = amount(r, b.min?.[r]);
  const max = amount(r, b.max?.[r]);
  for (const side of ['requests', 'limits'] as const) {
    const v = values[side];
    if (v === undefined) continue;
    if (min !== undefined && v < min) {
      return `${where}: ${r} ${sideName(side)} ${show(r, v)} is below the minimum ${show(r, min)} of ${lr}`;
    }
    if (max !== undefined && v > max) {
      return `${where}: ${r} ${sideName(side)} ${show(r, v)} is above the maximum ${show(r, max)} of ${lr}`;
    }
  }
  const ratio = ratioNanos(b.ratio?.[r]);
  const { requests: req, limits: lim } = values;
  if (ratio !== undefined && req !== undefined && lim !== undefined && req > 0n) {
    if (lim * 1_000_000_000n > ratio * req) {
      return `${where}: ${r} limit ${show(r, lim)} is more than ${showRatio(ratio)} times its request ${show(r, req)} (maxLimitRequestRatio of ${lr})`;
    }
  }
  return undefined;
}

function changedResources(before: Resources | undefined, after: Resources): ResizableResource[] {
  return ResizableResources.filter(
    (r) =>
      before === undefined ||
      before.requests[r] !== after.requests[r] ||
      before.limits[r] !== after.limits[r],
  );
}

/** The first LimitRange rule the resized values break, in LimitRange then container order. */
export function checkLimitRanges(input: LimitRangeInput): LimitRangeVerdict {
  const { limitRanges, desired, current } = input;
  const changes = desired.map((d) => ({ d, resources: changedResources(current.get(d.name), d.resources) }));
  const podChanged = new Set(changes.flatMap((c) => c.resources));
  if (podChanged.size === 0) return { ok: true };
  for (const range of limitRanges) {
    const name = range.metadata?.name ?? '';
    for (const item of range.spec?.limits ?? []) {
      if (!item || typeof item !== 'object') continue;
      const bounds: Bounds = { name, min: item.min, max: item.max, ratio: item.maxLimitRequestRatio };
      if (item.type === 'Container') {
        for (const { d, resources } of changes) {
          for (const r of resources) {
            const broken = checkBounds(
              `container ${JSON.stringify(d.name)}`,
              r,
              { requests: value(d.resources, 'requests', r), limits: value(d.resources, 'limits', r) },
              bounds,
            );
            if (broken) return { ok: false, limitRange: name, message: broken };
          }
        }
      } else if (item.type === 'Pod') {
        // The pod's totals, as LimitRanger sums them; a total only exists when every container sets it.
        for (const r of podChanged) {
          const total = (side: Side): bigint | undefined => {
            let sum = 0n;
            for (const d of desired) {
              const v = value(d.resources, side, r);
              if (v === undefined) return undefined;
              sum += v;
            }
            return sum;
          };
          const broken = checkBounds(
            'the pod',
            r,
            { requests: total('requests'), limits: total('limits') },
            bounds,
          );
          if (broken) return { ok: false, limitRange: name, message: broken };
        }
      }
    }
  }
  return { ok: true };
}
