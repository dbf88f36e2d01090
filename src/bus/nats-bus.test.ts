/**
 * The bus's idea of "connected" against a server that sends an error the client survives: a NATS
 * server may answer a garbled or refused operation with -ERR and keep the connection. The bus must
 * report the error but stay connected (a daemon that thinks it is cut off resigns its leadership).
 * The server here speaks just enough of the NATS protocol for the client, on a loopback port.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../../test/helpers/index.js';
import { NatsBus } from './nats-bus.js';

let server: Server | undefined;
const sockets = new Set<Socket>();
let bus: NatsBus | undefined;

afterEach(async () => {
  await bus?.stop();
  bus = undefined;
  for (const s of sockets) s.destroy();
  sockets.clear();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
});

/** Answers CONNECT and PING; `sendError()` sends -ERR on every open connection, which stays open. */
async function fakeNats(): Promise<{ url: string; sendError(text: string): void; drop(): void }> {
  server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.write(`INFO {"server_id":"fake","version":"2.9.0","host":"127.0.0.1","port":0,"max_payload":1048576,"proto":1,"headers":true}\r\n`);
    let buffered = '';
    socket.on('data', (chunk) => {
      buffered += chunk.toString('latin1');
      let end: number;
      while ((end = buffered.indexOf('\r\n')) >= 0) {
        const line = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        if (line.startsWith('PING')) socket.write('PONG\r\n');
      }
    });
  });
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return {
    url: `nats://127.0.0.1:${address.port}`,
    sendError: (text) => {
      for (const s of sockets) s.write(`-ERR '${text}'\r\n`);
    },
    drop: () => {
      for (const s of sockets) s.destroy();
    },
  };
}

describe('NatsBus connected', () => {
  it('stays connected through a server error it survives, and reports it', async () => {
    const nats = await fakeNats();
    bus = new NatsBus({ servers: [nats.url], name: 'test', connectTimeoutMs: 2_000 }, pino({ level: 'silent' }));
    await bus.start();
    await waitFor(() => bus!.connected, { what: 'connected', timeoutMs: 5_000 });
    nats.sendError('Unknown Protocol Operation');
    await waitFor(() => bus!.health().last_error !== null, { what: 'the error reported', timeoutMs: 5_000 });
    expect(bus.health().last_error).toMatch(/Unknown Protocol Operation|PROTOCOL/i);
    expect(bus.connected).toBe(true);
    expect(bus.health().healthy).toBe(true);
  });

  it('is not connected between a disconnect and the reconnect', async () => {
    const nats = await fakeNats();
    bus = new NatsBus({ servers: [nats.url], name: 'test', connectTimeoutMs: 2_000 }, pino({ level: 'silent' }));
    await bus.start();
    await waitFor(() => bus!.connected, { what: 'connected', timeoutMs: 5_000 });
    server!.close();
    nats.drop();
    await waitFor(() => !bus!.connected, { what: 'disconnected', timeoutMs: 5_000 });
    expect(bus.health()).toMatchObject({ healthy: false, last_error: expect.stringMatching(/disconnected/) });
  });
});
