// Kubernetes resource quantities ("500m", "1.5Gi", "129e6") read the way k8s.io/apimachinery's
// resource.ParseQuantity reads them, so the agent arrives at the same millicores and bytes as the kubelet
// for the same string. Pure: no I/O.
//
// Where we knowingly part from upstream, and why:
// - "-", "+", "." and "-." parse as zero upstream (its scanner returns early); the grammar needs a digit,
//   and a resize request of "-" is far more likely a typo than a wish for zero, so we refuse them.
// - Upstream has no length cap and no magnitude cap for decimal quantities; we refuse more than 100
//   characters and magnitudes of 10^100 or more, so exact bigint arithmetic stays cheap.

export const QuantityErrorCodes = {
  EMPTY: 'EMPTY',
  MALFORMED: 'MALFORMED',
  UNKNOWN_SUFFIX: 'UNKNOWN_SUFFIX',
  TOO_LONG: 'TOO_LONG',
  NOT_FINITE: 'NOT_FINITE',
  OUT_OF_RANGE: 'OUT_OF_RANGE',
  NEGATIVE: 'NEGATIVE',
} as const;
export type QuantityErrorCode = (typeof QuantityErrorCodes)[keyof typeof QuantityErrorCodes];

export class QuantityError extends Error {
  override readonly name = 'QuantityError';
  readonly code: QuantityErrorCode;
  /** The string (or, for conversions, the canonical form of the quantity) that was refused. */
  readonly input: string;

  constructor(code: QuantityErrorCode, input: string, message: string) {
    super(message);
    this.code = code;
    this.input = input;
  }
}

/** The notation a quantity was written in; formatting answers in the same one, as Kubernetes does. */
export const QuantityFormats = {
  BinarySI: 'BinarySI',
  DecimalSI: 'DecimalSI',
  DecimalExponent: 'DecimalExponent',
} as const;
export type QuantityFormat = (typeof QuantityFormats)[keyof typeof QuantityFormats];

/**
 * An exact quantity: an integer count of nano-units (10^-9 of a core, of a byte) plus its notation.
 * A single bigint suffices because Kubernetes keeps nothing finer than 1n: ParseQuantity rounds a finer
 * value away from zero ("0.9n" -> 1n, "3.001n" -> 4n), so every value it can hold is a whole number of
 * nanos. Two quantities are equal exactly when their `nanos` are.
 */
export interface Quantity {
  readonly nanos: bigint;
  readonly format: QuantityFormat;
}

const MAX_INPUT_LENGTH = 100;
/** Magnitudes must stay below 10^this. Nothing a node counts comes within 80 orders of magnitude of it. */
const MAX_MAGNITUDE_DIGITS = 100;
/** Upstream refuses exponents outside ±MaxInt32 (kubernetes#141203: they used to wrap to unrelated values). */
const MAX_EXPONENT = 2_147_483_647n;
const NANOS_PER_UNIT = 1_000_000_000n;
const NANOS_PER_MILLI = 1_000_000n;
const MAX_INT64 = 2n ** 63n - 1n;
/**
 * Upstream silently caps BinarySI quantities at MaxInt64, so "8Ei" (2^63) reads as 2^63-1 (tracked
 * upstream as kubernetes#140674). We keep the cap: the point is to agree with the kubelet.
 */
const BINARY_CAP_NANOS = MAX_INT64 * NANOS_PER_UNIT;

// Maps, not object literals: a suffix such as "constructor" must not find Object.prototype's.
const DECIMAL_SUFFIXES = new Map<string, number>([
  ['n', -9],
  ['u', -6],
  ['m', -3],
  ['', 0],
  ['k', 3],
  ['M', 6],
  ['G', 9],
  ['T', 12],
  ['P', 15],
  ['E', 18],
]);
const DECIMAL_SUFFIX_BY_EXPONENT = new Map([...DECIMAL_SUFFIXES].map(([s, e]) => [e, s]));
const BINARY_SUFFIXES = new Map<string, number>([
  ['Ki', 10],
  ['Mi', 20],
  ['Gi', 30],
  ['Ti', 40],
  ['Pi', 50],
  ['Ei', 60],
]);
const BINARY_SUFFIX_BY_POWER = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'] as const;

