// Works out a node's CgroupLayout from what the node shows: /proc/self/mountinfo says which hierarchy
// holds each controller, the pods root's name says which driver the kubelet uses, container IDs or directory
// names say which runtime, and live `cpu.weight` values say which shares->weight map the runtime applies.
// Every field can be forced by configuration; every conclusion is explained in `notes`.
//
// The steps, each in its own module: mountinfo.ts (pure parsing), detect-hierarchy.ts (controllers, driver,
// pods root), detect-runtime.ts, detect-weight.ts; detect-types.ts holds the options, result and errors.
// Only the steps read, through the CgroupFs port; this module orders them.
import { detectControllers, detectDriverAndRoot } from './detect-hierarchy.ts';
import { detectRuntime } from './detect-runtime.ts';
import type { DetectOptions, DetectResult } from './detect-types.ts';
import { detectWeightFormula } from './detect-weight.ts';
import type { CgroupLayout } from './types.ts';

export { DetectError, DetectErrorCodes } from './detect-types.ts';
export type { DetectErrorCode, DetectOptions, DetectResult, PodLike, Quantities } from './detect-types.ts';
export { parseCpuMilli } from './detect-weight.ts';
export { controllersFromMounts, parseMountinfo } from './mountinfo.ts';
export type { CgroupMountEntry, ParsedMountinfo } from './mountinfo.ts';

/** Detect the node's layout; see the module comment. Throws DetectError when a required fact is missing. */
export async function detectLayout(opts: DetectOptions): Promise<DetectResult> {
  const notes: string[] = [];
  const conflicts: string[] = [];
  const overrides = opts.overrides ?? {};
  const controllers = await detectControllers(opts, notes);
  const { driver, podsRoot } = await detectDriverAndRoot(opts.fs, controllers, overrides, notes);
  const partial = { controllers, driver, podsRoot };
  const runtime = await detectRuntime(opts, partial, notes, conflicts);
  const draft: CgroupLayout = {
    ...partial,
    runtime,
    weightFormula: opts.defaults?.weightFormula ?? 'linear',
  };
  const weightFormula = await detectWeightFormula(opts, draft, notes, conflicts);
  return { layout: { ...draft, weightFormula }, notes, conflicts };
}
