// The verbs on a resource URL: list, watch, get, create, update, patch, delete. Each returns the
// reply to send (or starts a watch stream); failures are thrown as ApiError and sent by the caller.
import type { ServerResponse } from 'node:http';
import { PatchError, isObject, jsonPatch, mergePatch, strategicMergePatch } from './patch.ts';
import type { Json } from './patch.ts';
import { POD } from './resources.ts';
import type { KubeObject } from './resources.ts';
import { listKind } from './routes.ts';
import type { ResourceRoute } from './routes.ts';
import { SelectorError, matches, parseSelector } from './selectors.ts';
import { ApiError, errors, failure, success } from './status.ts';
import type { Store } from './store.ts';
import { WatchStream } from './watch.ts';

export interface Reply {
  readonly status: number;
  readonly body: unknown;
}

export interface HandlerContext {
  readonly store: Store;
  readonly bookmarkIntervalMs: number;
  /** Called with each watch once it is open; the server closes them on demand. */
  readonly trackWatch: (w: WatchStream) => () => void;
}

export interface ResourceRequest {
  readonly method: string;
  readonly route: ResourceRoute;
  readonly query: URLSearchParams;
  readonly contentType: string;
  readonly body: Json | undefined;
  readonly res: ServerResponse;
}

/** undefined when the verb started a watch stream (the response is then owned by the stream). */
export function handleResource(ctx: HandlerContext, r: ResourceRequest): Reply | undefined {
  const { route, method } = r;
  if (route.name === undefined) {
    if (method === 'GET') return isWatch(r.query) ? startWatch(ctx, r) : list(ctx, r);
    if (method === 'POST')
      return { status: 201, body: ctx.store.create(route.def, route.namespace, asObject(r.body)) };
    throw errors.methodNotAllowed(method);
  }
  const { def, namespace, name, subresource } = route;
  switch (method) {
    case 'GET': {
      const obj = ctx.store.get(def, namespace, name);
      if (!obj) throw errors.notFound(def, name);
      return { status: 200, body: obj };
    }
    case 'PUT':
      return { status: 200, body: ctx.store.update(def, namespace, name, asObject(r.body), subresource) };
    case 'PATCH': {
      const apply = patcher(r.contentType, r.body);
      return { status: 200, body: ctx.store.patch(def, namespace, name, subresource, apply) };
    }
    case 'DELETE': {
      if (subresource !== undefined) throw errors.methodNotAllowed(method);
      const opts = isObject(r.body) && isObject(r.body['preconditions']) ? r.body['preconditions'] : {};
      const gone = ctx.store.delete(def, namespace, name, {
        ...(typeof opts['resourceVersion'] === 'string' ? { resourceVersion: opts['resourceVersion'] } : {}),
        ...(typeof opts['uid'] === 'string' ? { uid: opts['uid'] } : {}),
      });
      // Pods answer with the object (it would carry a deletionTimestamp during graceful deletion);
      // most other resources answer with a Status.
      if (def === POD) return { status: 200, body: gone };
      return { status: 200, body: success({ name, kind: def.plural, uid: gone.metadata.uid ?? '' }) };
    }
    default:
      throw errors.methodNotAllowed(method);
  }
}

function isWatch(q: URLSearchParams): boolean {
  const w = q.get('watch');
  return w === 'true' || w === '1';
}

function asObject(body: Json | undefined): KubeObject {
  if (!isObject(body)) throw errors.badRequest('the request body must be a JSON object');
  return {
    ...body,
    metadata: isObject(body['metadata']) ? (body['metadata'] as KubeObject['metadata']) : {},
  };
}

function selectorOf(r: ResourceRequest) {
  try {
    return parseSelector(
      r.query.get('labelSelector') ?? undefined,
      r.query.get('fieldSelector') ?? undefined,
      r.route.def.fieldLabels,
    );
  } catch (err) {
    if (err instanceof SelectorError) throw errors.badRequest(err.message);
    throw err;
  }
}

function resourceVersionParam(q: URLSearchParams): number | undefined {
  const raw = q.get('resourceVersion');
  if (raw === null || raw === '') return undefined;
  if (!/^\d+$/.test(raw))
    throw errors.badRequest(`resourceVersion: Invalid value: "${raw}": must be an unsigned integer`);
  return Number(raw);
}

interface ContinueToken {
  rv: number;
  start: string;
}

