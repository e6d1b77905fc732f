// The I/O half of the systemd path: one D-Bus call, org.freedesktop.systemd1.Manager.SetUnitProperties,
// behind a small port so the actuator and its tests never see the wire. The library is dbus-native (pure
// JavaScript: no native addon, no build step; per-call timeouts and AbortSignal; 64-bit values as bigint).
//
// Two ways to reach systemd, both `unix:path=` addresses:
// - `/run/systemd/private`: PID 1's own socket, peer-to-peer. No bus daemon in the way (dbus-daemon may be
//   restarting during the very package upgrade whose daemon-reload we are guarding against), no Hello, no
//   bus policy; root only. What systemctl itself uses as root.
// - `/run/dbus/system_bus_socket`: the system bus; systemd1 is reached by name through dbus-daemon/broker.
import { createClient, type DBusError, type MessageBus } from 'dbus-native';
import type { SystemdProperty } from './systemd.ts';

export const SYSTEMD_BUS_NAME = 'org.freedesktop.systemd1';
export const SYSTEMD_OBJECT_PATH = '/org/freedesktop/systemd1';
export const SYSTEMD_MANAGER_INTERFACE = 'org.freedesktop.systemd1.Manager';
/** systemd's private socket (peer-to-peer) and the system bus socket. */
export const SYSTEMD_PRIVATE_ADDRESS = 'unix:path=/run/systemd/private';
export const SYSTEM_BUS_ADDRESS = 'unix:path=/run/dbus/system_bus_socket';
/** Per call; systemd answers SetUnitProperties in milliseconds unless it is stuck. */
export const DEFAULT_SYSTEMD_CALL_TIMEOUT_MS = 2_000;

/** What the actuator needs from systemd. Implemented over D-Bus below and by test doubles. */
export interface SystemdPort {
  /** Resolves once systemd has applied the properties (it writes the cgroup files before answering). */
  setUnitProperties(
    unit: string,
    runtime: boolean,
    properties: readonly SystemdProperty[],
    opts?: { signal?: AbortSignal },
  ): Promise<void>;
  close(): Promise<void>;
}

/** Why a call did not go through: the fallback reasons, low-cardinality (they label a metric). */
export const SystemdFailureReasons = {
  /** No connection: socket missing, refused, closed, authentication failed, systemd1 not on the bus. */
  unreachable: 'unreachable',
  /** No answer in time: a hung PID 1 or bus must never hold up a resize. */
  timeout: 'timeout',
  /** systemd answered with an error (access denied, invalid argument, unknown unit...). */
  refused: 'refused',
} as const;
export type SystemdFailureReason = (typeof SystemdFailureReasons)[keyof typeof SystemdFailureReasons];

/** D-Bus error names that mean "the unit does not exist": a unit systemd does not know is one it never resets. */
export const NO_SUCH_UNIT = 'org.freedesktop.systemd1.NoSuchUnit';

export class SystemdCallError extends Error {
  readonly code = 'RESIZELET_ERR_SYSTEMD';
  override readonly name = 'SystemdCallError';
  constructor(
    readonly reason: SystemdFailureReason,
    message: string,
    /** The D-Bus error name when systemd or the bus answered with one. */
    readonly dbusName?: string,
  ) {
    super(message);
  }
}

/** The bus names that mean nobody is there to answer, as opposed to systemd saying no. */
const UNREACHABLE_NAMES = new Set([
  'org.freedesktop.DBus.Error.ServiceUnknown',
  'org.freedesktop.DBus.Error.NameHasNoOwner',
  'org.freedesktop.DBus.Error.Disconnected',
  'org.freedesktop.DBus.Error.NoServer',
]);

export function toSystemdCallError(err: unknown, what: string): SystemdCallError {
  if (err instanceof SystemdCallError) return err;
  const e = (err ?? {}) as Partial<DBusError> & { code?: string; message?: string };
  const detail = e.message ?? String(err);
  if (
    e.code === 'ETIMEDOUT' ||
    e.code === 'ABORT_ERR' ||
    e.dbusName === 'org.freedesktop.DBus.Error.NoReply'
  ) {
    return new SystemdCallError(SystemdFailureReasons.timeout, `${what}: ${detail}`, e.dbusName);
  }
  if (e.dbusName !== undefined && !UNREACHABLE_NAMES.has(e.dbusName) && e.code !== 'ECONNCLOSED') {
    return new SystemdCallError(
      SystemdFailureReasons.refused,
      `${what}: ${e.dbusName}: ${detail}`,
      e.dbusName,
    );
  }
  return new SystemdCallError(SystemdFailureReasons.unreachable, `${what}: ${detail}`, e.dbusName);
}

