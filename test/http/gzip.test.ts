// gzip in parallel pieces must be one ordinary gzip member that any client inflates to the same bytes.
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { crc32, gunzipSync, gzipSync, inflateRawSync } from 'node:zlib';
import { gzipParallel } from '../../agent/gzip.ts';

/** Text like an exposition: long repeated label sets with changing numbers. */
function exposition(lines: number): Buffer {
  const out: string[] = [];
  for (let i = 0; i < lines; i++) {
    out.push(
      `container_memory_usage_bytes{container="app",id="/kubepods/burstable/pod${i % 97}/${'ab'.repeat(32)}",` +
        `image="registry.example/app:1.0",name="${'ab'.repeat(32)}",namespace="bench",pod="pod-${i % 97}"} ${i * 4096}`,
    );
  }
  return Buffer.from(out.join('\n') + '\n');
}

describe('gzip in parallel pieces', () => {
  test('inflates to the input, whatever its size and the number of pieces', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ minLength: 0, maxLength: 300_000 }),
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1, max: 9 }),
        async (bytes, pieces, level) => {
          const data = Buffer.from(bytes);
          const z = await gzipParallel(data, { pieces, minPieceBytes: 1, level });
          expect(gunzipSync(z).equals(data)).toBe(true);
        },
      ),
      { numRuns: 40 },
    );
  });

  test('is a single gzip member: one deflate stream between the header and a trailer of the whole', async () => {
    const data = exposition(20_000);
    const z = await gzipParallel(data, { pieces: 3 });
    expect([...z.subarray(0, 4)]).toEqual([0x1f, 0x8b, 0x08, 0x00]);
    // inflateRaw of the body alone would stop at a second member's header and leave bytes over.
    expect(inflateRawSync(z.subarray(10, z.length - 8)).equals(data)).toBe(true);
    expect(z.readUInt32LE(z.length - 8)).toBe(crc32(data) >>> 0);
    expect(z.readUInt32LE(z.length - 4)).toBe(data.length);
  });

  test('later pieces reach back into earlier ones (the dictionary): no larger than one-piece gzip', async () => {
    // 16 KiB of noise repeated: compressible only by references to an earlier copy, which for the first
    // bytes of each piece lie in the piece before it.
    const noise = randomBytes(16 * 1024);
    const data = Buffer.concat(Array.from({ length: 64 }, () => noise));
    const one = gzipSync(data, { level: 1 }).length;
    for (const pieces of [2, 4]) {
      const z = await gzipParallel(data, { pieces, minPieceBytes: 1 });
      expect(gunzipSync(z).equals(data)).toBe(true);
      expect(z.length, `${pieces} pieces`).toBeLessThan(one * 1.1);
    }
    // And on exposition-like text, within 1-2 % of one piece.
    const text = exposition(20_000);
    const textOne = gzipSync(text, { level: 1 }).length;
    expect((await gzipParallel(text, { pieces: 2 })).length).toBeLessThan(textOne * 1.01);
  });

  test('small inputs are not split', async () => {
    const data = exposition(100);
    const z = await gzipParallel(data, { pieces: 4 });
    expect(z.equals(gzipSync(data, { level: 1 }))).toBe(true);
  });
});
