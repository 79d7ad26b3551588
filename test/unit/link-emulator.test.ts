// The benchmark's link emulator: the delay schedule (pure), and the relay on loopback keeps
// the round trip, the order and every byte.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, connect, type AddressInfo } from "node:net";
import {
  connectDelayMs,
  DirectionSchedule,
  LINK_PROFILES,
  lossPenaltyMs,
  oneWayMs,
  parseRoute,
  RTO_MIN_MS,
  SYN_RTO_MS,
  startRelay,
  type LinkProfile,
} from "../support/link-emulator.js";

const lte = LINK_PROFILES.lte;
/** A fixed sequence of "random" numbers, repeated. */
const sequence = (...xs: number[]) => {
  let i = 0;
  return () => xs[i++ % xs.length];
};

test("one way is half of RTT ± jitter", () => {
  assert.equal(
    oneWayMs(lte, () => 0),
    (60 - 20) / 2,
  );
  assert.equal(
    oneWayMs(lte, () => 0.5),
    30,
  );
  assert.ok(Math.abs(oneWayMs(lte, () => 0.999999) - 40) < 0.001);
  const wild: LinkProfile = { name: "wild", rttMs: 5, jitterMs: 20, loss: 0 };
  assert.equal(
    oneWayMs(wild, () => 0),
    0,
    "never negative",
  );
});

test("a lost segment costs one RTO; a big chunk has more segments to lose", () => {
  assert.equal(
    lossPenaltyMs(lte, 100, () => 0.5),
    0,
  );
  assert.equal(
    lossPenaltyMs(lte, 100, () => 0.001),
    RTO_MIN_MS,
  );
  // 10 segments: the 10th is lost
  assert.equal(lossPenaltyMs(lte, 14480, sequence(0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.001)), RTO_MIN_MS);
  // 1 segment: only the first draw counts
  assert.equal(lossPenaltyMs(lte, 1448, sequence(0.5, 0.001)), 0);
});

test("the handshake takes 1.5 round trips, plus 1 s per lost SYN or SYN-ACK", () => {
  assert.equal(
    connectDelayMs(lte, () => 0.5),
    90,
  );
  assert.equal(connectDelayMs(lte, sequence(0.001, 0.5, 0.5, 0.5, 0.5)), 90 + SYN_RTO_MS);
});

test("a direction keeps its order: a chunk never overtakes the one before it", () => {
  // the first chunk draws the longest delay (40 ms), the second the shortest (20 ms), no loss
  const s = new DirectionSchedule(lte, sequence(0.5, 0.999999, 0.5, 0));
  const a = s.release(1000, 10);
  const b = s.release(1001, 10);
  assert.ok(Math.abs(a - 1040) < 0.001, `first at ${a}`);
  assert.equal(b, a, "the second waits for the first");
  const c = new DirectionSchedule(lte, sequence(0.5, 0)).release(1000, 10);
  assert.equal(c, 1020);
  // with loss: the lost one and everything behind it wait an RTO
  const lossy = new DirectionSchedule(lte, sequence(0.001, 0.5, 0.5, 0.5));
  assert.equal(lossy.release(0, 10), 30 + RTO_MIN_MS);
  assert.equal(lossy.release(5, 10), 30 + RTO_MIN_MS);
  assert.equal(lossy.lost, 1);
});

test("routes are parsed, bad ones named", () => {
  assert.deepEqual(parseRoute("127.77.0.11:22=10.88.0.11:22"), { listen: { host: "127.77.0.11", port: 22 }, target: { host: "10.88.0.11", port: 22 } });
  assert.throws(() => parseRoute("10.88.0.11"), /LISTEN_IP:PORT=TARGET_IP:PORT, got "10.88.0.11"/);
});

test("the relay on loopback: a request and its answer take at least a round trip, bytes arrive whole and in order", async () => {
  const echo = createServer((c) => c.pipe(c));
  await new Promise<void>((resolve) => echo.listen(0, "127.0.0.1", resolve));
  const port = (echo.address() as AddressInfo).port;
  const profile: LinkProfile = { name: "test", rttMs: 60, jitterMs: 20, loss: 0.05 };
  const relay = await startRelay(profile, [{ listen: { host: "127.0.0.1", port: 0 }, target: { host: "127.0.0.1", port } }]);
  try {
    const start = Date.now();
    const c = connect(relay.ports[0], "127.0.0.1");
    const chunks: Buffer[] = [];
    const sent: Buffer[] = [];
    c.on("data", (d: Buffer) => chunks.push(d));
    await new Promise<void>((resolve) => c.once("connect", () => resolve()));
    // 200 writes of different sizes, one after the other, without waiting
    for (let i = 0; i < 200; i++) {
      const b = Buffer.alloc(1 + ((i * 997) % 5000), i % 256);
      sent.push(b);
      c.write(b);
    }
    c.end();
    await new Promise<void>((resolve) => c.once("end", () => resolve()));
    const took = Date.now() - start;
    assert.ok(Buffer.concat(chunks).equals(Buffer.concat(sent)), "every byte back, in order");
    // handshake (1.5 RTT) + there and back (1 RTT), at the shortest round trip (40 ms)
    assert.ok(took >= 2.5 * 40, `took ${took} ms`);
    assert.equal(relay.counters.connections, 1);
    assert.ok(relay.counters.delayedByLoss > 0, "with 5 % loss, some of ~400 chunks were held back");
    c.destroy();
  } finally {
    await relay.close();
    echo.close();
  }
});
