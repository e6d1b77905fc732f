/**
 * A real D-Bus message bus and a test double of systemd's manager on it, for tests of the systemd path.
 *
 * API
 *
 *   startDbusDaemon({ dir? }): Promise<DbusDaemon>
 *     Spawns `dbus-daemon` (Debian package dbus-daemon) with a config written to a temp directory: one private
 *     unix socket in that directory and nothing else (no system/session bus is touched), EXTERNAL auth, a
 *     policy that lets anyone own and call anything. Resolves with the address it printed. `stop()` kills
 *     that PID only and waits for it. Passing the `dir` of a stopped daemon restarts on the same socket.
 *
 *   startFakeSystemd({ bus? | privateSocket?, cgroups? }): Promise<FakeSystemd>
 *     Claims `org.freedesktop.systemd1` on the bus at `bus` (or, with `privateSocket`, listens on that path
 *     peer-to-peer, as PID 1's /run/systemd/private) and exports /org/freedesktop/systemd1 with interface
 *     org.freedesktop.systemd1.Manager: `SetUnitProperties(s name, b runtime, a(sv) properties)` and
 *     `Reload()`. Every call is recorded (`calls`, with each property's D-Bus signature).
 *     With `cgroups` it behaves like systemd towards the cgroup files of the units it knows (`addUnit`):
 *     - SetUnitProperties writes the unit's cgroup files from its properties before it answers, exactly as
 *       cgroup.c renders them (cgroup/systemd.ts `renderProperties`), ignoring the kernel's refusals as
 *       systemd's `set_attribute_and_warn` does; an unknown unit is `org.freedesktop.systemd1.NoSuchUnit`.
 *     - `reload()` (or the D-Bus `Reload`, what `systemctl daemon-reload` calls) rewrites every unit's files
 *       from its spec properties overlaid with the runtime ones AS A DROP-IN KEEPS THEM (CPU quota truncated
 *       to `quotaGranularity`), parents first. A unit nobody set properties on goes back to its spec.
 *     `addUnit(path)` takes the unit's spec properties from its cgroup files as they are (what the kubelet
 *     and runc created it with), or from `spec`.
 *     `failWith(name)` makes every SetUnitProperties answer that D-Bus error (null: succeed again);
 *     `hang(true)` makes them never answer. `stop()` disconnects.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient, type MessageBus } from 'dbus-native';
import { absolutePath } from '../../cgroup/paths.ts';
import { readSettings } from '../../cgroup/reader.ts';
import {
  persistedQuotaPerSec,
  propertiesFromSettings,
  renderProperties,
  SystemdProperties,
  SystemdQuotaGranularity,
  unitNameOf,
  type SystemdPropertyName,
} from '../../cgroup/systemd.ts';
import type { CgroupFs, CgroupLayout, CgroupPath, Controller } from '../../cgroup/types.ts';

// ---------------------------------------------------------------------------------------------------------
// dbus-daemon

export interface DbusDaemon {
  address: string;
  socketPath: string;
  dir: string;
  pid: number;
  stop(): Promise<void>;
  /** Remove the temp directory (after stop). */
  cleanup(): void;
}

