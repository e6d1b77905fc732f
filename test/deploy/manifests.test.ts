// Every manifest in deploy/ parses and is a valid object of its kind, judged by models generated from the
// Kubernetes OpenAPI schema (kubernetes-models; the PodMonitor by its CRD's, @kubernetes-models/
// prometheus-operator): each object must type-check as that model (required fields, enums, and no
// unknown fields: TypeScript's excess-property check) and pass the model's runtime validator (formats
// such as int32). Then the facts the pieces rely on across files: names, labels, ports, flags, versions.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../agent/config.ts';
import { createAgentMetrics } from '../../agent/metrics.ts';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const deployDir = join(repo, 'deploy');

// The YAML parser @kubernetes/client-node itself uses (js-yaml): duplicate keys are errors, as in kubectl.
const yaml = createRequire(fileURLToPath(import.meta.resolve('@kubernetes/client-node')))('js-yaml') as {
  loadAll(text: string): unknown[];
};

type Obj = Record<string, unknown> & {
  apiVersion: string;
  kind: string;
  metadata?: { name?: string; namespace?: string; labels?: Record<string, string> };
};

interface Manifest {
  file: string;
  obj: Obj;
}

function yamlFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return yamlFiles(p);
    return /\.ya?ml$/.test(name) ? [p] : [];
  });
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return sourceFiles(p);
    return name.endsWith('.ts') ? [p] : [];
  });
}

function load(file: string): Obj[] {
  return yaml.loadAll(readFileSync(file, 'utf8')).filter((d) => d !== null && d !== undefined) as Obj[];
}

const files = yamlFiles(deployDir);
const manifests: Manifest[] = files
  .filter((f) => !f.endsWith('kustomization.yaml'))
  .flatMap((f) => load(f).map((obj) => ({ file: relative(repo, f), obj })));
const one = (kind: string, name?: string): Obj => {
  const found = manifests.filter((m) => m.obj.kind === kind && (!name || m.obj.metadata?.name === name));
  expect(found, `exactly one ${kind}${name ? ` ${name}` : ''}`).toHaveLength(1);
  return found[0]!.obj;
};

// --- the models: where each kind's TypeScript model and runtime validator live ---------------------------

const MODEL_MODULES: Record<string, string> = {
  v1: 'kubernetes-models/v1',
  'apps/v1': 'kubernetes-models/apps/v1',
  'rbac.authorization.k8s.io/v1': 'kubernetes-models/rbac.authorization.k8s.io/v1',
  'monitoring.coreos.com/v1': '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1',
};

/** The model of one kind: `kubernetes-models/apps/v1/DaemonSet` exports `DaemonSet` and `IDaemonSet`. */
function moduleFor(obj: Obj): string {
  const m = MODEL_MODULES[obj.apiVersion];
  if (!m) throw new Error(`no model for apiVersion ${obj.apiVersion} (${obj.kind}): add it to MODEL_MODULES`);
  return `${m}/${obj.kind}`;
}

/**
 * Type-checks each object as `I<Kind>` of its model module, in one program. Returns the diagnostics of
 * each object, by index. One declaration per object, so one object's errors cannot hide another's.
 */
function typeCheck(objects: readonly Obj[]): string[][] {
  const virtual = join(repo, 'test/deploy/__manifests__.ts');
  const modules = [...new Set(objects.map(moduleFor))];
  let source = modules
    .map((m, i) => `import type { I${m.split('/').pop()} as T${i} } from '${m}';\n`)
    .join('');
  const ranges: Array<[number, number]> = [];
  objects.forEach((o, i) => {
    const start = source.length;
    source += `export const o${i}: T${modules.indexOf(moduleFor(o))} = ${JSON.stringify(o, null, 1)};\n`;
    ranges.push([start, source.length]);
  });
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2023,
    skipLibCheck: true,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  const fileExists = host.fileExists.bind(host);
  host.getSourceFile = (f, lang, ...rest) =>
    f === virtual ? ts.createSourceFile(f, source, lang) : getSourceFile(f, lang, ...rest);
  host.fileExists = (f) => f === virtual || fileExists(f);
  const program = ts.createProgram([virtual], options, host);
  const out: string[][] = objects.map(() => []);
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const text = ts.flattenDiagnosticMessageText(d.messageText, '\n');
    const i = ranges.findIndex(([a, b]) => d.start !== undefined && d.start >= a && d.start < b);
    if (i < 0) throw new Error(`diagnostic outside any manifest (a bad import?): ${text}`);
    out[i]!.push(text);
  }
  return out;
}

