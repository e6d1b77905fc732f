// metav1.Status bodies, shaped as k8s.io/apimachinery/pkg/api/errors builds them, so clients that
// branch on `reason` or `code` (client-go's IsNotFound, IsConflict, IsResourceExpired, client-node's
// ListWatch checking `code === 410`) see what a real API server would send.

export const StatusReason = {
  BadRequest: 'BadRequest',
  Unauthorized: 'Unauthorized',
  Forbidden: 'Forbidden',
  NotFound: 'NotFound',
  MethodNotAllowed: 'MethodNotAllowed',
  AlreadyExists: 'AlreadyExists',
  Conflict: 'Conflict',
  Expired: 'Expired',
  RequestEntityTooLarge: 'RequestEntityTooLarge',
  UnsupportedMediaType: 'UnsupportedMediaType',
  Invalid: 'Invalid',
  TooManyRequests: 'TooManyRequests',
  InternalError: 'InternalError',
  ServiceUnavailable: 'ServiceUnavailable',
  Timeout: 'Timeout',
  Unknown: '',
} as const;
export type StatusReason = (typeof StatusReason)[keyof typeof StatusReason];

export interface StatusDetails {
  name?: string;
  group?: string;
  kind?: string;
  uid?: string;
  causes?: { reason?: string; message?: string; field?: string }[];
  retryAfterSeconds?: number;
}

export interface Status {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Success' | 'Failure';
  message?: string;
  reason?: StatusReason;
  details?: StatusDetails;
  code: number;
}

/** The reason apimachinery's NewGenericServerResponse picks for a bare HTTP code. */
const REASON_BY_CODE: Readonly<Record<number, StatusReason>> = {
  400: StatusReason.BadRequest,
  401: StatusReason.Unauthorized,
  403: StatusReason.Forbidden,
  404: StatusReason.NotFound,
  405: StatusReason.MethodNotAllowed,
  409: StatusReason.Conflict,
  410: StatusReason.Expired,
  413: StatusReason.RequestEntityTooLarge,
  415: StatusReason.UnsupportedMediaType,
  422: StatusReason.Invalid,
  429: StatusReason.TooManyRequests,
  500: StatusReason.InternalError,
  503: StatusReason.ServiceUnavailable,
  504: StatusReason.Timeout,
};

export function reasonForCode(code: number): StatusReason {
  return REASON_BY_CODE[code] ?? StatusReason.Unknown;
}

export function failure(
  code: number,
  message: string,
  reason?: StatusReason,
  details?: StatusDetails,
): Status {
  const status: Status = {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason: reason ?? reasonForCode(code),
    code,
  };
  if (details) status.details = details;
  return status;
}

export function success(details?: StatusDetails): Status {
  const status: Status = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', code: 200 };
  if (details) status.details = details;
  return status;
}

/** A request failure carrying the Status body to send; thrown inside the fake, caught at the HTTP edge. */
export class ApiError extends Error {
  readonly status: Status;
  constructor(status: Status) {
    super(status.message);
    this.name = 'ApiError';
    this.status = status;
  }
  get code(): number {
    return this.status.code;
  }
}

/** `pods` for the core group, `events.events.k8s.io` otherwise: how the real server names a resource in messages. */
export interface Resource {
  readonly group: string;
  readonly plural: string;
}
function qualified(res: Resource): string {
  return res.group ? `${res.plural}.${res.group}` : res.plural;
}
function detailsOf(res: Resource, name: string): StatusDetails {
  return res.group ? { name, group: res.group, kind: res.plural } : { name, kind: res.plural };
}

export const errors = {
  notFound: (res: Resource, name: string) =>
    new ApiError(failure(404, `${qualified(res)} "${name}" not found`, 'NotFound', detailsOf(res, name))),
  alreadyExists: (res: Resource, name: string) =>
    new ApiError(
      failure(409, `${qualified(res)} "${name}" already exists`, 'AlreadyExists', detailsOf(res, name)),
    ),
  conflict: (
    res: Resource,
    name: string,
    why = 'the object has been modified; please apply your changes to the latest version and try again',
  ) =>
    new ApiError(
      failure(
        409,
        `Operation cannot be fulfilled on ${qualified(res)} "${name}": ${why}`,
        'Conflict',
        detailsOf(res, name),
      ),
    ),
  invalid: (kind: string, name: string, causes: { field: string; message: string }[]) =>
    new ApiError(
      failure(
        422,
        `${kind} "${name}" is invalid: ${causes.map((c) => `${c.field}: ${c.message}`).join(', ')}`,
        'Invalid',
        { name, kind, causes: causes.map((c) => ({ reason: 'FieldValueInvalid', ...c })) },
      ),
    ),
  // Inside a watch stream the real server reports this as an ERROR event, not an HTTP status.
  expired: (requested: number, oldest: number) =>
    new ApiError(failure(410, `too old resource version: ${requested} (${oldest})`, 'Expired')),
  badRequest: (message: string) => new ApiError(failure(400, message, 'BadRequest')),
  methodNotAllowed: (method: string) =>
    new ApiError(failure(405, `the server does not allow this method on the requested resource (${method})`)),
  unsupportedMediaType: (contentType: string) =>
    new ApiError(
      failure(
        415,
        `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got ${contentType})`,
      ),
    ),
  unauthorized: () => new ApiError(failure(401, 'Unauthorized', 'Unauthorized')),
  notFoundPath: () =>
    new ApiError(failure(404, 'the server could not find the requested resource', 'NotFound')),
} as const;
