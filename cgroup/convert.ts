// Pure unit conversions between Kubernetes resources and cgroup values, following the kubelet
// (pkg/kubelet/cm/helpers_linux.go) and the OCI runtimes. No I/O.
import type { WeightFormula } from './types.ts';

/** The kernel's and kubelet's bounds for v1 `cpu.shares`. */
export const MIN_SHARES = 2;
export const MAX_SHARES = 262_144;
export const SHARES_PER_CPU = 1024;

/** Default CFS period. The kubelet can be configured otherwise (--cpu-cfs-quota-period); we use the live one. */
export const DEFAULT_CPU_PERIOD_US = 100_000;
/**
 * The kubelet never sets a quota below 1 ms: the kernel refuses quotas under 1000 us with EINVAL, and such
 * a small slice would throttle a container on nearly every period anyway.
 */
export const MIN_CPU_QUOTA_US = 1_000;

/** The v2 weight range (cgroup-v2.rst: "cpu.weight ... in the range [1, 10000]"). */
export const MIN_WEIGHT = 1;
export const MAX_WEIGHT = 10_000;

/**
 * v1 reports "unlimited" as the largest page-aligned signed 64-bit value (LONG_MAX rounded down to 4 KiB),
 * not -1, when read back. Writing -1 is how one asks for it.
 */
export const V1_MEMORY_UNLIMITED = 9_223_372_036_854_771_712n;

/** millicores -> v1 shares, as the kubelet's MilliCPUToShares: integer division, clamped. */
export function sharesFromMillicores(milli: number | null): number {
  // A container with no CPU request gets the minimum, not zero: zero would mean "use the parent's default".
  if (milli === null || milli <= 0) return MIN_SHARES;
  const shares = Math.floor((milli * SHARES_PER_CPU) / 1000);
  return Math.min(MAX_SHARES, Math.max(MIN_SHARES, shares));
}

/** millicores -> CFS quota in microseconds for a period, as the kubelet's MilliCPUToQuota. null = no limit. */
export function quotaFromMillicores(
  milli: number | null,
  periodUs: number = DEFAULT_CPU_PERIOD_US,
): number | null {
  if (milli === null || milli <= 0) return null;
  const quota = Math.floor((milli * periodUs) / 1000);
  return Math.max(quota, MIN_CPU_QUOTA_US);
}

/** The inverse, for display and metrics: the CPU limit a quota grants, in millicores. */
export function millicoresFromQuota(quotaUs: number | null, periodUs: number): number | null {
  if (quotaUs === null) return null;
  return Math.round((quotaUs * 1000) / periodUs);
}

/**
 * shares -> v2 weight. Two formulas are in the wild and give different numbers for the same request:
 * - linear: the kubelet's and runc < 1.3's `1 + (shares-2)*9999/262142` (one CPU -> 39, 250m -> 10);
 * - quadratic: runc >= 1.3 and crun's quadratic-in-log map chosen so one CPU -> 100 (250m -> 35).
 * A node uses one of them; mixing them on one node would skew the pods' relative weights.
 */
export function weightFromShares(shares: number, formula: WeightFormula): number {
  if (shares <= MIN_SHARES) return MIN_WEIGHT;
  if (shares >= MAX_SHARES) return MAX_WEIGHT;
  if (formula === 'linear') {
    return 1 + Math.floor(((shares - 2) * 9999) / 262_142);
  }
  const l = Math.log2(shares);
  const exponent = (l * l + 125 * l) / 612 - 7 / 34;
  return Math.min(MAX_WEIGHT, Math.ceil(10 ** exponent));
}

/**
 * v2 weight -> the smallest shares value that maps to it (several shares share a weight). Used only to
 * present v2 values in v1 units; comparisons against desired values are done in weight units.
 */
export function sharesFromWeight(weight: number, formula: WeightFormula): number {
  if (weight <= MIN_WEIGHT) return MIN_SHARES;
  if (weight >= MAX_WEIGHT) return MAX_SHARES;
  // Both formulas are monotonic in shares: binary-search the smallest shares value with that weight.
  let lo = MIN_SHARES;
  let hi = MAX_SHARES;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    if (weightFromShares(mid, formula) >= weight) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** v2 `memory.max` / v1 limit for a request: null = unlimited. */
export function memoryLimitValue(bytes: bigint | null): bigint | null {
  return bytes === null || bytes <= 0n ? null : bytes;
}

/**
 * oom_score_adj for a Burstable container, as the kubelet's GetContainerOOMScoreAdjust:
 * 1000 - 1000*request/capacity, clamped so it stays above Guaranteed (-997) and system daemons (2),
 * and below BestEffort (1000).
 */
export function burstableOomScoreAdj(memoryRequestBytes: bigint, memoryCapacityBytes: bigint): number {
  if (memoryCapacityBytes <= 0n) return 999;
  const adj = 1000n - (1000n * memoryRequestBytes) / memoryCapacityBytes;
  const n = Number(adj);
  if (n < 3) return 3;
  if (n > 999) return 999;
  return n;
}