/**
 * Whether an address is systemd's private socket (peer-to-peer: no Hello, messages go straight to PID 1)
 * rather than a message bus.
 */
export function isPeerToPeerAddress(address: string): boolean {
  return /^unix:path=[^,]*\/systemd\/private(?:,|$)/.test(address);
}

export interface DbusSystemdPortOptions {
  /** A D-Bus address, e.g. `unix:path=/run/systemd/private`. */
  address: string;
  /** Default: from the address (systemd's private socket is peer-to-peer, anything else a bus). */
  peerToPeer?: boolean;
  callTimeoutMs?: number;
  log?: { debug(obj: Record<string, unknown>, msg: string): void };
}

interface Connection {
  bus: MessageBus;
  ready: Promise<void>;
  dead: boolean;
}

/**
 * A SystemdPort over D-Bus. Connects on first use and again after the connection is lost (dbus-daemon
 * restarts during package upgrades; PID 1 re-executes): one failed call is never a permanent state.
 */
export function createDbusSystemdPort(opts: DbusSystemdPortOptions): SystemdPort {
  const timeout = opts.callTimeoutMs ?? DEFAULT_SYSTEMD_CALL_TIMEOUT_MS;
  const peerToPeer = opts.peerToPeer ?? isPeerToPeerAddress(opts.address);
  let current: Connection | undefined;
  let closed = false;

  function connect(): Connection {
    // `direct` on both kinds: the library's own Hello throws from a callback when the bus does not answer,
    // so on a bus the Hello is sent below, where its failure is ours to handle.
    const bus = createClient({ busAddress: opts.address, direct: true, timeout, authMethods: ['EXTERNAL'] });
    const conn: Connection = { bus, ready: Promise.resolve(), dead: false };
    const drop = (err?: Error): void => {
      if (conn.dead) return;
      conn.dead = true;
      if (current === conn) current = undefined;
      opts.log?.debug({ err: err?.message, address: opts.address }, 'systemd D-Bus connection lost');
    };
    // Without a listener, a connection error (ENOENT, ECONNREFUSED) would be thrown by the EventEmitter.
    bus.connection.on('error', drop);
    bus.connection.on('close', drop);
    if (!peerToPeer) {
      conn.ready = (async () => {
        const name = await bus.invokeDbus<string>({ member: 'Hello' }, { timeout });
        bus.name = name;
      })();
      conn.ready.catch(() => {
        drop();
        destroy(bus);
      });
    }
    return conn;
  }

  return {
    async setUnitProperties(unit, runtime, properties, callOpts) {
      const what = `SetUnitProperties(${unit})`;
      if (closed) throw new SystemdCallError(SystemdFailureReasons.unreachable, `${what}: port closed`);
      if (callOpts?.signal?.aborted) {
        throw new SystemdCallError(SystemdFailureReasons.timeout, `${what}: deadline passed before the call`);
      }
      current ??= connect();
      const conn = current;
      try {
        await conn.ready;
        await conn.bus.invoke(
          {
            destination: SYSTEMD_BUS_NAME,
            path: SYSTEMD_OBJECT_PATH,
            interface: SYSTEMD_MANAGER_INTERFACE,
            member: 'SetUnitProperties',
            signature: 'sba(sv)',
            body: [unit, runtime, properties.map((p) => [p.name, ['t', p.value]])],
          },
          { timeout, ...(callOpts?.signal ? { signal: callOpts.signal } : {}) },
        );
      } catch (err) {
        const e = toSystemdCallError(err, what);
        // A timeout may be a wedged connection rather than a slow systemd: start afresh next time.
        if (e.reason !== SystemdFailureReasons.refused && current === conn) {
          current = undefined;
          conn.dead = true;
          destroy(conn.bus);
        }
        throw e;
      }
    },

    async close() {
      closed = true;
      const conn = current;
      current = undefined;
      if (conn) destroy(conn.bus);
    },
  };
}

/**
 * Tear the connection down without waiting for the peer: the library's close() waits for the socket to
 * end, which a hung peer never lets happen.
 */
function destroy(bus: MessageBus): void {
  try {
    bus.connection.stream.destroy();
  } catch {
    // already gone
  }
}
