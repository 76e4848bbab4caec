// Starts a real `tipd devnet` (a ledger and N nodes as processes on
// loopback) for the end-to-end test and stops it afterwards.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface DevnetNode {
  name: string;
  node_id: string;
  rpc_url: string;
  token_file: string;
  log: string;
}
export interface Devnet {
  dir: string;
  nodes: (DevnetNode & { token: string })[];
  channels: { channel_id: string; opener: number; peer: number }[];
  stop(): Promise<void>;
}

export function tipdBinary(): string {
  const bin = process.env.TIPD_BIN ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../../build/node/tipd');
  if (!fs.existsSync(bin)) throw new Error(`no tipd binary at ${bin}: build it, or set TIPD_BIN`);
  return bin;
}

// Resolves once the devnet printed its "next, in another terminal" help
// (every node up, peers connected, channels open), within `timeoutMs`.
export async function startDevnet(nodes: number, timeoutMs = 180_000): Promise<Devnet> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tipd-e2e-'));
  const child: ChildProcess = spawn(tipdBinary(), ['devnet', '--nodes', String(nodes), '--dir', path.join(dir, 'net')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (b: Buffer) => (output += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (output += b.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
    if (!process.env.TIPD_E2E_KEEP) fs.rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + timeoutMs;
  while (!output.includes('next, in another terminal')) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`devnet did not come up (exit ${child.exitCode}):\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'net', 'devnet.json'), 'utf8'));
  return {
    dir,
    nodes: manifest.nodes.map((n: DevnetNode) => ({ ...n, token: fs.readFileSync(n.token_file, 'utf8').trim() })),
    channels: manifest.channels,
    stop,
  };
}

// Polls `check` until it returns a value (not undefined) or the deadline.
export async function waitFor<T>(what: string, check: () => Promise<T | undefined> | T | undefined, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
