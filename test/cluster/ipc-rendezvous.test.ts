/** The primary's table for `serve --workers` (pure bookkeeping) and a worker's IpcRendezvous over a channel pair. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { IpcRendezvous, PrimaryRendezvousTable, isRvRequest, type IpcChannel } from '../../src/relay/cluster/ipc-rendezvous.ts';

/** Two workers wired to one table through in-process channels (the same messages node:cluster carries). */
function workers(maxWaiting = 64): { table: PrimaryRendezvousTable; w: IpcRendezvous<string>[] } {
  const table = new PrimaryRendezvousTable(maxWaiting);
  const w = [1, 2].map((workerId) => {
    const toWorker = new EventEmitter();
    const channel: IpcChannel = {
      send(m, cb) {
        assert.ok(isRvRequest(m));
        const answer = table.handle(workerId, m);
        setImmediate(() => {
          toWorker.emit('message', structuredClone(answer));
          cb?.(null);
        });
        return true;
      },
      on: (e, l) => toWorker.on(e, l),
      off: (e, l) => toWorker.off(e, l),
    };
    return new IpcRendezvous<string>(channel, 1000);
  });
  return { table, w };
}

test('same worker pairs; the other worker is refused and the partner keeps waiting; release frees the key', { timeout: 5000 }, async () => {
  const { w } = workers();
  const key = { token: 't', nonce: '' };
  assert.deepEqual(await w[0]!.offer(key, 'a'), { kind: 'waiting' });
  assert.deepEqual(await w[1]!.offer(key, 'b'), { kind: 'partner-elsewhere', node: 'worker-1' });
  assert.deepEqual(await w[0]!.offer(key, 'c'), { kind: 'paired', partner: 'a' });
  assert.deepEqual(await w[1]!.offer(key, 'd'), { kind: 'tunnel-exists' });
  await w[0]!.release(key);
  assert.deepEqual(await w[1]!.offer(key, 'e'), { kind: 'waiting' });
});

test('the per-token limit holds across workers; a worker that exits frees its keys', { timeout: 5000 }, async () => {
  const { table, w } = workers(2);
  assert.equal((await w[0]!.offer({ token: 't', nonce: '1' }, 'a')).kind, 'waiting');
  assert.equal((await w[1]!.offer({ token: 't', nonce: '2' }, 'b')).kind, 'waiting');
  assert.equal((await w[1]!.offer({ token: 't', nonce: '3' }, 'c')).kind, 'too-many-waiting');
  table.dropWorker(1);
  assert.equal((await w[1]!.offer({ token: 't', nonce: '1' }, 'd')).kind, 'waiting');
  assert.equal(table.size, 2);
});

test('50 concurrent offers on one key in one worker: exactly one pairing', { timeout: 5000 }, async () => {
  const { w } = workers();
  const r = await Promise.all(Array.from({ length: 50 }, (_, i) => w[0]!.offer({ token: 'race', nonce: '' }, `p${i}`)));
  assert.equal(r.filter((x) => x.kind === 'paired').length, 1);
  assert.equal(r.filter((x) => x.kind === 'waiting').length, 1);
});

test('a primary that does not answer: the offer fails after the request timeout', { timeout: 5000 }, async () => {
  const rv = new IpcRendezvous<string>({ send: () => true, on: () => undefined, off: () => undefined }, 100);
  await assert.rejects(rv.offer({ token: 't', nonce: '' }, 'a'), /did not answer within 100 ms/);
});

test('a client moving between workers takes its key\'s tunnel along: the receiving worker releases it; only the holder can move it', { timeout: 5000 }, async () => {
  const { table, w } = workers();
  for (const rv of w) rv.advertise('/tmp/w.sock');
  const key = { token: 'move', nonce: '' };
  assert.deepEqual(await w[0]!.offer(key, 'a'), { kind: 'waiting' });
  const offer = await w[1]!.offer(key, 'b');
  assert.equal(offer.kind, 'paired-remote');
  // Worker 2 hands its client over: the slot leaves its set, the primary moves the tunnel to worker 1.
  const slot = w[1]!.tunnelMovedOut(key)!;
  assert.equal(w[1]!.tunnelMovedOut(key), undefined, 'moved out once');
  assert.equal(table.moveTunnel(slot, 1, 2), false, 'worker 1 does not hold it yet');
  assert.equal(table.moveTunnel(slot, 2, 1), true);
  w[0]!.tunnelMovedIn(key);
  // Worker 2 no longer releases it; worker 1 does, and the key is free again.
  await w[1]!.release(key);
  assert.deepEqual(await w[1]!.offer(key, 'c'), { kind: 'tunnel-exists' });
  await w[0]!.release(key);
  assert.deepEqual(await w[1]!.offer(key, 'd'), { kind: 'waiting' });
});