/** Parse a quantity string exactly as Kubernetes does (see the notes at the top for the differences). */
export function parseQuantity(s: string): Quantity {
  if (s.length === 0) throw new QuantityError('EMPTY', s, '"" is not a quantity: the string is empty');
  if (s.length > MAX_INPUT_LENGTH) {
    const shown = JSON.stringify(s.slice(0, 24) + '…');
    throw new QuantityError(
      'TOO_LONG',
      s,
      `${shown} (${s.length} characters) is not a quantity: at most ${MAX_INPUT_LENGTH} characters are allowed`,
    );
  }
  if (/\s/u.test(s)) throw whitespaceError(s);
  const q = JSON.stringify(s);
  if (/^[+-]?(?:inf(?:inity)?|nan)$/i.test(s)) {
    throw new QuantityError('NOT_FINITE', s, `${q} is not a quantity: it must be a finite number`);
  }
  if (/^[+-]?0[xX]/.test(s)) {
    throw new QuantityError(
      'MALFORMED',
      s,
      `${q} is not a quantity: hexadecimal notation is not allowed; write the number in decimal`,
    );
  }

  const number = /^([+-]?)(\d*)(?:\.(\d*))?/.exec(s);
  const [matched = '', sign = '', whole = '', fraction] = number ?? [];
  if (whole === '' && !fraction)
    throw new QuantityError('MALFORMED', s, `${q} is not a quantity: ${noDigits(s)}`);
  const suffix = s.slice(matched.length);
  const { base, exponent, format } = interpretSuffix(s, suffix);

  const digits = (whole + (fraction ?? '')).replace(/^0+/, '');
  let nanos = 0n;
  if (digits !== '') {
    nanos =
      base === 2
        ? binaryNanos(digits, fraction?.length ?? 0, exponent)
        : decimalNanos(s, digits, exponent - BigInt(fraction?.length ?? 0));
  }
  let finalFormat = format;
  if (format === 'BinarySI') {
    if (nanos > BINARY_CAP_NANOS) nanos = BINARY_CAP_NANOS;
    // Upstream's own choice: a binary fraction of a unit is shown in decimal, not rounded to 0 or 1.
    if (nanos > 0n && nanos < NANOS_PER_UNIT) finalFormat = 'DecimalSI';
  }
  return { nanos: sign === '-' ? -nanos : nanos, format: finalFormat };
}

interface Suffix {
  base: 2 | 10;
  /** Power of the base; a bigint because a written exponent can be any length. */
  exponent: bigint;
  format: QuantityFormat;
}

function interpretSuffix(s: string, suffix: string): Suffix {
  const q = JSON.stringify(s);
  const decimal = DECIMAL_SUFFIXES.get(suffix);
  if (decimal !== undefined) return { base: 10, exponent: BigInt(decimal), format: 'DecimalSI' };
  const binary = BINARY_SUFFIXES.get(suffix);
  if (binary !== undefined) return { base: 2, exponent: BigInt(binary), format: 'BinarySI' };

  if (/^[eE][+-]?\d+$/.test(suffix)) {
    const exponent = BigInt(suffix.slice(1));
    if (exponent > MAX_EXPONENT || exponent < -MAX_EXPONENT) {
      throw new QuantityError(
        'OUT_OF_RANGE',
        s,
        `${q} is out of range: the exponent ${exponent} is outside the ±${MAX_EXPONENT} Kubernetes accepts`,
      );
    }
    return { base: 10, exponent, format: 'DecimalExponent' };
  }
  if (suffix.startsWith('.')) {
    throw new QuantityError('MALFORMED', s, `${q} is not a quantity: it has more than one decimal point`);
  }
  const exponentStart = /^[eE][+-]?\d+/.exec(suffix);
  if (exponentStart) {
    const rest = suffix.slice(exponentStart[0].length);
    const why = rest.startsWith('.')
      ? `the exponent must be a whole number`
      : `nothing may follow the exponent "${exponentStart[0]}"`;
    throw new QuantityError('MALFORMED', s, `${q} is not a quantity: ${why}`);
  }
  if (/^[eE][+-]?$/.test(suffix)) {
    throw new QuantityError(
      'MALFORMED',
      s,
      `${q} is not a quantity: the exponent after "${suffix[0]}" has no digits`,
    );
  }
  if (/^\p{L}/u.test(suffix)) {
    throw new QuantityError(
      'UNKNOWN_SUFFIX',
      s,
      `${q}: unknown suffix ${JSON.stringify(suffix)}${suggest(suffix)}`,
    );
  }
  const bad = JSON.stringify(String.fromCodePoint(suffix.codePointAt(0) ?? 0));
  const hint = suffix.startsWith(',')
    ? ' (a comma is neither a decimal point nor a digit separator here)'
    : '';
  throw new QuantityError(
    'MALFORMED',
    s,
    `${q} is not a quantity: unexpected ${bad} after the number${hint}`,
  );
}