export async function startDbusDaemon(opts: { dir?: string } = {}): Promise<DbusDaemon> {
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'resizelet-dbus-'));
  const socketPath = join(dir, 'bus.sock');
  const config = join(dir, 'bus.conf');
  writeFileSync(
    config,
    `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>resizelet-test</type>
  <listen>unix:path=${socketPath}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>
</busconfig>
`,
  );
  const child: ChildProcess = spawn(
    'dbus-daemon',
    [`--config-file=${config}`, '--print-address', '--nofork', '--nopidfile', '--nosyslog'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const address = await new Promise<string>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`dbus-daemon printed no address: ${stderr}`)), 10_000);
    child.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      const line = out.split('\n')[0];
      if (out.includes('\n') && line) {
        clearTimeout(timer);
        resolve(line.trim());
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`dbus-daemon exited with ${code}: ${stderr}`));
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
  const pid = child.pid!;
  return {
    address,
    socketPath,
    dir,
    pid,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      process.kill(pid, 'SIGTERM');
      await exited;
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// systemd's manager

export interface RecordedProperty {
  name: string;
  /** The variant's D-Bus signature as received, e.g. `t`. */
  signature: string;
  value: unknown;
}

export interface RecordedCall {
  method: 'SetUnitProperties' | 'Reload';
  unit?: string;
  runtime?: boolean;
  properties?: RecordedProperty[];
}

export interface FakeSystemdOptions {
  /** A bus address to claim org.freedesktop.systemd1 on. */
  bus?: string;
  /** Or: listen here peer-to-peer, as PID 1's private socket. */
  privateSocket?: string;
  /** The cgroup files of the units (kernel-like memfs port) for SetUnitProperties and reloads to write. */
  cgroups?: { fs: CgroupFs; layout: CgroupLayout };
  /** How a reload keeps a runtime CPU quota; default systemd < v257 (whole percent). */
  quotaGranularity?: bigint;
}

type PropertyMap = Map<SystemdPropertyName, bigint>;

export interface FakeSystemd {
  readonly calls: RecordedCall[];
  /** Kernel refusals systemd ignored while writing the files, as `file: message`. */
  readonly ignoredWriteErrors: string[];
  addUnit(path: CgroupPath, spec?: PropertyMap): Promise<string>;
  /** The runtime properties a unit holds (what SetUnitProperties set), exactly as received. */
  runtimeProperties(unit: string): PropertyMap;
  failWith(dbusName: string | null, message?: string): void;
  hang(on: boolean): void;
  reload(): Promise<void>;
  stop(): Promise<void>;
}

const MANAGER = {
  name: 'org.freedesktop.systemd1.Manager',
  methods: {
    SetUnitProperties: ['sba(sv)', '', ['name', 'runtime', 'properties'], []],
    Reload: ['', '', [], []],
  },
} as const;

const KNOWN = new Set<string>(Object.values(SystemdProperties));

interface Unit {
  path: CgroupPath;
  spec: PropertyMap;
  runtime: PropertyMap;
}

export async function startFakeSystemd(opts: FakeSystemdOptions): Promise<FakeSystemd> {
  const calls: RecordedCall[] = [];
  const ignoredWriteErrors: string[] = [];
  const units = new Map<string, Unit>();
  let failure: { name: string; message: string } | null = null;
  let hanging = false;
  const held: Array<() => void> = [];
  const granularity = opts.quotaGranularity ?? SystemdQuotaGranularity.beforeV257;

  /** Write the unit's files from `props`; only those of `controllers` when given (what a call invalidated). */
  async function writeUnit(unit: Unit, props: PropertyMap, controllers?: Set<Controller>): Promise<void> {
    const c = opts.cgroups;
    if (!c) return;
    const versions = {
      cpu: c.layout.controllers.cpu.version,
      cpuacct: c.layout.controllers.cpuacct.version,
      memory: c.layout.controllers.memory.version,
    };
    for (const f of renderProperties(versions, props)) {
      if (controllers && !controllers.has(f.controller)) continue;
      const abs = absolutePath(c.layout, f.controller, unit.path, f.file);
      try {
        await c.fs.writeFile(abs, f.value);
      } catch (err) {
        // systemd logs a refused cgroup write and carries on (set_attribute_and_warn).
        ignoredWriteErrors.push(`${abs}: ${(err as Error).message}`);
      }
    }
  }

  const effective = (unit: Unit, persisted: boolean): PropertyMap => {
    const out = new Map(unit.spec);
    for (const [name, value] of unit.runtime) {
      if (persisted && name === SystemdProperties.cpuQuotaPerSec) {
        const kept = persistedQuotaPerSec(value, granularity);
        // A drop-in value the parser rejects leaves the unit's own value in force.
        if (kept !== null) out.set(name, kept);
      } else out.set(name, value);
    }
    return out;
  };

  async function reload(): Promise<void> {
    // Parents before children, as systemd realizes a unit's slice before the unit.
    const ordered = [...units.values()].sort((a, b) => a.path.split('/').length - b.path.split('/').length);
    for (const unit of ordered) await writeUnit(unit, effective(unit, true));
  }

  const impl = {
    async SetUnitProperties(name: string, runtime: boolean, properties: Array<[string, unknown]>) {
      const recorded = properties.map(([pname, v]) => {
        const variant = v as { signature?: string; value?: unknown };
        return { name: pname, signature: variant.signature ?? '?', value: variant.value };
      });
      calls.push({ method: 'SetUnitProperties', unit: name, runtime, properties: recorded });
      if (hanging) return new Promise<null>((resolve) => held.push(() => resolve(null)));
      if (failure) throw Object.assign(new Error(failure.message), { dbusName: failure.name });
      const unit = units.get(name);
      if (opts.cgroups && !unit) {
        throw Object.assign(new Error(`Unit ${name} not loaded.`), {
          dbusName: 'org.freedesktop.systemd1.NoSuchUnit',
        });
      }
      for (const p of recorded) {
        if (!KNOWN.has(p.name) || p.signature !== 't' || typeof p.value !== 'bigint') {
          throw Object.assign(new Error(`Cannot set property ${p.name}, or unknown property.`), {
            dbusName: 'org.freedesktop.DBus.Error.PropertyReadOnly',
          });
        }
      }
      if (unit) {
        for (const p of recorded) unit.runtime.set(p.name as SystemdPropertyName, p.value as bigint);
        // systemd realizes the unit's cgroup before it answers (bus_unit_set_properties -> commit), and
        // only for the controllers the call invalidated (unit_invalidate_cgroup(u, CGROUP_MASK_CPU), ...).
        const touched = new Set<Controller>(
          recorded.map((p) => (p.name.startsWith('Memory') ? 'memory' : 'cpu')),
        );
        await writeUnit(unit, effective(unit, false), touched);
      }
      return null;
    },
    async Reload() {
      calls.push({ method: 'Reload' });
      await reload();
      return null;
    },
  };

  const buses: MessageBus[] = [];
  let server: Server | undefined;
  if (opts.privateSocket) {
    rmSync(opts.privateSocket, { force: true });
    server = createServer((socket) => {
      const peer = createClient({ stream: socket, server: true, direct: true, variants: 'wrap' });
      peer.connection.on('error', () => undefined);
      peer.exportInterface(impl, '/org/freedesktop/systemd1', MANAGER as never);
      buses.push(peer);
    });
    await new Promise<void>((resolve) => server!.listen(opts.privateSocket, resolve));
  } else if (opts.bus) {
    const bus = createClient({ busAddress: opts.bus, variants: 'wrap' });
    bus.connection.on('error', () => undefined);
    const owned = await bus.requestName('org.freedesktop.systemd1', 4 /* DO_NOT_QUEUE */);
    if (owned !== 1) throw new Error(`could not own org.freedesktop.systemd1 (RequestName -> ${owned})`);
    bus.exportInterface(impl, '/org/freedesktop/systemd1', MANAGER as never);
    buses.push(bus);
  } else throw new Error('startFakeSystemd needs bus or privateSocket');

  return {
    calls,
    ignoredWriteErrors,
    async addUnit(path, spec) {
      const name = unitNameOf(path);
      if (name === null) throw new Error(`${path} is no systemd unit`);
      let props = spec;
      if (!props) {
        const c = opts.cgroups;
        if (!c) throw new Error('addUnit without spec needs cgroups');
        const settings = await readSettings(c.fs, c.layout, path);
        const versions = {
          cpu: c.layout.controllers.cpu.version,
          cpuacct: c.layout.controllers.cpuacct.version,
          memory: c.layout.controllers.memory.version,
        };
        props = new Map(propertiesFromSettings(versions, settings).map((p) => [p.name, p.value]));
      }
      units.set(name, { path, spec: props, runtime: new Map() });
      return name;
    },
    runtimeProperties(unit) {
      return new Map(units.get(unit)?.runtime ?? []);
    },
    failWith(dbusName, message = 'refused by the test') {
      failure = dbusName === null ? null : { name: dbusName, message };
    },
    hang(on) {
      hanging = on;
      if (!on) for (const release of held.splice(0)) release();
    },
    reload,
    async stop() {
      for (const release of held.splice(0)) release();
      for (const bus of buses) {
        try {
          bus.connection.stream.destroy();
        } catch {
          // gone already
        }
      }
      if (server) await new Promise<void>((resolve) => server!.close(() => resolve()));
    },
  };
}
