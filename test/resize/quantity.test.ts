import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  QuantityError,
  QuantityErrorCodes,
  compareQuantity,
  formatBytes,
  formatMillicores,
  formatQuantity,
  parseCpuMillicores,
  parseMemoryBytes,
  parseQuantity,
  toBytes,
  toMillicores,
  type Quantity,
  type QuantityErrorCode,
} from '../../agent/resize/quantity.ts';

const MAX_INT64 = 2n ** 63n - 1n;

function expectError(fn: () => unknown, code: QuantityErrorCode): QuantityError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(QuantityError);
    const e = err as QuantityError;
    expect(e.code).toBe(code);
    return e;
  }
  throw new Error(`expected a ${code} QuantityError`);
}

describe('parseQuantity reads what Kubernetes reads', () => {
  // input, canonical String(), MilliValue() (NaN: beyond 2^53, refused), Value() — expectations taken from upstream's quantity_test.go
  // where it has them.
  const table: [string, string, number, bigint][] = [
    ['0', '0', 0, 0n],
    ['-0', '0', 0, 0n],
    ['1', '1', 1000, 1n],
    ['+5', '5', 5000, 5n],
    ['500m', '500m', 500, 1n],
    ['1000m', '1', 1000, 1n],
    ['0.5', '500m', 500, 1n],
    ['.5', '500m', 500, 1n],
    ['5.', '5', 5000, 5n],
    ['1.G', '1G', 1e12, 1_000_000_000n],
    ['100.035k', '100035', 100_035_000, 100_035n],
    ['5n', '5n', 1, 1n],
    ['4u', '4u', 1, 1n],
    ['8k', '8k', 8_000_000, 8000n],
    ['50k', '50k', 50_000_000, 50_000n],
    ['7M', '7M', 7e9, 7_000_000n],
    ['1000M', '1G', 1e12, 1_000_000_000n],
    ['6G', '6G', 6e12, 6_000_000_000n],
    ['5T', '5T', 5e15, 5n * 10n ** 12n],
    ['2P', '2P', NaN, 2n * 10n ** 15n],
    ['1E', '1E', NaN, 10n ** 18n],
    ['1000E', '1e21', NaN, 10n ** 21n],
    ['1Ki', '1Ki', 1_024_000, 1024n],
    ['7Mi', '7Mi', 7 * 2 ** 20 * 1000, 7n * 2n ** 20n],
    ['1024Mi', '1Gi', 2 ** 30 * 1000, 2n ** 30n],
    ['1.5Gi', '1536Mi', 1.5 * 2 ** 30 * 1000, 1_610_612_736n],
    ['5Ti', '5Ti', 5 * 2 ** 40 * 1000, 5n * 2n ** 40n],
    ['4Pi', '4Pi', NaN, 4n * 2n ** 50n],
    ['0.5Ki', '512', 512_000, 512n],
    ['1.1Ki', '1126400m', 1_126_400, 1127n],
    // 1000 bytes written in binary: under 1024 upstream switches to DecimalSI, so it prints as "1k".
    ['0.9765625Ki', '1k', 1_000_000, 1000n],
    ['1e3', '1e3', 1_000_000, 1000n],
    ['1E6', '1e6', 1e9, 1_000_000n],
    ['1e4', '10e3', 1e7, 10_000n],
    ['129e6', '129e6', 129e9, 129_000_000n],
    ['1.5e3', '1500', 1_500_000, 1500n],
    ['1.3E+6', '1300e3', 1.3e9, 1_300_000n],
    ['1e-3', '1e-3', 1, 1n],
    ['0.5e-2', '5e-3', 5, 1n],
    ['1e99', '1e99', NaN, 10n ** 99n],
    ['0.0001', '100u', 1, 1n],
    ['1.0001', '1000100u', 1001, 2n],
    ['-1.5', '-1500m', -1500, -2n],
    ['-0.0001', '-100u', -1, -1n],
    ['-1.0001', '-1000100u', -1001, -2n],
    ['-1Gi', '-1Gi', -(2 ** 30) * 1000, -(2n ** 30n)],
    // Finer than 1n rounds away from zero at parse time.
    ['0.9n', '1n', 1, 1n],
    ['3.001n', '4n', 1, 1n],
    ['0.00000012345', '124n', 1, 1n],
    ['1e-1000', '1e-9', 1, 1n],
    ['0.000000000001Ki', '2n', 1, 1n],
    ['0e2147483647', '0', 0, 0n],
  ];
  it.each(table)('%s -> %s', (input, canonical, milli, bytes) => {
    const q = parseQuantity(input);
    expect(formatQuantity(q)).toBe(canonical);
    expect(toBytes(q)).toBe(bytes);
    if (Number.isNaN(milli)) expectError(() => toMillicores(q), 'OUT_OF_RANGE');
    else expect(toMillicores(q)).toBe(milli);
  });

  it('remembers the notation it was written in', () => {
    expect(parseQuantity('1Ki').format).toBe('BinarySI');
    expect(parseQuantity('0Ki').format).toBe('BinarySI');
    expect(parseQuantity('1k').format).toBe('DecimalSI');
    expect(parseQuantity('1').format).toBe('DecimalSI');
    expect(parseQuantity('1e3').format).toBe('DecimalExponent');
    // A binary amount under one unit is kept as decimal, as upstream does.
    expect(parseQuantity('.000000000001Ki').format).toBe('DecimalSI');
  });

  it('keeps big values exact where a float would not', () => {
    expect(toBytes(parseQuantity('7Ei'))).toBe(8_070_450_532_247_928_832n);
    expect(toBytes(parseQuantity('9223372036854775808'))).toBe(2n ** 63n);
    expect(toBytes(parseQuantity('18446744073709551617'))).toBe(2n ** 64n + 1n);
    expect(toBytes(parseQuantity('9007199254740993'))).toBe(9_007_199_254_740_993n);
    expect(compareQuantity(parseQuantity('9007199254740993'), parseQuantity('9007199254740992'))).toBe(1);
  });

  it('caps binary quantities at MaxInt64 like upstream, so 8Ei reads as 2^63-1', () => {
    // Upstream's quantity_test.go: {"9Ei", maxAllowed}; 8Ei = 2^63 does not round-trip (kubernetes#140674).
    expect(toBytes(parseQuantity('8Ei'))).toBe(MAX_INT64);
    expect(toBytes(parseQuantity('9Ei'))).toBe(MAX_INT64);
    expect(toBytes(parseQuantity('9223372036854775807Ki'))).toBe(MAX_INT64);
    expect(toBytes(parseQuantity('-8Ei'))).toBe(-MAX_INT64);
    expect(formatQuantity(parseQuantity('8Ei'))).toBe('9223372036854775807');
    // Decimal quantities are not capped.
    expect(toBytes(parseQuantity('9.223372036854775808E'))).toBe(2n ** 63n);
  });

  it('compares exactly, whatever the notation', () => {
    expect(compareQuantity(parseQuantity('1Ki'), parseQuantity('1024'))).toBe(0);
    expect(compareQuantity(parseQuantity('1000m'), parseQuantity('1e0'))).toBe(0);
    expect(compareQuantity(parseQuantity('10000T'), parseQuantity('100Gi'))).toBe(1);
    expect(compareQuantity(parseQuantity('50m'), parseQuantity('100m'))).toBe(-1);
    expect(compareQuantity(parseQuantity('-1'), parseQuantity('0'))).toBe(-1);
  });

  it('formats even the longest accepted inputs back to something it accepts', () => {
    const longest = '-' + '9'.repeat(89) + '.' + '9'.repeat(9);
    expect(longest).toHaveLength(100);
    const q = parseQuantity(longest);
    expect(compareQuantity(parseQuantity(formatQuantity(q)), q)).toBe(0);
  });
});

