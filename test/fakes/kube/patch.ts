// The three patch dialects the API server accepts, as pure functions over JSON values. They never
// mutate their inputs. Failures throw PatchError; the HTTP layer maps `kind` to the status the real
// server uses (apiserver/pkg/endpoints/handlers/patch.go): a body that does not decode is 400, an
// operation that cannot be applied — including a failed `test` — is 422.

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

export class PatchError extends Error {
  readonly kind: 'malformed' | 'unapplicable';
  constructor(kind: 'malformed' | 'unapplicable', message: string) {
    super(message);
    this.name = 'PatchError';
    this.kind = kind;
  }
}

export function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function clone<T>(v: T): T {
  return structuredClone(v);
}

export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) {
    return Array.isArray(b) && a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  }
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => k in b && deepEqual(a[k], b[k]));
  }
  return false;
}

/** RFC 7386: objects merge recursively, `null` deletes a key, anything else (arrays too) replaces. */
export function mergePatch(target: Json | undefined, patch: Json): Json {
  if (!isObject(patch)) return clone(patch);
  const out: JsonObject = isObject(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete out[key];
    else out[key] = mergePatch(out[key], value);
  }
  return out;
}

// Strategic merge patch merges lists element-wise by a key declared in the Go types' struct tags
// (`patchMergeKey`). The real server looks the key up by the schema path; this table keys on the
// field name alone, which is right for the Pod and Node fields an agent touches and wrong in corners
// (a Service's `ports` merge on port+protocol, not containerPort). Lists not named here replace.
const MERGE_KEYS: Readonly<Record<string, string>> = {
  containers: 'name',
  initContainers: 'name',
  ephemeralContainers: 'name',
  volumes: 'name',
  volumeMounts: 'mountPath',
  volumeDevices: 'devicePath',
  env: 'name',
  ports: 'containerPort',
  imagePullSecrets: 'name',
  resizePolicy: 'resourceName',
  conditions: 'type',
  addresses: 'type',
  hostAliases: 'ip',
  topologySpreadConstraints: 'topologyKey',
  resourceClaims: 'name',
  readinessGates: 'conditionType',
  schedulingGates: 'name',
};

