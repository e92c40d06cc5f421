import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { generate, parser as createParser, type IConnackPacket, type IConnectPacket } from 'mqtt-packet';
import { stringify } from 'yaml';
import { hashPassword } from '../../src/broker/auth-hash.js';
import { loadUsersFile, type UserTable } from '../../src/broker/auth-users.js';
import type { ConfigIssue } from '../../src/config/issues.js';

/** Cheap scrypt parameters for test users (the verification path is the same). */
export const FAST_SCRYPT = { N: 1024, r: 8, p: 1 } as const;

/** Writes a users file for `passwords` (name → password) into a fresh temp dir and loads it. */
export async function writeUsers(passwords: Record<string, string>, dir = mkdtempSync(path.join(tmpdir(), 'signalbox-users-'))): Promise<{ file: string; users: UserTable }> {
  const users: Record<string, { password: string }> = {};
  for (const [name, password] of Object.entries(passwords)) users[name] = { password: await hashPassword(password, FAST_SCRYPT) };
  const file = path.join(dir, 'users.yaml');
  writeFileSync(file, stringify({ users }), { mode: 0o600 });
  const issues: ConfigIssue[] = [];
  const table = loadUsersFile(file, issues);
  if (!table) throw new Error(`test users file did not load: ${JSON.stringify(issues)}`);
  return { file, users: table };
}

/**
 * Opens a TCP connection from `localAddress` (any 127.x.y.z works on Linux), sends CONNECT
 * and resolves with the CONNACK, or undefined if the connection closed without one. The
 * socket is returned so the caller closes it.
 */
export function connectFrom(
  port: number,
  localAddress: string,
  fields: Partial<IConnectPacket>,
): { socket: net.Socket; connack: Promise<IConnackPacket | undefined> } {
  const protocolVersion = fields.protocolVersion ?? 4;
  const socket = net.connect({ host: '127.0.0.1', port, localAddress });
  socket.on('error', () => undefined);
  const connack = new Promise<IConnackPacket | undefined>((resolve) => {
    const p = createParser({ protocolVersion });
    p.on('packet', (packet) => {
      if (packet.cmd === 'connack') resolve(packet);
    });
    p.on('error', () => resolve(undefined));
    socket.on('data', (chunk: Buffer) => p.parse(chunk));
    socket.on('close', () => resolve(undefined));
  });
  socket.on('connect', () => {
    socket.write(generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion, clientId: `c-${Math.random().toString(36).slice(2)}`, clean: true, keepalive: 0, ...fields }, { protocolVersion }));
  });
  return { socket, connack };
}
