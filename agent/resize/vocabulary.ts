// Names that travel on the wire: annotation keys, statuses, event reasons. `as const` objects with derived
// unions, so a typo is a compile error and the protocol can be listed in one place.

export const Annotations = {
  /** Written by users, the CLI or the autoscaler: the resize request, JSON keyed by container name. */
  request: 'resizelet.io/resize',
  /** Optional per-resource restart policy, as upstream's `resizePolicy`. */
  policy: 'resizelet.io/resize-policy',
  /** Who wrote the request: absent for people, `autoscaler` for resizelet's own policies. */
  source: 'resizelet.io/resize-source',
  /** Written only by the agent: a superset of TKE's `tke.cloud.tencent.com/resource-status`. */
  status: 'resizelet.io/resource-status',
  /** The autoscaling policy (issue: vertical autoscaling). */
  autoscale: 'resizelet.io/autoscale',
  /** `"true"` on a pod turns resizelet off for it. */
  disabled: 'resizelet.io/disabled',
} as const;
export type AnnotationKey = (typeof Annotations)[keyof typeof Annotations];

/** Labels resizelet reads. */
export const Labels = {
  /** `"true"` on a Namespace turns resizing off for every pod in it (requests there are Rejected). */
  disabled: 'resizelet.io/disabled',
} as const;

/** TKE's statuses, with TKE's meanings (see docs/protocol.md). */
export const ResizeStatuses = {
  Proposed: 'Proposed',
  Accepted: 'Accepted',
  Rejected: 'Rejected',
  Deferred: 'Deferred',
  Completed: 'Completed',
} as const;
export type ResizeStatus = (typeof ResizeStatuses)[keyof typeof ResizeStatuses];

/** Kubernetes Event reasons, one per status transition, so `kubectl describe pod` tells the story. */
export const EventReasons = {
  Accepted: 'ResizeAccepted',
  Rejected: 'ResizeRejected',
  Deferred: 'ResizeDeferred',
  Completed: 'ResizeCompleted',
  Reapplied: 'ResizeReapplied',
  Restarting: 'ResizeRestartingContainer',
  /** The autoscale policy annotation was refused (once per policy text); the message says why. */
  AutoscalePolicyInvalid: 'AutoscalePolicyInvalid',
  /** The autoscaler decided (Auto) or recommended (Recommend) a change; the message gives its reason. */
  AutoscaleDecision: 'AutoscaleDecision',
} as const satisfies Partial<
  Record<ResizeStatus | 'Reapplied' | 'Restarting' | 'AutoscalePolicyInvalid' | 'AutoscaleDecision', string>
>;
export type EventReason = (typeof EventReasons)[keyof typeof EventReasons];

export const ResizableResources = ['cpu', 'memory'] as const;
export type ResizableResource = (typeof ResizableResources)[number];

export const RestartPolicies = ['NotRequired', 'RestartContainer'] as const;
export type RestartPolicy = (typeof RestartPolicies)[number];