/** value = digits × 10^scale, rounded away from zero to a whole number of nanos, as upstream rounds. */
function decimalNanos(s: string, digits: string, scale: bigint): bigint {
  if (BigInt(digits.length) + scale > BigInt(MAX_MAGNITUDE_DIGITS)) {
    throw new QuantityError(
      'OUT_OF_RANGE',
      s,
      `${JSON.stringify(s)} is out of range: quantities must be smaller than 10^${MAX_MAGNITUDE_DIGITS}`,
    );
  }
  const shift = scale + 9n;
  if (shift >= 0n) return BigInt(digits) * 10n ** shift;
  // Any non-zero amount finer than 1n becomes 1n: "if you want some resources, you should get some".
  if (-shift >= BigInt(digits.length)) return 1n;
  return ceilDiv(BigInt(digits), 10n ** -shift);
}

function binaryNanos(digits: string, fractionDigits: number, power: bigint): bigint {
  // The suffixes stop at Ei (2^60) and at most 100 characters come in, so this stays a few hundred bits.
  return ceilDiv((BigInt(digits) << power) * NANOS_PER_UNIT, 10n ** BigInt(fractionDigits));
}

function ceilDiv(n: bigint, d: bigint): bigint {
  return (n + d - 1n) / d;
}

/** n / d rounded away from zero: upstream's Value() and MilliValue() (both int64 and big paths). */
function divAwayFromZero(n: bigint, d: bigint): bigint {
  const q = n / d;
  if (n % d === 0n) return q;
  return n > 0n ? q + 1n : q - 1n;
}

function noDigits(s: string): string {
  if (/^[+-]$/.test(s) || /^[+-][^\d.]/.test(s)) return 'a sign must be followed by digits';
  if (/^[+-]?\./.test(s)) return 'a decimal point needs at least one digit beside it';
  return 'it must start with a number';
}

function suggest(suffix: string): string {
  if (/^(?:b|bytes?)$/i.test(suffix)) return ' (a number of bytes takes no suffix)';
  if (suffix === 'µ' || suffix === 'μ') return ' (did you mean "u"?)';
  const lead = suffix.charAt(0).toUpperCase();
  if (['K', 'M', 'G', 'T', 'P', 'E'].includes(lead)) {
    return ` (did you mean "${lead}i" or "${lead === 'K' ? 'k' : lead}"?)`;
  }
  return ' (known suffixes: n u m k M G T P E, Ki Mi Gi Ti Pi Ei, or an exponent such as e6)';
}

function whitespaceError(s: string): QuantityError {
  const q = JSON.stringify(s);
  const trimmed = s.trim();
  if (trimmed === '')
    return new QuantityError('EMPTY', s, `${q} is not a quantity: it contains only whitespace`);
  if (trimmed !== s) {
    return new QuantityError(
      'MALFORMED',
      s,
      `${q} is not a quantity: leading or trailing whitespace is not allowed`,
    );
  }
  const split = /^([+-]?(?:\d+\.?\d*|\.\d+))(\s+)(\S+)$/u.exec(s);
  if (split) {
    const [, , gap = '', suffix = ''] = split;
    const known =
      DECIMAL_SUFFIXES.has(suffix) || BINARY_SUFFIXES.has(suffix) || /^[eE][+-]?\d+$/.test(suffix);
    if (known) {
      const what = gap === ' ' ? 'a space' : gap === '\t' ? 'a tab' : 'whitespace';
      return new QuantityError(
        'MALFORMED',
        s,
        `${q} is not a quantity: ${what} is not allowed between the number and the suffix ${JSON.stringify(suffix)}`,
      );
    }
  }
  return new QuantityError(
    'MALFORMED',
    s,
    `${q} is not a quantity: whitespace is not allowed inside a quantity`,
  );
}

/**
 * CPU in whole millicores, rounded away from zero as upstream's MilliValue() does: any fraction of a
 * millicore counts as a whole one ("0.0001" -> 1, "1.0001" -> 1001, "-0.0001" -> -1).
 */
export function toMillicores(q: Quantity): number {
  const milli = divAwayFromZero(q.nanos, NANOS_PER_MILLI);
  if (milli > BigInt(Number.MAX_SAFE_INTEGER) || milli < -BigInt(Number.MAX_SAFE_INTEGER)) {
    const shown = formatQuantity(q);
    throw new QuantityError(
      'OUT_OF_RANGE',
      shown,
      `${JSON.stringify(shown)} is out of range: ${milli} millicores cannot be counted exactly (limit 2^53-1)`,
    );
  }
  return Number(milli);
}