async function runtimeValidate(obj: Obj): Promise<void> {
  const mod = (await import(moduleFor(obj))) as Record<string, new (data: unknown) => { validate(): void }>;
  const Model = mod[obj.kind];
  if (!Model) throw new Error(`${moduleFor(obj)} has no model ${obj.kind}`);
  new Model(obj).validate();
}

// --- kustomize ---------------------------------------------------------------------------------------------

interface Kustomization {
  apiVersion: string;
  kind: string;
  resources?: string[];
  images?: Array<{ name: string; newName?: string; newTag?: string }>;
  configMapGenerator?: Array<{
    name: string;
    namespace?: string;
    files?: string[];
    options?: { disableNameSuffixHash?: boolean; labels?: Record<string, string> };
  }>;
}

const KUSTOMIZATION_KEYS = new Set(['apiVersion', 'kind', 'resources', 'images', 'configMapGenerator']);

/** What `kustomize build` makes of configMapGenerator (with disableNameSuffixHash). */
function generatedConfigMaps(dir: string, k: Kustomization): Obj[] {
  return (k.configMapGenerator ?? []).map((g) => ({
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: g.name, namespace: g.namespace, labels: g.options?.labels },
    data: Object.fromEntries((g.files ?? []).map((f) => [f, readFileSync(join(dir, f), 'utf8')])),
  }));
}

const kustomizations = files
  .filter((f) => f.endsWith('kustomization.yaml'))
  .map((f) => ({ dir: dirname(f), k: load(f)[0] as unknown as Kustomization }));

// --- tests -------------------------------------------------------------------------------------------------

describe('deploy/ manifests are valid objects of their kind', () => {
  let verdicts: string[][];
  const generated = kustomizations.flatMap(({ dir, k }) => generatedConfigMaps(dir, k));
  const all = [...manifests.map((m) => m.obj), ...generated];
  // Deliberate mistakes, checked in the same program: each must be caught.
  const ds = () => structuredClone(one('DaemonSet'));
  const podSpec = (o: Obj) => (o.spec as { template: { spec: Record<string, unknown> } }).template.spec;
  const container = (o: Obj) => (podSpec(o).containers as Array<Record<string, unknown>>)[0]!;
  const mistakes: Array<[string, Obj, RegExp]> = [
    [
      'a misspelled field (tolerations)',
      (() => {
        const o = ds();
        podSpec(o).tolerration = podSpec(o).tolerations;
        delete podSpec(o).tolerations;
        return o;
      })(),
      /'"tolerration"' does not exist in type 'IPodSpec'/,
    ],
    [
      'a field at the wrong level (hostPID on the container)',
      (() => {
        const o = ds();
        container(o).hostPID = true;
        return o;
      })(),
      /'"hostPID"' does not exist in type 'IContainer'/,
    ],
    [
      'a missing required field (the container name)',
      (() => {
        const o = ds();
        delete container(o).name;
        return o;
      })(),
      /Property '"name"' is missing in type .* but required in type 'IContainer'/,
    ],
    [
      'a value outside an enum (imagePullPolicy)',
      (() => {
        const o = ds();
        container(o).imagePullPolicy = 'Sometimes';
        return o;
      })(),
      /'"Sometimes"' is not assignable to type '"IfNotPresent" \| "Always" \| "Never" \| undefined'/,
    ],
    [
      'a PodMonitor endpoint with a misspelled field',
      (() => {
        const o = structuredClone(one('PodMonitor'));
        const ep = (o.spec as { podMetricsEndpoints: Array<Record<string, unknown>> })
          .podMetricsEndpoints[0]!;
        ep.prot = ep.port;
        delete ep.port;
        return o;
      })(),
      /'"prot"' does not exist in type/,
    ],
  ];

  beforeAll(() => {
    verdicts = typeCheck([...all, ...mistakes.map(([, o]) => o)]);
  }, 30_000);

  it('finds the files kubectl apply -k will apply', () => {
    expect(manifests.map((m) => `${m.file}: ${m.obj.kind}/${m.obj.metadata?.name}`).sort()).toEqual([
      'deploy/daemonset.yaml: DaemonSet/resizelet',
      'deploy/monitoring/podmonitor.yaml: PodMonitor/resizelet',
      'deploy/namespace.yaml: Namespace/resizelet',
      'deploy/rbac.yaml: ClusterRole/resizelet-agent',
      'deploy/rbac.yaml: ClusterRoleBinding/resizelet-agent',
      'deploy/service.yaml: Service/resizelet-metrics',
      'deploy/serviceaccount.yaml: ServiceAccount/resizelet',
    ]);
  });

  it('each manifest type-checks as its kind (required fields, enums, no unknown fields)', () => {
    const problems = all.flatMap((o, i) =>
      verdicts[i]!.map((d) => `${o.kind}/${o.metadata?.name}: ${d.split('\n')[0]}`),
    );
    expect(problems).toEqual([]);
  });

  it("each manifest passes its model's runtime validator (OpenAPI types and formats)", async () => {
    for (const o of all)
      await expect(runtimeValidate(o), `${o.kind}/${o.metadata?.name}`).resolves.toBeUndefined();
  });

  it.each(mistakes.map(([name, , want], i) => [name, i, want] as const))('catches %s', (_name, i, want) => {
    const found = verdicts[all.length + i]!;
    expect(found.join('\n')).toMatch(want);
  });

  it('the runtime validator catches a wrong type too (a port as a string of digits)', async () => {
    const o = structuredClone(one('Service'));
    (o.spec as { ports: Array<Record<string, unknown>> }).ports[0]!.port = '9977';
    await expect(runtimeValidate(o)).rejects.toThrow(/must be integer/);
  });
});

