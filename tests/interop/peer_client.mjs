// Helpers for the live interop tests: a client for parley-interop-peer (newline-delimited JSON
// over the child's stdin/stdout), an in-memory libsignal-node store, and a deterministic shuffle.
// Test-only.

import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

const REQUEST_TIMEOUT_MS = 10_000;

// One running parley-interop-peer process holding one parley party.
export class ParleyPeer {
  constructor(binary) {
    this.child = spawn(binary, [], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.stderr = '';
    this.child.stderr.on('data', (d) => { this.stderr += d.toString(); });
    this.waiting = [];
    this.exited = false;
    this.child.on('exit', (code, signal) => {
      this.exited = true;
      for (const w of this.waiting.splice(0)) {
        w.reject(new Error(`peer exited (code ${code}, signal ${signal}): ${this.stderr}`));
      }
    });
    createInterface({ input: this.child.stdout }).on('line', (line) => {
      const w = this.waiting.shift();
      if (!w) return;
      clearTimeout(w.timer);
      try {
        w.resolve(JSON.parse(line));
      } catch (e) {
        w.reject(new Error(`peer wrote a line that is not JSON: ${line}`));
      }
    });
  }

  // Sends one request; resolves with the reply object (whatever its "ok").
  request(obj) {
    if (this.exited) return Promise.reject(new Error(`peer has exited: ${this.stderr}`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`peer did not answer ${obj.op} within ${REQUEST_TIMEOUT_MS} ms`));
      }, REQUEST_TIMEOUT_MS);
      this.waiting.push({ resolve, reject, timer });
      this.child.stdin.write(JSON.stringify(obj) + '\n');
    });
  }

  // Like request() but throws unless the reply has ok: true.
  async ok(obj) {
    const reply = await this.request(obj);
    if (reply.ok !== true) {
      throw new Error(`peer refused ${obj.op}: ${JSON.stringify(reply)}`);
    }
    return reply;
  }

  // Asks the peer to quit, then kills it if it has not exited within a second.
  async close() {
    if (this.exited) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    try {
      this.child.stdin.write(JSON.stringify({ op: 'quit' }) + '\n');
      this.child.stdin.end();
    } catch {
      // The pipe may already be closed; the kill below still applies.
    }
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 1000);
    await exited;
    clearTimeout(timer);
  }
}

// The storage interface libsignal-node 6.0.0 calls (see node_modules/libsignal/src/
// session_builder.js and session_cipher.js). Sessions are kept serialized, so a decrypt that
// throws half-way cannot leave a mutated record behind.
export class JsStore {
  constructor(libsignal, identityKeyPair, registrationId) {
    this.libsignal = libsignal;
    this.identityKeyPair = identityKeyPair;
    this.registrationId = registrationId;
    this.preKeys = new Map();
    this.signedPreKeys = new Map();
    this.sessions = new Map();
    this.identities = new Map();
  }

  async getOurIdentity() { return this.identityKeyPair; }
  async getOurRegistrationId() { return this.registrationId; }

  // Trust on first use. libsignal-node passes either "name" or "name.device"; key by name.
  async isTrustedIdentity(identifier, identityKey) {
    const name = String(identifier).replace(/\.\d+$/, '');
    const known = this.identities.get(name);
    if (!known) {
      this.identities.set(name, Buffer.from(identityKey));
      return true;
    }
    return known.equals(Buffer.from(identityKey));
  }

  async loadPreKey(id) { return this.preKeys.get(Number(id)); }
  async removePreKey(id) { this.preKeys.delete(Number(id)); }
  async loadSignedPreKey(id) { return this.signedPreKeys.get(Number(id)); }

  async loadSession(address) {
    const s = this.sessions.get(address);
    return s === undefined ? undefined : this.libsignal.SessionRecord.deserialize(JSON.parse(s));
  }
  async storeSession(address, record) {
    this.sessions.set(address, JSON.stringify(record.serialize()));
  }
}

// A small deterministic PRNG (mulberry32) so that every shuffle is reproducible.
export function makePrng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// A shuffled copy of `items` (Fisher-Yates), guaranteed not to be the identity order when
// there are at least two items.
export function shuffled(items, prng) {
  const out = items.slice();
  if (out.length < 2) return out;
  do {
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(prng() * (i + 1));
      [out[i], out[j]] = [out[j], out[i]];
    }
  } while (out.every((x, i) => x === items[i]));
  return out;
}