/** Memory in whole bytes, rounded away from zero as upstream's Value() does ("0.5" -> 1, "1.1Ki" -> 1127). */
export function toBytes(q: Quantity): bigint {
  return divAwayFromZero(q.nanos, NANOS_PER_UNIT);
}

/** A CPU request or limit: a non-negative quantity, in millicores. */
export function parseCpuMillicores(s: string): number {
  return toMillicores(nonNegative(parseQuantity(s), s, 'a CPU amount'));
}

/** A memory request or limit: a non-negative quantity, in bytes. */
export function parseMemoryBytes(s: string): bigint {
  return toBytes(nonNegative(parseQuantity(s), s, 'a memory amount'));
}

function nonNegative(q: Quantity, s: string, what: string): Quantity {
  if (q.nanos < 0n)
    throw new QuantityError('NEGATIVE', s, `${JSON.stringify(s)}: ${what} cannot be negative`);
  return q;
}

/**
 * The canonical string, as upstream's String(): no fractional digits, the largest exponent that loses
 * nothing, in the quantity's own notation. BinarySI falls back to DecimalSI below 1024 or when the value
 * is not a whole number ("0.5Ki" -> "512", "1.1Ki" -> "1126400m"), and DecimalSI falls back to an
 * exponent beyond "E" ("1000E" -> "1e21").
 */
export function formatQuantity(q: Quantity): string {
  if (q.nanos === 0n) return '0';
  if (q.format === 'BinarySI') {
    const binary = formatBinary(q.nanos);
    if (binary !== null) return binary;
  }
  // Move every factor of ten into the exponent, then back out until the exponent is a multiple of 3.
  let mantissa = q.nanos;
  let exponent = -9;
  while (mantissa % 10n === 0n) {
    mantissa /= 10n;
    exponent += 1;
  }
  while (exponent % 3 !== 0) {
    mantissa *= 10n;
    exponent -= 1;
  }
  const si = q.format === 'DecimalExponent' ? undefined : DECIMAL_SUFFIX_BY_EXPONENT.get(exponent);
  if (si !== undefined) return `${mantissa}${si}`;
  return exponent === 0 ? `${mantissa}` : `${mantissa}e${exponent}`;
}

/** Binary notation, or null where upstream would switch to decimal for this value. */
function formatBinary(nanos: bigint): string | null {
  if (nanos % NANOS_PER_UNIT !== 0n) return null;
  const bytes = nanos / NANOS_PER_UNIT;
  if (bytes > -1024n && bytes < 1024n) return null;
  let mantissa = bytes;
  let power = 0;
  while (mantissa % 1024n === 0n && power < BINARY_SUFFIX_BY_POWER.length - 1) {
    mantissa /= 1024n;
    power += 1;
  }
  // Past Ei there is no suffix, and "1024Ei" would be capped on the way back in; say it in decimal.
  if (mantissa % 1024n === 0n) return null;
  return `${mantissa}${BINARY_SUFFIX_BY_POWER[power]}`;
}

/** Millicores for a status annotation: 500 -> "500m", 1000 -> "1", 1500 -> "1500m" (Kubernetes' canonical form). */
export function formatMillicores(m: number): string {
  const shown = String(m);
  if (!Number.isFinite(m))
    throw new QuantityError('NOT_FINITE', shown, `${shown} is not a number of millicores`);
  if (!Number.isInteger(m)) {
    throw new QuantityError('MALFORMED', shown, `${shown} is not a whole number of millicores`);
  }
  if (!Number.isSafeInteger(m)) {
    throw new QuantityError(
      'OUT_OF_RANGE',
      shown,
      `${shown} millicores cannot be counted exactly (limit 2^53-1)`,
    );
  }
  return formatQuantity({ nanos: BigInt(m) * NANOS_PER_MILLI, format: 'DecimalSI' });
}

/**
 * Bytes for a status annotation: binary SI when exact (536870912n -> "512Mi"), otherwise the plain integer.
 * Unlike upstream's BinarySI String(), 1000 stays "1000" rather than "1k"; values above MaxInt64 stay
 * decimal because "8Ei" would read back capped to 2^63-1.
 */
export function formatBytes(b: bigint): string {
  const magnitude = b < 0n ? -b : b;
  if (magnitude > MAX_INT64) return b.toString();
  return formatBinary(b * NANOS_PER_UNIT) ?? b.toString();
}

/** Exact three-way comparison; the notation plays no part ("1Ki" equals "1024"). */
export function compareQuantity(a: Quantity, b: Quantity): -1 | 0 | 1 {
  if (a.nanos === b.nanos) return 0;
  return a.nanos < b.nanos ? -1 : 1;
}