describe('parseQuantity refuses what it cannot read, saying why', () => {
  const refused: [string, QuantityErrorCode, string?][] = [
    ['', 'EMPTY'],
    ['   ', 'EMPTY'],
    [' 1', 'MALFORMED', 'leading or trailing whitespace'],
    ['1 ', 'MALFORMED', 'leading or trailing whitespace'],
    ['10 Mi', 'MALFORMED', 'a space is not allowed between the number and the suffix "Mi"'],
    ['10\tGi', 'MALFORMED', 'a tab is not allowed'],
    ['1 0', 'MALFORMED', 'whitespace is not allowed'],
    ['1\u00a0Gi', 'MALFORMED', 'between the number and the suffix'],
    ['1.2.3', 'MALFORMED', 'more than one decimal point'],
    ['1..5', 'MALFORMED', 'more than one decimal point'],
    ['1.1.M', 'MALFORMED', 'more than one decimal point'],
    ['-', 'MALFORMED', 'a sign must be followed by digits'],
    ['+', 'MALFORMED', 'a sign must be followed by digits'],
    ['--1', 'MALFORMED', 'a sign must be followed by digits'],
    ['.', 'MALFORMED', 'a decimal point needs at least one digit'],
    ['-.', 'MALFORMED', 'a decimal point needs at least one digit'],
    ['.Gi', 'MALFORMED', 'a decimal point needs at least one digit'],
    ['Gi', 'MALFORMED', 'must start with a number'],
    ['aoeu', 'MALFORMED', 'must start with a number'],
    ['0x10', 'MALFORMED', 'hexadecimal'],
    ['1e', 'MALFORMED', 'has no digits'],
    ['-3.01e-', 'MALFORMED', 'has no digits'],
    ['1e1.5', 'MALFORMED', 'whole number'],
    ['1e3Ki', 'MALFORMED', 'nothing may follow the exponent "e3"'],
    ['1+1.0M', 'MALFORMED', 'unexpected "+"'],
    ['1,5', 'MALFORMED', 'comma'],
    ['1_000', 'MALFORMED', 'unexpected "_"'],
    ['Infinity', 'NOT_FINITE'],
    ['-Infinity', 'NOT_FINITE'],
    ['inf', 'NOT_FINITE'],
    ['NaN', 'NOT_FINITE'],
    ['1Kb', 'UNKNOWN_SUFFIX', 'unknown suffix "Kb" (did you mean "Ki" or "k"?)'],
    ['1KiB', 'UNKNOWN_SUFFIX', 'did you mean "Ki" or "k"?'],
    ['1GB', 'UNKNOWN_SUFFIX', 'did you mean "Gi" or "G"?'],
    ['0.1mi', 'UNKNOWN_SUFFIX', 'did you mean "Mi" or "M"?'],
    ['1K', 'UNKNOWN_SUFFIX', 'did you mean "Ki" or "k"?'],
    ['1b', 'UNKNOWN_SUFFIX', 'takes no suffix'],
    ['1i', 'UNKNOWN_SUFFIX', 'known suffixes'],
    ['.5i', 'UNKNOWN_SUFFIX'],
    ['1µ', 'UNKNOWN_SUFFIX', 'did you mean "u"?'],
    ['1constructor', 'UNKNOWN_SUFFIX'],
    ['1e101', 'OUT_OF_RANGE', 'smaller than 10^100'],
    ['1E100', 'OUT_OF_RANGE'],
    ['1e2147483648', 'OUT_OF_RANGE', 'exponent'],
    ['1e-99999999999', 'OUT_OF_RANGE', 'exponent'],
  ];
  it.each(refused)('%j -> %s', (input, code, words) => {
    const e = expectError(() => parseQuantity(input), code);
    expect(e.input).toBe(input);
    expect(e.message).toContain(JSON.stringify(input));
    if (words !== undefined) expect(e.message).toContain(words);
  });

  it('gives the exact messages for the common mistakes', () => {
    expect(expectError(() => parseQuantity('10 Mi'), 'MALFORMED').message).toBe(
      '"10 Mi" is not a quantity: a space is not allowed between the number and the suffix "Mi"',
    );
    expect(expectError(() => parseQuantity('1Kb'), 'UNKNOWN_SUFFIX').message).toBe(
      '"1Kb": unknown suffix "Kb" (did you mean "Ki" or "k"?)',
    );
  });

  it('refuses 500 digits as TOO_LONG, quoting the start', () => {
    const input = '9'.repeat(500);
    const e = expectError(() => parseQuantity(input), 'TOO_LONG');
    expect(e.input).toBe(input);
    expect(e.message).toContain('"' + '9'.repeat(24));
    expect(e.message).toContain('500 characters');
    expectError(() => parseQuantity('1'.repeat(101)), 'TOO_LONG');
    expect(toBytes(parseQuantity('1'.repeat(100)))).toBe(BigInt('1'.repeat(100)));
  });
});

