// What layout detection reads and answers, shared by its steps: the options, the pod fields it looks at,
// the result, and the typed error with its stable codes.
import type { CgroupFs, CgroupLayout, ContainerRuntime, WeightFormula } from './types.ts';

export const DetectErrorCodes = {
  NO_CONTROLLER: 'RESIZELET_ERR_DETECT_NO_CONTROLLER',
  NO_PODS_ROOT: 'RESIZELET_ERR_DETECT_NO_PODS_ROOT',
  CONFLICT: 'RESIZELET_ERR_DETECT_CONFLICT',
} as const;
export type DetectErrorCode = (typeof DetectErrorCodes)[keyof typeof DetectErrorCodes];

export class DetectError extends Error {
  override readonly name = 'DetectError';
  constructor(
    readonly code: DetectErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** Resource quantities as the API returns them ("250m", "64Mi"); numbers are accepted for CPU cores. */
export type Quantities = Record<string, string | number | undefined>;

/** The fields of a Kubernetes pod detection looks at; a `V1Pod` from @kubernetes/client-node fits. */
export interface PodLike {
  metadata?: { uid?: string; name?: string; namespace?: string };
  spec?: {
    containers?: {
      name: string;
      resources?: { requests?: Quantities; limits?: Quantities };
    }[];
  };
  status?: { qosClass?: string; containerStatuses?: { name: string; containerID?: string }[] };
}

export interface DetectOptions {
  fs: CgroupFs;
  /** The text of /proc/self/mountinfo. */
  mountinfo: string;
  /** Configured values; each one replaces detection of that field. */
  overrides?: Partial<CgroupLayout>;
  /** Used when the node offers no evidence (no pods yet, v1 weights). Default: containerd, linear. */
  defaults?: { runtime?: ContainerRuntime; weightFormula?: WeightFormula };
  /** Pods on this node, for the runtime (containerID schemes) and the weight formula (CPU requests). */
  pods?: readonly PodLike[];
}

export interface DetectResult {
  layout: CgroupLayout;
  /** Human-readable: what was detected from what. */
  notes: string[];
  /**
   * Contradicting evidence that detection did not resolve (e.g. pods whose weights fit different formulas).
   * The layout then holds the configured default; callers should surface these loudly.
   */
  conflicts: string[];
}