describe('kustomization.yaml files', () => {
  it.each(kustomizations.map(({ dir, k }) => [relative(repo, dir), dir, k] as const))(
    '%s lists every manifest beside it, and only keys we know',
    (_rel, dir, k) => {
      expect(k.apiVersion).toBe('kustomize.config.k8s.io/v1beta1');
      expect(k.kind).toBe('Kustomization');
      expect(Object.keys(k).filter((key) => !KUSTOMIZATION_KEYS.has(key))).toEqual([]);
      const beside = readdirSync(dir).filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml');
      expect([...(k.resources ?? [])].sort()).toEqual(beside.sort());
      for (const g of k.configMapGenerator ?? []) {
        for (const f of g.files ?? []) expect(statSync(join(dir, f)).isFile()).toBe(true);
      }
    },
  );

  it('the image it sets is the one the DaemonSet runs, at the package version', () => {
    const pkg = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { version: string };
    const top = kustomizations.find(({ dir }) => dir === deployDir)!.k;
    const c = (one('DaemonSet').spec as { template: { spec: { containers: Array<{ image: string }> } } })
      .template.spec.containers[0]!;
    expect(top.images).toEqual([{ name: c.image, newTag: pkg.version }]);
    const dockerfile = readFileSync(join(repo, 'Dockerfile'), 'utf8');
    expect(dockerfile).toMatch(new RegExp(`^ARG VERSION=${pkg.version.replace(/\./g, '\\.')}$`, 'm'));
  });
});

interface PodTemplate {
  metadata: { labels: Record<string, string> };
  spec: {
    serviceAccountName: string;
    priorityClassName: string;
    hostPID: boolean;
    tolerations: Array<Record<string, unknown>>;
    containers: Array<{
      name: string;
      args: string[];
      env: Array<{ name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }>;
      ports: Array<{ name: string; containerPort: number }>;
      resources: { requests: Record<string, string>; limits: Record<string, string> };
      livenessProbe: { httpGet: { path: string; port: string | number } };
      readinessProbe: { httpGet: { path: string; port: string | number } };
      startupProbe?: { httpGet: { path: string; port: string | number } };
      securityContext: Record<string, unknown>;
      volumeMounts: Array<{ name: string; mountPath: string; readOnly?: boolean }>;
    }>;
    volumes: Array<{ name: string; hostPath?: { path: string; type?: string } }>;
  };
}