describe('conversions', () => {
  it('parseCpuMillicores rounds any fraction of a millicore up', () => {
    expect(parseCpuMillicores('0.0001')).toBe(1);
    expect(parseCpuMillicores('1.0001')).toBe(1001);
    expect(parseCpuMillicores('250m')).toBe(250);
    expect(parseCpuMillicores('2')).toBe(2000);
    expect(parseCpuMillicores('1n')).toBe(1);
    expect(parseCpuMillicores('9007199254740991m')).toBe(Number.MAX_SAFE_INTEGER);
    expectError(() => parseCpuMillicores('9007199254740992m'), 'OUT_OF_RANGE');
    expectError(() => parseCpuMillicores('9e15'), 'OUT_OF_RANGE');
    const e = expectError(() => parseCpuMillicores('-100m'), 'NEGATIVE');
    expect(e.message).toContain('"-100m"');
    expectError(() => parseCpuMillicores('100 m'), 'MALFORMED');
  });

  it('parseMemoryBytes rounds any fraction of a byte up', () => {
    expect(parseMemoryBytes('0.5')).toBe(1n);
    expect(parseMemoryBytes('1.5k')).toBe(1500n);
    expect(parseMemoryBytes('1.0005k')).toBe(1001n);
    expect(parseMemoryBytes('512Mi')).toBe(536_870_912n);
    expect(parseMemoryBytes('1m')).toBe(1n);
    expect(parseMemoryBytes('-0')).toBe(0n);
    expectError(() => parseMemoryBytes('-1Gi'), 'NEGATIVE');
  });

  it('formatMillicores writes the canonical CPU form', () => {
    expect(formatMillicores(500)).toBe('500m');
    expect(formatMillicores(1000)).toBe('1');
    expect(formatMillicores(1500)).toBe('1500m');
    expect(formatMillicores(2000)).toBe('2');
    expect(formatMillicores(1)).toBe('1m');
    expect(formatMillicores(0)).toBe('0');
    expect(formatMillicores(1_000_000)).toBe('1k');
    expectError(() => formatMillicores(Number.NaN), 'NOT_FINITE');
    expectError(() => formatMillicores(Infinity), 'NOT_FINITE');
    expectError(() => formatMillicores(1.5), 'MALFORMED');
    expectError(() => formatMillicores(2 ** 53), 'OUT_OF_RANGE');
  });

  it('formatBytes uses binary SI only when exact', () => {
    expect(formatBytes(536_870_912n)).toBe('512Mi');
    expect(formatBytes(1024n)).toBe('1Ki');
    expect(formatBytes(1_572_864n)).toBe('1536Ki');
    expect(formatBytes(1536n)).toBe('1536');
    expect(formatBytes(1000n)).toBe('1000');
    expect(formatBytes(0n)).toBe('0');
    expect(formatBytes(-1024n)).toBe('-1Ki');
    expect(formatBytes(2n ** 62n)).toBe('4Ei');
    // "8Ei" would read back as 2^63-1.
    expect(formatBytes(2n ** 63n)).toBe('9223372036854775808');
    expect(formatBytes(2n ** 70n)).toBe('1180591620717411303424');
  });
});

