/**
 * Counts the large buffers a read-buffer pool (src/relay/read-buffers.ts) hands out from now on: how tests
 * see that a link really reads into the pool (a count of 0 means Node's own fresh reads went on).
 */
import { TUNNEL_READ_BUFFERS, type ReadBuffers } from '../../src/relay/read-buffers.ts';

/** Distinct large buffers `of` (the plain sockets' pool by default) handed out until `stop()`. */
export function countLargeBuffers(of: ReadBuffers = TUNNEL_READ_BUFFERS): { count: () => number; stop: () => void } {
  const pool = of as unknown as { large: () => Buffer };
  const original = pool.large.bind(pool);
  const seen = new Set<Buffer>();
  pool.large = () => {
    const b = original();
    seen.add(b);
    return b;
  };
  return { count: () => seen.size, stop: () => void (pool.large = original) };
}
