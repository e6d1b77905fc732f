// Node admission on effective requests, as the kubelet's resize admission does. Pure.
import type { Resources } from './pod.ts';

export interface RequestTotals {
  cpuMilli: number;
  memoryBytes: bigint;
}

export const ZERO: RequestTotals = { cpuMilli: 0, memoryBytes: 0n };

export function totalRequests(containers: Iterable<Resources>): RequestTotals {
  let cpuMilli = 0;
  let memoryBytes = 0n;
  for (const c of containers) {
    cpuMilli += c.requests.cpu ?? 0;
    memoryBytes += c.requests.memory ?? 0n;
  }
  return { cpuMilli, memoryBytes };
}

export function maxTotals(...all: RequestTotals[]): RequestTotals {
  let cpuMilli = 0;
  let memoryBytes = 0n;
  for (const t of all) {
    if (t.cpuMilli > cpuMilli) cpuMilli = t.cpuMilli;
    if (t.memoryBytes > memoryBytes) memoryBytes = t.memoryBytes;
  }
  return { cpuMilli, memoryBytes };
}

export function addTotals(a: RequestTotals, b: RequestTotals): RequestTotals {
  return { cpuMilli: a.cpuMilli + b.cpuMilli, memoryBytes: a.memoryBytes + b.memoryBytes };
}

export type Admission =
  { verdict: 'fits' } | { verdict: 'never'; message: string } | { verdict: 'not-now'; message: string };

export interface AdmitInput {
  allocatable: RequestTotals;
  /**
   * Every other non-terminal pod on the node, each at max(spec, allocated, accepted-but-not-applied): a
   * pod's spec is what the scheduler counts, its allocation is what it really holds.
   */
  others: RequestTotals[] | (() => RequestTotals[]);
  /** This pod before (its effective requests now) and after the resize. */
  before: RequestTotals;
  after: RequestTotals;
}

const mi = (b: bigint): string => `${(Number(b) / 1024 / 1024).toFixed(0)}Mi`;

export function admit(input: AdmitInput): Admission {
  const { allocatable, others, before, after } = input;
  if (after.cpuMilli > allocatable.cpuMilli) {
    return {
      verdict: 'never',
      message: `CPU requests ${after.cpuMilli}m exceed the node's allocatable ${allocatable.cpuMilli}m`,
    };
  }
  if (after.memoryBytes > allocatable.memoryBytes) {
    return {
      verdict: 'never',
      message: `memory requests ${mi(after.memoryBytes)} exceed the node's allocatable ${mi(allocatable.memoryBytes)}`,
    };
  }
  // A resize that asks for no more than the pod holds cannot make things worse, even on a node that is
  // already overcommitted (e.g. after allocatable shrank).
  if (after.cpuMilli <= before.cpuMilli && after.memoryBytes <= before.memoryBytes)
    return { verdict: 'fits' };
  // Only a growing request needs the sum over every other pod of the node: computed here, not before.
  const used = (typeof others === 'function' ? others() : others).reduce(addTotals, ZERO);
  const freeCpu = allocatable.cpuMilli - used.cpuMilli;
  const freeMemory = allocatable.memoryBytes - used.memoryBytes;
  if (after.cpuMilli > before.cpuMilli && after.cpuMilli > freeCpu) {
    return {
      verdict: 'not-now',
      message: `not enough free CPU on the node: asked ${after.cpuMilli}m, ${Math.max(0, freeCpu)}m free of ${allocatable.cpuMilli}m`,
    };
  }
  if (after.memoryBytes > before.memoryBytes && after.memoryBytes > freeMemory) {
    return {
      verdict: 'not-now',
      message: `not enough free memory on the node: asked ${mi(after.memoryBytes)}, ${mi(freeMemory < 0n ? 0n : freeMemory)} free of ${mi(allocatable.memoryBytes)}`,
    };
  }
  return { verdict: 'fits' };
}