// ---- properties ----------------------------------------------------------------------------------------

interface Parts {
  sign: '' | '+' | '-';
  whole: string;
  fraction: string | null;
  suffix: string;
}

const DECIMAL: Record<string, number> = { n: -9, u: -6, m: -3, '': 0, k: 3, M: 6, G: 9, T: 12, P: 15, E: 18 };
const BINARY: Record<string, number> = { Ki: 10, Mi: 20, Gi: 30, Ti: 40, Pi: 50, Ei: 60 };

const digits = (maxLength: number) => fc.string({ unit: fc.constantFrom(...'0123456789'), maxLength });
const suffixArb = fc.oneof(
  fc.constantFrom(...Object.keys(DECIMAL), ...Object.keys(BINARY)),
  fc
    .tuple(fc.constantFrom('e', 'E'), fc.constantFrom('', '+', '-'), fc.integer({ min: 0, max: 40 }))
    .map(([e, sign, n]) => `${e}${sign}${n}`),
);
const partsArb = (maxDigits = 12, suffix = suffixArb) =>
  fc
    .record({
      sign: fc.constantFrom<Parts['sign']>('', '+', '-'),
      whole: digits(maxDigits),
      fraction: fc.option(digits(maxDigits), { nil: null }),
      suffix,
    })
    .filter((p) => p.whole.length + (p.fraction ?? '').length > 0);

