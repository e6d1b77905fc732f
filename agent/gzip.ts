// gzip for /metrics, compressed in parallel pieces on libuv's threads, as pigz does: a busy node's ~3 MB
// exposition takes ~16 ms to deflate on one thread of the 2-core bench machine, and a scrape waits for all
// of it; in two pieces ~11 ms. The result is one ordinary gzip member (RFC 1952), not concatenated members
// (which some HTTP clients stop reading after the first):
// - each piece is a raw deflate stream; every piece but the last ends with a sync flush (an empty stored
//   block, byte-aligned, not final), so the pieces concatenate into one deflate stream;
// - each piece after the first is primed with the 32 KiB before it as its dictionary, so its
//   back-references may reach into the previous piece exactly as the decoder's window will hold it;
// - the header is gzip's fixed 10 bytes, the trailer the CRC-32 and length of the whole input (the CRC on
//   the event loop: ~1 ms for 3 MB).
import { promisify } from 'node:util';
import { constants, crc32, deflateRaw, gzip, type ZlibOptions } from 'node:zlib';

const deflateRawAsync = promisify<Buffer, ZlibOptions, Buffer>(deflateRaw);
const gzipAsync = promisify<Buffer, ZlibOptions, Buffer>(gzip);

/** deflate's window: how far back a reference may reach. */
const WINDOW = 32 * 1024;
/** ID1 ID2, CM=deflate, FLG=0, MTIME=0 (none), XFL=0, OS=3 (Unix). */
const HEADER = Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03]);

export interface ParallelGzipOptions {
  /**
   * Pieces compressed at once (libuv runs 4 threads unless UV_THREADPOOL_SIZE says otherwise). Two
   * measured best on 2 cores: three or four were no faster.
   */
  pieces?: number;
  /** No piece smaller than this: below it the split costs more than it saves. */
  minPieceBytes?: number;
  level?: number;
}

export async function gzipParallel(data: Buffer, opts: ParallelGzipOptions = {}): Promise<Buffer> {
  const level = opts.level ?? constants.Z_BEST_SPEED;
  const minPiece = Math.max(opts.minPieceBytes ?? 256 * 1024, WINDOW);
  const pieces = Math.max(1, Math.min(opts.pieces ?? 2, Math.floor(data.length / minPiece)));
  // A piece's output is ~1/7 of its input on /metrics text: an output buffer of a quarter of the input
  // holds it whole, rather than zlib's default 16 KiB chunks concatenated.
  const chunkSize = Math.max(64 * 1024, Math.ceil(data.length / pieces / 4));
  if (pieces === 1) return gzipAsync(data, { level, chunkSize });

  const size = Math.ceil(data.length / pieces);
  const parts: Promise<Buffer>[] = [];
  for (let start = 0; start < data.length; start += size) {
    const end = Math.min(start + size, data.length);
    parts.push(
      deflateRawAsync(data.subarray(start, end), {
        level,
        chunkSize,
        finishFlush: end === data.length ? constants.Z_FINISH : constants.Z_SYNC_FLUSH,
        ...(start > 0 ? { dictionary: data.subarray(Math.max(0, start - WINDOW), start) } : {}),
      }),
    );
  }
  const trailer = Buffer.alloc(8);
  trailer.writeUInt32LE(crc32(data) >>> 0, 0);
  trailer.writeUInt32LE(data.length % 2 ** 32, 4);
  return Buffer.concat([HEADER, ...(await Promise.all(parts)), trailer]);
}
