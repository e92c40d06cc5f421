import { afterEach, describe, expect, it } from 'vitest';
import { connect, startBroker, waitFor, type TestBroker } from '../helpers/mqtt.js';
import { openRaw, type RawClient, type RawClientOptions } from '../helpers/raw-client.js';

// Each test closes its broker itself, since that is what it tests; the cleanup only catches a test that
// failed before it got there (a second close() is a no-op). Clients are dropped first.
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Resolves with `promise` if it settles within `ms`; otherwise rejects naming `what`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

async function broker(): Promise<TestBroker> {
  const b = await startBroker();
  cleanups.push(() => within(b.close(), 5000, 'broker.close() in cleanup'));
  return b;
}

async function raw(b: TestBroker, options: RawClientOptions = {}): Promise<RawClient> {
  const r = await openRaw(b.port, options);
  cleanups.push(() => r.destroy());
  return r;
}

describe('broker.close()', () => {
  it('sends MQTT 5 clients DISCONNECT 0x8B (Server shutting down) and closes their connections', async () => {
    const b = await broker();
    const r = await raw(b, { protocolVersion: 5 });
    expect((await r.connect({ clientId: 'v5-at-shutdown' })).reasonCode).toBe(0);
    // The clients are watched while close() runs: what they see must not depend on when it resolves.
    const closing = b.close();
    expect(await r.expectPacket('disconnect')).toMatchObject({ reasonCode: 0x8b });
    await r.closed();
    await within(closing, 2000, 'broker.close()');
  });

  it('MQTT.js 5 sees the DISCONNECT 0x8B as a disconnect event', async () => {
    const b = await broker();
    const c = await connect(b.url, { protocolVersion: 5, clientId: 'mqttjs-at-shutdown' });
    cleanups.push(() => c.end(true));
    const disconnected = waitFor<{ reasonCode?: number }>(c as unknown as NodeJS.EventEmitter, 'disconnect', { within: 2000 });
    const closing = b.close();
    expect((await disconnected).reasonCode).toBe(0x8b);
    await within(closing, 2000, 'broker.close()');
  });

  it('closes MQTT 3.1.1 and 3.1 client sockets without sending them anything', async () => {
    const b = await broker();
    const v4 = await raw(b);
    expect((await v4.connect({ clientId: 'v4-at-shutdown' })).returnCode).toBe(0);
    const v3 = await raw(b, { protocolVersion: 3 });
    expect((await v3.connect({ clientId: 'v3-at-shutdown' })).returnCode).toBe(0);
    const closing = b.close();
    for (const r of [v4, v3]) {
      await r.closed();
      await expect(r.nextPacket({ within: 0 })).rejects.toThrow(/closed with no packet/);
    }
    await within(closing, 2000, 'broker.close()');
  });

  it('closes a connection that has not sent CONNECT yet', async () => {
    const b = await broker();
    const r = await raw(b);
    const closing = b.close();
    await r.closed();
    await within(closing, 2000, 'broker.close()');
  });

  it('stops accepting connections once it resolves', async () => {
    const b = await broker();
    await within(b.close(), 2000, 'broker.close() with no clients');
    await expect(openRaw(b.port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });
});