const render = (p: Parts) => `${p.sign}${p.whole}${p.fraction === null ? '' : '.' + p.fraction}${p.suffix}`;

/** The written value as an exact fraction num/den (den > 0), computed without the module under test. */
function exact(p: Parts): { num: bigint; den: bigint } {
  let num = BigInt((p.whole + (p.fraction ?? '')).replace(/^$/, '0'));
  let den = 10n ** BigInt((p.fraction ?? '').length);
  const pow10 = (e: number) => {
    if (e >= 0) num *= 10n ** BigInt(e);
    else den *= 10n ** BigInt(-e);
  };
  if (p.suffix in BINARY) num <<= BigInt(BINARY[p.suffix] ?? 0);
  else if (p.suffix in DECIMAL) pow10(DECIMAL[p.suffix] ?? 0);
  else pow10(Number(p.suffix.slice(1)));
  return { num: p.sign === '-' ? -num : num, den };
}

const awayFromZero = (n: bigint, d: bigint) => {
  const q = n / d;
  return n % d === 0n ? q : n > 0n ? q + 1n : q - 1n;
};
const cmp = (a: { num: bigint; den: bigint }, b: { num: bigint; den: bigint }) => {
  const l = a.num * b.den;
  const r = b.num * a.den;
  return l === r ? 0 : l < r ? -1 : 1;
};
/** Kubernetes' reading of the exact value: nanos rounded away from zero, binary capped at MaxInt64. */
function kubeNanos(p: Parts): bigint {
  const { num, den } = exact(p);
  const nanos = awayFromZero(num * 10n ** 9n, den);
  const cap = MAX_INT64 * 10n ** 9n;
  if (p.suffix in BINARY && (nanos > cap || nanos < -cap)) return nanos < 0n ? -cap : cap;
  return nanos;
}
/**
 * The value parse must order by: the exact one, except that apimachinery caps binary-suffix values at
 * ±int64 max and decimal ones not, so past the cap -80000Pi reads as -(2^63-1) and sorts after -40000P.
 */
function orderedValue(p: Parts): { num: bigint; den: bigint } {
  const { num, den } = exact(p);
  const nanos = awayFromZero(num * 10n ** 9n, den);
  const cap = MAX_INT64 * 10n ** 9n;
  const capped = p.suffix in BINARY && (nanos > cap || nanos < -cap);
  return capped ? { num: kubeNanos(p), den: 10n ** 9n } : { num, den };
}
const safeMillicores = (q: Quantity) => {
  try {
    return toMillicores(q);
  } catch (err) {
    expect((err as QuantityError).code).toBe('OUT_OF_RANGE');
    return null;
  }
};