/** application/strategic-merge-patch+json, minus `$retainKeys`/`$setElementOrder` (accepted, ignored). */
export function strategicMergePatch(target: Json | undefined, patch: Json, field = ''): Json {
  if (Array.isArray(patch)) {
    const key = MERGE_KEYS[field];
    if (!key || !Array.isArray(target))
      return clone(patch).filter((e) => !(isObject(e) && e['$patch'] === 'delete'));
    const out = clone(target);
    for (const item of patch) {
      if (!isObject(item) || !(key in item)) {
        out.push(clone(item));
        continue;
      }
      const at = out.findIndex((e) => isObject(e) && deepEqual(e[key], item[key]));
      if (item['$patch'] === 'delete') {
        if (at >= 0) out.splice(at, 1);
      } else if (at >= 0) {
        out[at] = strategicMergePatch(out[at], item);
      } else {
        out.push(strategicMergePatch(undefined, item));
      }
    }
    return out;
  }
  if (!isObject(patch)) return clone(patch);
  if (patch['$patch'] === 'replace') {
    const { $patch: _ignored, ...rest } = patch;
    return clone(rest);
  }
  if (patch['$patch'] === 'delete') return null;
  const out: JsonObject = isObject(target) ? { ...target } : {};
  for (const [k, value] of Object.entries(patch)) {
    if (k.startsWith('$')) continue; // $patch, $retainKeys, $setElementOrder/..., $deleteFromPrimitiveList/...
    if (value === null) delete out[k];
    else out[k] = strategicMergePatch(out[k], value, k);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// RFC 6902 JSON Patch with RFC 6901 pointers.

function parsePointer(pointer: string): string[] {
  if (pointer === '') return [];
  if (!pointer.startsWith('/')) throw new PatchError('unapplicable', `invalid JSON pointer: "${pointer}"`);
  return pointer
    .slice(1)
    .split('/')
    .map((t) => t.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function arrayIndex(arr: Json[], token: string, forInsert: boolean, pointer: string): number {
  if (forInsert && token === '-') return arr.length;
  if (!/^(0|[1-9][0-9]*)$/.test(token))
    throw new PatchError('unapplicable', `invalid array index in "${pointer}"`);
  const i = Number(token);
  if (i > arr.length || (!forInsert && i === arr.length)) {
    throw new PatchError('unapplicable', `array index out of bounds in "${pointer}"`);
  }
  return i;
}

/** The container holding the pointer's last token, and that token. */
function locate(doc: Json, pointer: string): { parent: Json; token: string } {
  const tokens = parsePointer(pointer);
  const token = tokens.pop();
  if (token === undefined) throw new PatchError('unapplicable', 'the root cannot be the target here');
  let node: Json = doc;
  for (const t of tokens) {
    if (Array.isArray(node)) node = node[arrayIndex(node, t, false, pointer)] as Json;
    else if (isObject(node) && t in node) node = node[t] as Json;
    else throw new PatchError('unapplicable', `path "${pointer}" does not exist`);
  }
  if (!Array.isArray(node) && !isObject(node))
    throw new PatchError('unapplicable', `path "${pointer}" does not exist`);
  return { parent: node, token };
}

function getAt(doc: Json, pointer: string): Json {
  if (pointer === '') return doc;
  const { parent, token } = locate(doc, pointer);
  if (Array.isArray(parent)) return parent[arrayIndex(parent, token, false, pointer)] as Json;
  const obj = parent as JsonObject;
  if (!(token in obj)) throw new PatchError('unapplicable', `path "${pointer}" does not exist`);
  return obj[token] as Json;
}

function addAt(doc: Json, pointer: string, value: Json): Json {
  if (pointer === '') return value;
  const { parent, token } = locate(doc, pointer);
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, token, true, pointer), 0, value);
  else (parent as JsonObject)[token] = value;
  return doc;
}

function removeAt(doc: Json, pointer: string): Json {
  const { parent, token } = locate(doc, pointer);
  if (Array.isArray(parent)) {
    parent.splice(arrayIndex(parent, token, false, pointer), 1);
  } else {
    const obj = parent as JsonObject;
    if (!(token in obj)) throw new PatchError('unapplicable', `path "${pointer}" does not exist`);
    delete obj[token];
  }
  return doc;
}

export interface JsonPatchOp {
  op: string;
  path: string;
  from?: string;
  value?: Json;
}

/** Applies every op or none: the document is cloned first and the clone is discarded on failure. */
export function jsonPatch(target: Json, ops: Json): Json {
  if (!Array.isArray(ops)) throw new PatchError('malformed', 'a JSON patch must be an array of operations');
  let doc = clone(target);
  for (const raw of ops) {
    if (!isObject(raw) || typeof raw['op'] !== 'string' || typeof raw['path'] !== 'string') {
      throw new PatchError('unapplicable', `invalid operation: ${JSON.stringify(raw)}`);
    }
    const path = raw['path'];
    const from = typeof raw['from'] === 'string' ? raw['from'] : undefined;
    const needValue = () => {
      if (!('value' in raw))
        throw new PatchError('unapplicable', `operation "${raw['op']}" on "${path}" has no value`);
      return clone(raw['value'] as Json);
    };
    const needFrom = () => {
      if (from === undefined)
        throw new PatchError('unapplicable', `operation "${raw['op']}" on "${path}" has no from`);
      return from;
    };
    switch (raw['op']) {
      case 'add':
        doc = addAt(doc, path, needValue());
        break;
      case 'remove':
        doc = removeAt(doc, path);
        break;
      case 'replace':
        getAt(doc, path); // replace requires the target to exist
        doc = path === '' ? needValue() : addAt(removeAt(doc, path), path, needValue());
        break;
      case 'move': {
        const src = needFrom();
        if (path !== src && path.startsWith(src + '/')) {
          throw new PatchError('unapplicable', `cannot move "${src}" into its own child "${path}"`);
        }
        const value = getAt(doc, src);
        doc = addAt(removeAt(doc, src), path, value);
        break;
      }
      case 'copy':
        doc = addAt(doc, path, clone(getAt(doc, needFrom())));
        break;
      case 'test':
        if (!deepEqual(getAt(doc, path), raw['value'])) {
          throw new PatchError('unapplicable', `testing value ${path} failed: test failed`);
        }
        break;
      default:
        throw new PatchError('unapplicable', `Unexpected kind: ${String(raw['op'])}`);
    }
  }
  return doc;
}
