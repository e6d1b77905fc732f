// URL layout of the Kubernetes REST API and the discovery documents that describe it.
import { RESOURCES, apiVersionOf, findResource } from './resources.ts';
import type { ResourceDef } from './resources.ts';

export interface ResourceRoute {
  readonly def: ResourceDef;
  /** Set for namespaced paths; undefined means "all namespaces" on a list or watch. */
  readonly namespace: string | undefined;
  readonly name: string | undefined;
  readonly subresource: string | undefined;
}

/**
 * `/api/v1/[namespaces/{ns}/]{plural}[/{name}[/{sub}]]` and the same under `/apis/{group}/{version}`.
 * Namespaces themselves live at `/api/v1/namespaces/{name}[/status]`, which the segment after the
 * namespace name tells apart from a namespaced resource.
 */
export function parseResourcePath(pathname: string): ResourceRoute | undefined {
  let parts: string[];
  try {
    parts = pathname.split('/').filter(Boolean).map(decodeURIComponent);
  } catch {
    return undefined;
  }
  let group: string;
  let version: string;
  let rest: string[];
  if (parts[0] === 'api' && parts.length >= 3) {
    [group, version, rest] = ['', parts[1]!, parts.slice(2)];
  } else if (parts[0] === 'apis' && parts.length >= 4) {
    [group, version, rest] = [parts[1]!, parts[2]!, parts.slice(3)];
  } else {
    return undefined;
  }
  let namespace: string | undefined;
  if (rest[0] === 'namespaces' && rest.length >= 3 && findResource(group, version, rest[2]!)?.namespaced) {
    namespace = rest[1];
    rest = rest.slice(2);
  }
  const def = findResource(group, version, rest[0]!);
  if (!def || rest.length > 3) return undefined;
  const [, name, subresource] = rest;
  if (subresource !== undefined && !def.subresources.includes(subresource as never)) return undefined;
  // A namespaced object is only addressable with its namespace: /api/v1/pods/x does not exist.
  if (def.namespaced && namespace === undefined && name !== undefined) return undefined;
  return { def, namespace, name, subresource };
}

export const SERVER_VERSION = {
  major: '1',
  minor: '33',
  gitVersion: 'v1.33.0-fake',
  gitCommit: '0000000000000000000000000000000000000000',
  gitTreeState: 'clean',
  buildDate: '2025-04-23T00:00:00Z',
  goVersion: 'go1.24.2',
  compiler: 'gc',
  platform: 'linux/amd64',
} as const;

const VERBS = ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'];

function groups(): Map<string, string[]> {
  const byGroup = new Map<string, string[]>();
  for (const r of RESOURCES) {
    if (!r.group) continue;
    const versions = byGroup.get(r.group) ?? [];
    if (!versions.includes(r.version)) versions.push(r.version);
    byGroup.set(r.group, versions);
  }
  return byGroup;
}

function resourceList(group: string, version: string): unknown {
  const defs: readonly ResourceDef[] = RESOURCES.filter((r) => r.group === group && r.version === version);
  return {
    kind: 'APIResourceList',
    apiVersion: 'v1',
    groupVersion: group ? `${group}/${version}` : version,
    resources: defs.flatMap((r) => [
      {
        name: r.plural,
        singularName: r.singular,
        namespaced: r.namespaced,
        kind: r.kind,
        verbs: VERBS,
        shortNames: [...r.shortNames],
      },
      ...r.subresources.map((s) => ({
        name: `${r.plural}/${s}`,
        singularName: '',
        namespaced: r.namespaced,
        kind: r.kind,
        verbs: ['get', 'patch', 'update'],
      })),
    ]),
  };
}

/** The discovery document for a path, or undefined when the path is not a discovery endpoint. */
export function discovery(pathname: string, serverAddress: string): unknown {
  const path = pathname.replace(/\/+$/, '');
  if (path === '/version') return SERVER_VERSION;
  if (path === '/api') {
    return {
      kind: 'APIVersions',
      versions: ['v1'],
      serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress }],
    };
  }
  if (path === '/api/v1') return resourceList('', 'v1');
  const all = groups();
  const groupDoc = (name: string, versions: string[]) => {
    const gv = versions.map((v) => ({ groupVersion: `${name}/${v}`, version: v }));
    return { name, versions: gv, preferredVersion: gv[0] };
  };
  if (path === '/apis') {
    return { kind: 'APIGroupList', apiVersion: 'v1', groups: [...all].map(([n, v]) => groupDoc(n, v)) };
  }
  const m = /^\/apis\/([^/]+)(?:\/([^/]+))?$/.exec(path);
  const versions = m && all.get(m[1]!);
  if (!m || !versions) return undefined;
  if (m[2] === undefined) return { kind: 'APIGroup', apiVersion: 'v1', ...groupDoc(m[1]!, versions) };
  return versions.includes(m[2]) ? resourceList(m[1]!, m[2]) : undefined;
}

export function listKind(def: ResourceDef): { kind: string; apiVersion: string } {
  return { kind: `${def.kind}List`, apiVersion: apiVersionOf(def) };
}

/** What RBAC would check for a request: the attributes a Role rule has to cover. */
export type RbacAttributes =
  | { verb: string; apiGroup: string; resource: string; namespace?: string; name?: string }
  | { verb: string; nonResourceURL: string };

export function rbacAttributes(method: string, pathname: string, watch: boolean): RbacAttributes {
  const route = parseResourcePath(pathname);
  if (!route) return { verb: method.toLowerCase(), nonResourceURL: pathname };
  const collection = route.name === undefined;
  const verbs: Record<string, string> = {
    GET: collection ? (watch ? 'watch' : 'list') : 'get',
    POST: 'create',
    PUT: 'update',
    PATCH: 'patch',
    DELETE: collection ? 'deletecollection' : 'delete',
  };
  return {
    verb: verbs[method] ?? method.toLowerCase(),
    apiGroup: route.def.group,
    // Role rules name a subresource as "pods/status".
    resource: route.subresource ? `${route.def.plural}/${route.subresource}` : route.def.plural,
    ...(route.namespace !== undefined ? { namespace: route.namespace } : {}),
    ...(route.name !== undefined ? { name: route.name } : {}),
  };
}