describe('properties', () => {
  it('parse agrees with an independent exact reading, and its conversions round away from zero', () => {
    fc.assert(
      fc.property(partsArb(), (p) => {
        const q = parseQuantity(render(p));
        const nanos = kubeNanos(p);
        expect(q.nanos).toBe(nanos);
        expect(toBytes(q)).toBe(awayFromZero(nanos, 10n ** 9n));
        const milli = awayFromZero(nanos, 10n ** 6n);
        if (milli <= BigInt(Number.MAX_SAFE_INTEGER) && milli >= -BigInt(Number.MAX_SAFE_INTEGER)) {
          expect(toMillicores(q)).toBe(Number(milli));
        } else {
          expectError(() => toMillicores(q), 'OUT_OF_RANGE');
        }
      }),
    );
  });

  it('format(parse(x)) parses back to an equal quantity, and is a fixed point', () => {
    fc.assert(
      fc.property(partsArb(), (p) => {
        const q = parseQuantity(render(p));
        const text = formatQuantity(q);
        const back = parseQuantity(text);
        expect(compareQuantity(back, q)).toBe(0);
        expect(formatQuantity(back)).toBe(text);
        expect(text).not.toMatch(/\./);
      }),
    );
  });

  it('parse is monotonic: compareQuantity, toBytes and toMillicores follow the exact order', () => {
    fc.assert(
      fc.property(partsArb(), partsArb(), (pa, pb) => {
        const order = cmp(orderedValue(pa), orderedValue(pb));
        const a = parseQuantity(render(pa));
        const b = parseQuantity(render(pb));
        const c = compareQuantity(a, b);
        expect(compareQuantity(b, a)).toBe(c === 0 ? 0 : -c);
        if (order === 0) expect(c).toBe(0);
        // Rounding to nanos and the binary cap may merge neighbours, never swap them.
        if (order < 0) {
          expect(c).toBeLessThanOrEqual(0);
          expect(toBytes(a) <= toBytes(b)).toBe(true);
          const [ma, mb] = [safeMillicores(a), safeMillicores(b)];
          if (ma !== null && mb !== null) expect(ma).toBeLessThanOrEqual(mb);
        }
      }),
    );
  });

  it('compareQuantity is strict where no rounding can happen', () => {
    const exactSuffix = fc.constantFrom('m', '', 'k', 'M', 'Ki', 'Mi', 'e3', 'e-3');
    fc.assert(
      fc.property(partsArb(6, exactSuffix), partsArb(6, exactSuffix), (pa, pb) => {
        const c = compareQuantity(parseQuantity(render(pa)), parseQuantity(render(pb)));
        expect(c).toBe(cmp(exact(pa), exact(pb)));
      }),
    );
  });

  it('millicores and bytes survive formatting', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), (m) => {
        expect(parseCpuMillicores(formatMillicores(m))).toBe(m);
      }),
    );
    fc.assert(
      fc.property(fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }), (b) => {
        expect(toBytes(parseQuantity(formatBytes(b)))).toBe(b);
      }),
    );
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 2n ** 20n }), fc.integer({ min: 0, max: 6 }), (m, k) => {
        const b = m << BigInt(10 * k);
        expect(parseMemoryBytes(formatBytes(b))).toBe(b);
      }),
    );
  });

  it('never throws anything but a QuantityError, and what it accepts round-trips', () => {
    const codes = new Set<string>(Object.values(QuantityErrorCodes));
    const check = (s: string) => {
      let q: Quantity;
      try {
        q = parseQuantity(s);
      } catch (err) {
        // Plain checks, not expect(): this runs a few thousand times and expect() would cost seconds.
        if (!(err instanceof QuantityError) || !codes.has(err.code) || err.input !== s) throw err;
        return;
      }
      if (compareQuantity(parseQuantity(formatQuantity(q)), q) !== 0)
        throw new Error(`${s} did not round-trip`);
    };
    const nearMiss = fc.string({ unit: fc.constantFrom(...'0123456789.+-eEinumkKMGTPxb \t'), maxLength: 16 });
    fc.assert(fc.property(fc.string(), check), { numRuns: 300 });
    // Any code point, lone surrogates included: what fc.string({ unit: 'binary' }) (v4's fullUnicodeString)
    // gives, without the second that building that arbitrary's tables costs.
    const fullUnicode = fc.string({
      unit: fc.integer({ min: 0, max: 0x10ffff }).map((c) => String.fromCodePoint(c)),
    });
    fc.assert(fc.property(fullUnicode, check), { numRuns: 300 });
    fc.assert(fc.property(fc.string({ unit: 'grapheme' }), check), { numRuns: 300 });
    fc.assert(fc.property(nearMiss, check), { numRuns: 1000 });
  });
});