describe('the DaemonSet runs the agent as the issue asks', () => {
  const ds = one('DaemonSet');
  const spec = ds.spec as {
    selector: { matchLabels: Record<string, string> };
    updateStrategy: { type: string };
    template: PodTemplate;
  };
  const pod = spec.template.spec;
  const agent = pod.containers[0]!;
  const mountOf = (path: string) => {
    const m = agent.volumeMounts.find((v) => v.mountPath === path);
    return { mount: m, volume: pod.volumes.find((v) => v.name === m?.name) };
  };
  const env: Record<string, string | undefined> = {
    NODE_NAME: 'node-1',
    KUBERNETES_SERVICE_HOST: '10.0.0.1',
  };

  it('on every node, critical, rolling', () => {
    expect(pod.tolerations).toEqual([{ operator: 'Exists' }]);
    expect(pod.priorityClassName).toBe('system-node-critical');
    expect(spec.updateStrategy.type).toBe('RollingUpdate');
    expect(spec.selector.matchLabels).toEqual(
      expect.objectContaining(Object.fromEntries(Object.entries(spec.selector.matchLabels))),
    );
    for (const [k, v] of Object.entries(spec.selector.matchLabels))
      expect(spec.template.metadata.labels[k]).toBe(v);
  });

  it("passes flags the agent accepts, NODE_NAME from the downward API, and the agent's config agrees", () => {
    expect(agent.env.find((e) => e.name === 'NODE_NAME')?.valueFrom?.fieldRef?.fieldPath).toBe(
      'spec.nodeName',
    );
    const config = loadConfig({ argv: agent.args, env, homeKubeconfig: undefined });
    if (config === 'help') throw new Error('the DaemonSet asks for --help');
    expect(config.inCluster).toBe(true);
    const metrics = agent.ports.find((p) => p.name === 'metrics');
    expect(config.listenPort).toBe(metrics?.containerPort);
    expect(config.cgroupRoot).toBe('/sys/fs/cgroup');
    // The checkpoint lives on a hostPath, so it survives the container.
    const { volume } = mountOf(dirname(config.checkpointPath));
    expect(volume?.hostPath?.path).toBe('/var/lib/resizelet');
    // Its run copy on the host's /run (memory-backed), also a hostPath: it must outlive the container.
    expect(config.runCheckpointPath).toBeDefined();
    const run = mountOf(dirname(config.runCheckpointPath!));
    expect(run.mount?.readOnly ?? false).toBe(false);
    expect(run.volume?.hostPath?.path).toMatch(/^\/run\//);
  });

  it("mounts the host's cgroup tree read-write at the same path", () => {
    const { mount, volume } = mountOf('/sys/fs/cgroup');
    expect(mount?.readOnly ?? false).toBe(false);
    expect(volume?.hostPath).toEqual({ path: '/sys/fs/cgroup', type: 'Directory' });
  });

  it('hostPID for oom_score_adj, and only the capabilities the agent needs, not privileged', () => {
    expect(pod.hostPID).toBe(true);
    expect(agent.securityContext).toMatchObject({
      privileged: false,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      runAsUser: 0,
      capabilities: { drop: ['ALL'], add: ['DAC_OVERRIDE', 'SYS_RESOURCE'] },
    });
  });

  it("bounds glibc malloc's arenas and gives large freed blocks back (resident memory)", () => {
    const env = Object.fromEntries(agent.env.map((e) => [e.name, e.value]));
    expect(env).toMatchObject({
      MALLOC_ARENA_MAX: '2',
      MALLOC_TRIM_THRESHOLD_: '131072',
      MALLOC_MMAP_THRESHOLD_: '131072',
    });
  });

  it('requests and limits its own CPU and memory', () => {
    for (const side of ['requests', 'limits'] as const) {
      expect(Object.keys(agent.resources[side]).sort()).toEqual(['cpu', 'memory']);
    }
  });

  it('probes /healthz and /readyz on the metrics port', () => {
    expect(agent.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'metrics' });
    expect(agent.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'metrics' });
    expect(agent.startupProbe?.httpGet).toEqual({ path: '/healthz', port: 'metrics' });
  });
});