function decodeContinue(token: string): ContinueToken {
  try {
    const t = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as ContinueToken;
    if (typeof t.rv === 'number' && typeof t.start === 'string') return t;
  } catch {
    // fall through
  }
  throw errors.badRequest('continue key is not valid: invalid continue token');
}

function list(ctx: HandlerContext, r: ResourceRequest): Reply {
  const { def, namespace } = r.route;
  const selector = selectorOf(r);
  const rv = resourceVersionParam(r.query);
  const current = ctx.store.currentRv();
  if (rv !== undefined && rv > current) {
    throw new ApiError(failure(504, `Too large resource version: ${rv}, current: ${current}`, 'Timeout'));
  }
  const keyed = ctx.store
    .list(def, namespace)
    .filter((o) => matches(selector, o))
    .map((o) => ({ key: `${o.metadata.namespace ?? ''}/${o.metadata.name}`, o }));
  let listRv = current;
  let from = 0;
  const cont = r.query.get('continue');
  if (cont) {
    const token = decodeContinue(cont);
    if (ctx.store.isExpired(def, token.rv)) {
      throw new ApiError(
        failure(
          410,
          'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.',
          'Expired',
        ),
      );
    }
    // The real server serves the rest of the snapshot taken at token.rv; this serves the current
    // state after the last key, which only differs if the test writes between pages.
    listRv = token.rv;
    from = keyed.findIndex((k) => k.key > token.start);
    if (from < 0) from = keyed.length;
  }
  const limit = Number(r.query.get('limit') ?? '0');
  const page = limit > 0 ? keyed.slice(from, from + limit) : keyed.slice(from);
  const remaining = keyed.length - from - page.length;
  const metadata: Record<string, unknown> = { resourceVersion: String(listRv) };
  if (remaining > 0) {
    const last = page[page.length - 1]!.key;
    metadata['continue'] = Buffer.from(JSON.stringify({ rv: listRv, start: last })).toString('base64url');
    if (selector.labels.length === 0 && selector.fields.length === 0)
      metadata['remainingItemCount'] = remaining;
  }
  // Items of a typed list carry no kind/apiVersion of their own.
  const items = page.map(({ o }) => {
    const { kind: _k, apiVersion: _a, ...rest } = o;
    return rest;
  });
  return { status: 200, body: { ...listKind(def), metadata, items } };
}

function startWatch(ctx: HandlerContext, r: ResourceRequest): undefined {
  const timeout = r.query.get('timeoutSeconds');
  const stream = new WatchStream(r.res, ctx.store, {
    def: r.route.def,
    namespace: r.route.namespace,
    selector: selectorOf(r),
    resourceVersion: resourceVersionParam(r.query),
    allowBookmarks: r.query.get('allowWatchBookmarks') === 'true',
    timeoutSeconds: timeout && /^\d+$/.test(timeout) ? Number(timeout) : undefined,
  });
  const untrack = ctx.trackWatch(stream);
  stream.start({ bookmarkIntervalMs: ctx.bookmarkIntervalMs }, untrack);
  return undefined;
}

/** The function that turns the stored object into the patched one, per patch content type. */
function patcher(contentType: string, body: Json | undefined): (current: KubeObject) => KubeObject {
  const run = (fn: (current: Json) => Json) => (current: KubeObject) => {
    try {
      return fn(current as unknown as Json) as unknown as KubeObject;
    } catch (err) {
      if (!(err instanceof PatchError)) throw err;
      if (err.kind === 'malformed') throw errors.badRequest(err.message);
      // NewGenericServerResponse(422, ...) in the real patch handler.
      throw new ApiError(
        failure(422, 'the server rejected our request due to an error in our request', 'Invalid', {
          causes: [{ reason: 'UnexpectedServerResponse', message: err.message }],
        }),
      );
    }
  };
  if (body === undefined) throw errors.badRequest('the request body is empty');
  switch (contentType) {
    case 'application/json-patch+json':
      if (!Array.isArray(body))
        throw errors.badRequest('json: cannot unmarshal object into Go value of type jsonpatch.Patch');
      return run((cur) => jsonPatch(cur, body));
    case 'application/merge-patch+json':
      if (!isObject(body)) throw errors.badRequest('Invalid JSON Patch');
      return run((cur) => mergePatch(cur, body));
    case 'application/strategic-merge-patch+json':
      if (!isObject(body)) throw errors.badRequest('Invalid JSON Patch');
      return run((cur) => strategicMergePatch(cur, body));
    default:
      throw errors.unsupportedMediaType(contentType);
  }
}