describe('the pieces refer to each other correctly', () => {
  const ds = one('DaemonSet');
  const template = (ds.spec as { template: PodTemplate }).template;
  const podLabels = template.metadata.labels;
  const matches = (selector: Record<string, string>) =>
    Object.entries(selector).every(([k, v]) => podLabels[k] === v);

  it('everything namespaced lives in the namespace deploy/ creates', () => {
    const ns = one('Namespace').metadata!.name;
    for (const m of manifests) {
      if (['Namespace', 'ClusterRole', 'ClusterRoleBinding'].includes(m.obj.kind)) continue;
      expect(m.obj.metadata?.namespace, `${m.obj.kind}/${m.obj.metadata?.name}`).toBe(ns);
    }
  });

  it('the binding ties the ClusterRole to the service account the DaemonSet runs as', () => {
    const binding = one('ClusterRoleBinding') as Obj & {
      roleRef: { kind: string; name: string };
      subjects: Array<{ kind: string; name: string; namespace: string }>;
    };
    const sa = one('ServiceAccount');
    expect(binding.roleRef).toMatchObject({ kind: 'ClusterRole', name: one('ClusterRole').metadata!.name });
    expect(binding.subjects).toEqual([
      { kind: 'ServiceAccount', name: sa.metadata!.name, namespace: sa.metadata!.namespace },
    ]);
    expect(template.spec.serviceAccountName).toBe(sa.metadata!.name);
  });

  it('the Service and the PodMonitor select the agent pods and its metrics port', () => {
    const svc = one('Service').spec as {
      selector: Record<string, string>;
      ports: Array<{ name: string; port: number; targetPort: string }>;
    };
    expect(matches(svc.selector)).toBe(true);
    expect(svc.ports).toEqual([
      expect.objectContaining({ name: 'metrics', port: 9977, targetPort: 'metrics' }),
    ]);
    const pm = one('PodMonitor').spec as {
      selector: { matchLabels: Record<string, string> };
      namespaceSelector: { matchNames: string[] };
      podMetricsEndpoints: Array<{ port: string; path: string }>;
    };
    expect(matches(pm.selector.matchLabels)).toBe(true);
    expect(pm.namespaceSelector.matchNames).toEqual([ds.metadata!.namespace]);
    expect(pm.podMetricsEndpoints.map((e) => [e.port, e.path])).toEqual([['metrics', '/metrics']]);
  });
});

describe('the Grafana dashboard', () => {
  const dashboard = JSON.parse(
    readFileSync(join(deployDir, 'monitoring/resizelet-dashboard.json'), 'utf8'),
  ) as {
    uid: string;
    panels: Array<{ id: number; type: string; title: string; targets?: Array<{ expr: string }> }>;
    templating: { list: Array<{ name: string; query: unknown }> };
  };
  const exprs = [
    ...dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)),
    ...dashboard.templating.list.map((v) =>
      typeof v.query === 'string' ? v.query : String((v.query as { query?: string })?.query ?? ''),
    ),
  ];

  it('has unique panel ids, and every graph has a query', () => {
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of dashboard.panels.filter((x) => x.type !== 'row')) {
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
    }
  });

  it("queries only resizelet metrics the agent's code defines (and cAdvisor's and kube-state-metrics')", async () => {
    // The registry's own metrics, and the series the HTTP endpoint computes at scrape time (named in agent/).
    const exported = new Set<string>();
    for (const m of await createAgentMetrics().registry.getMetricsAsJSON()) {
      exported.add(m.name);
      if (String(m.type) === 'histogram')
        for (const s of ['_bucket', '_sum', '_count']) exported.add(m.name + s);
    }
    for (const f of sourceFiles(join(repo, 'agent'))) {
      for (const [, name] of readFileSync(f, 'utf8').matchAll(/'(resizelet_[a-z0-9_]+)'/g))
        exported.add(name!);
    }
    const used = new Set(exprs.flatMap((e) => e.match(/\b[a-z_:][a-z0-9_:]*(?=\s*[{[(]|\s*\)|\s*,)/g) ?? []));
    const ours = [...used].filter((n) => n.startsWith('resizelet_'));
    expect(ours.length).toBeGreaterThan(5);
    expect(ours.filter((n) => !exported.has(n))).toEqual([]);
    const others = [...used].filter((n) => /^(container|kube)_/.test(n));
    expect(others.length).toBeGreaterThan(0);
  });

  it('covers spec vs allocated vs usage per container, outcomes and latency', () => {
    const titles = dashboard.panels.map((p) => p.title);
    expect(titles).toEqual(
      expect.arrayContaining([
        'CPU: spec vs allocated vs usage',
        'Memory: spec vs allocated vs usage',
        'Resize outcomes',
        'Resize latency',
      ]),
    );
  });
});
