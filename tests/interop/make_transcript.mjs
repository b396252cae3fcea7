// Generates a Signal Protocol v3 transcript (the schema of
// /work/shared/vectors/signal-v3/transcript_no_opk.json) by driving the real npm libsignal
// 6.0.0 with deterministic keys, and re-derives every recorded intermediate value
// independently with node:crypto (X25519, HKDF, HMAC, AES-CBC) and a small protobuf reader.
//
//   node make_transcript.mjs                      # writes ../vectors/signal-v3/transcript_opk.json
//   node make_transcript.mjs --out FILE           # elsewhere
//   node make_transcript.mjs --check-shared FILE  # regenerates FILE's own scenario (seed, ids,
//                                                 # messages, delivery order) and compares
//
// Key n (0-based, in the order libsignal draws them) is clamp(HMAC-SHA256(key=seed_utf8,
// msg="key-" + n)); libsignal's curve.generateKeyPair is replaced on its shared module object,
// which keyhelper, session_builder and session_cipher all call through.
// Messages are encrypted in `messages` order, each as late as possible (just before the first
// delivery that needs it); deliveries follow `delivery_order`.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { JsStore } from './peer_client.mjs';

const require = createRequire(import.meta.url);
const libsignal = require('libsignal');
const here = dirname(fileURLToPath(import.meta.url));

const DESCRIPTION = 'Signal Protocol v3 (X3DH + Double Ratchet, libsignal-protocol-javascript/-c/-java wire format) transcript generated with npm libsignal (WhiskeySockets/libsignal-node) and re-derived independently with node:crypto.';
const CONVENTIONS = {
  public_key: '33 bytes: 0x05 || X25519 u-coordinate (little endian)',
  private_key: '32-byte X25519 scalar (clamped here; X25519 clamps anyway)',
  key_derivation_for_this_file: 'priv_n = clamp(HMAC-SHA256(key=seed_utf8, msg="key-" + n))',
  version_byte: '0x33 = (3<<4)|3',
  whisper_message: 'version_byte || protobuf(WhisperMessage) || HMAC-SHA256(mac_key, IK_sender33 || IK_receiver33 || version_byte || protobuf)[0:8]',
  prekey_whisper_message: 'version_byte || protobuf(PreKeyWhisperMessage{1:preKeyId,2:baseKey,3:identityKey,4:message(whole WhisperMessage),5:registrationId,6:signedPreKeyId})',
  message_keys: 'HKDF-SHA256(ikm=HMAC(CK,0x01), salt=32 zero bytes, info="WhisperMessageKeys", L=80) = cipher_key[32] || mac_key[32] || iv[16]; AES-256-CBC/PKCS7',
  chain_step: 'CK_next = HMAC-SHA256(CK, 0x02); MK = HMAC-SHA256(CK, 0x01)',
  root_step: 'HKDF-SHA256(ikm=DH, salt=RK, info="WhisperRatchet", L=64) = RK_next || CK',
  x3dh: 'HKDF-SHA256(ikm=0xFF*32||DH1||DH2||DH3[||DH4], salt=32 zero bytes, info="WhisperText", L=64) = RK || CK',
};
const SIGNATURE_NOTE = 'curve25519 (XEd25519-style) signature by bob identity over the 33-byte signed prekey pub; deterministic variant (no random), any valid signature is acceptable';
const CHAIN_KEY_NOTE = "libsignal-protocol-c/java: Bob's initial sending chain (ratchet key = SPK_B) / Alice's receiving chain for SPK_B; never used in practice because Bob always DH-ratchets on Alice's first message";

// The scenario of tests/vectors/signal-v3/transcript_opk.json: three root-chain steps on the
// wire (four chains), out-of-order delivery within chains and across a ratchet step.
const OPK_SCENARIO = {
  seed: 'parley-interop-seed-2',
  withOneTimePreKey: true,
  aliceRegistrationId: 3141,
  bobRegistrationId: 2718,
  signedPreKeyId: 9,
  oneTimePreKeyId: 31337,
  messages: [
    ['A1', 'A', 'Hello Bob #1'],
    ['A2', 'A', 'Hello Bob #2'],
    ['A3', 'A', 'Hello Bob #3'],
    ['B1', 'B', 'Hi Alice #1'],
    ['B2', 'B', 'Hi Alice #2'],
    ['B3', 'B', 'Hi Alice #3 (delivered after Alice stepped her ratchet)'],
    ['B4', 'B', 'Hi Alice #4'],
    ['A4', 'A', 'Hello Bob #4 (after DH ratchet step)'],
    ['A5', 'A', 'Hello Bob #5'],
    ['B5', 'B', 'Hi Alice #5 (after the second DH ratchet step on each side)'],
  ],
  deliveryOrder: ['A1', 'A3', 'A2', 'B2', 'B4', 'B1', 'A5', 'A4', 'B3', 'B5'],
};

// ---- Independent primitives (node:crypto only) ----------------------------------------------

const PKCS8_X25519 = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_X25519 = Buffer.from('302a300506032b656e032100', 'hex');
const hex = (b) => Buffer.from(b).toString('hex');
const hmac = (key, data) => crypto.createHmac('sha256', key).update(data).digest();
const hkdf = (ikm, salt, info, length) =>
  Buffer.from(crypto.hkdfSync('sha256', ikm, salt, Buffer.from(info), length));

function clamp(k) {
  const c = Buffer.from(k);
  c[0] &= 248;
  c[31] &= 127;
  c[31] |= 64;
  return c;
}
function privateKeyObject(priv) {
  return crypto.createPrivateKey({ key: Buffer.concat([PKCS8_X25519, priv]), format: 'der', type: 'pkcs8' });
}
function publicOf(priv) {
  const der = crypto.createPublicKey(privateKeyObject(priv)).export({ format: 'der', type: 'spki' });
  return Buffer.concat([Buffer.from([5]), der.subarray(SPKI_X25519.length)]);
}
function x25519(priv, pub33) {
  assert.equal(pub33.length, 33);
  assert.equal(pub33[0], 5);
  const publicKey = crypto.createPublicKey({
    key: Buffer.concat([SPKI_X25519, pub33.subarray(1)]), format: 'der', type: 'spki',
  });
  return crypto.diffieHellman({ privateKey: privateKeyObject(priv), publicKey });
}

// A minimal protobuf reader: field number -> {varint|bytes}. Rejects anything unexpected.
function readProto(buf) {
  const fields = {};
  let i = 0;
  const varint = () => {
    let v = 0n;
    let shift = 0n;
    for (;;) {
      const b = buf[i++];
      assert.ok(b !== undefined, 'truncated varint');
      v |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
      shift += 7n;
    }
  };
  while (i < buf.length) {
    const tag = Number(varint());
    const field = tag >> 3;
    const wire = tag & 7;
    assert.equal(fields[field], undefined, `repeated field ${field}`);
    if (wire === 0) {
      fields[field] = Number(varint());
    } else if (wire === 2) {
      const len = Number(varint());
      fields[field] = buf.subarray(i, i + len);
      assert.equal(fields[field].length, len, 'truncated bytes field');
      i += len;
    } else {
      assert.fail(`unexpected wire type ${wire}`);
    }
  }
  return fields;
}

// ---- Generation ----------------------------------------------------------------------------

async function generate(sc) {
  // Deterministic keys, drawn through libsignal's own call sites.
  const drawn = [];  // {priv, pub, context}
  let context = 'setup';
  const original = libsignal.curve.generateKeyPair;
  libsignal.curve.generateKeyPair = () => {
    const n = drawn.length;
    const priv = clamp(hmac(Buffer.from(sc.seed, 'utf8'), Buffer.from(`key-${n}`)));
    const pub = publicOf(priv);
    drawn.push({ priv, pub, context });
    return { pubKey: Buffer.from(pub), privKey: Buffer.from(priv) };
  };
  try {
    return await run(sc, drawn, (c) => { context = c; });
  } finally {
    libsignal.curve.generateKeyPair = original;
  }
}

async function run(sc, drawn, setContext) {
  const { curve, keyhelper, SessionBuilder, SessionCipher, ProtocolAddress } = libsignal;
  const aliceIdentity = curve.generateKeyPair();
  const bobIdentity = curve.generateKeyPair();
  const spk = keyhelper.generateSignedPreKey(bobIdentity, sc.signedPreKeyId);
  const opk = keyhelper.generatePreKey(sc.oneTimePreKeyId);  // drawn in both variants
  assert.ok(curve.verifySignature(bobIdentity.pubKey, spk.keyPair.pubKey, spk.signature, false));

  const alice = new JsStore(libsignal, aliceIdentity, sc.aliceRegistrationId);
  const bob = new JsStore(libsignal, bobIdentity, sc.bobRegistrationId);
  bob.signedPreKeys.set(sc.signedPreKeyId, spk.keyPair);
  if (sc.withOneTimePreKey) bob.preKeys.set(sc.oneTimePreKeyId, opk.keyPair);
  const aliceAddr = new ProtocolAddress('alice', 1);
  const bobAddr = new ProtocolAddress('bob', 1);

  const device = {
    registrationId: sc.bobRegistrationId,
    identityKey: bobIdentity.pubKey,
    signedPreKey: { keyId: sc.signedPreKeyId, publicKey: spk.keyPair.pubKey, signature: spk.signature },
  };
  if (sc.withOneTimePreKey) device.preKey = { keyId: sc.oneTimePreKeyId, publicKey: opk.keyPair.pubKey };
  setContext('alice-session');
  await new SessionBuilder(alice, bobAddr).initOutgoing(device);
  assert.equal(drawn.length, 6, 'initOutgoing draws the base key and the first ratchet key');

  const ciphers = {
    A: { enc: new SessionCipher(alice, bobAddr), dec: new SessionCipher(bob, aliceAddr) },
    B: { enc: new SessionCipher(bob, aliceAddr), dec: new SessionCipher(alice, bobAddr) },
  };
  const messages = sc.messages.map(([id, from, text]) => ({ id, from, text }));
  const index = new Map(messages.map((m, i) => [m.id, i]));
  let next = 0;
  const encryptThrough = async (last) => {
    for (; next <= last && next < messages.length; next++) {
      const m = messages[next];
      const r = await ciphers[m.from].enc.encrypt(Buffer.from(m.text, 'utf8'));
      m.type = r.type;
      m.body = Buffer.from(r.body);
    }
  };
  for (const id of sc.deliveryOrder) {
    assert.ok(index.has(id), `unknown message ${id}`);
    await encryptThrough(index.get(id));
    const m = messages[index.get(id)];
    setContext(`after ${id}`);
    const c = ciphers[m.from].dec;
    const p = m.type === 3 ? await c.decryptPreKeyWhisperMessage(m.body) : await c.decryptWhisperMessage(m.body);
    assert.equal(Buffer.from(p).toString('utf8'), m.text, `libsignal round trip of ${id}`);
  }
  await encryptThrough(messages.length);
  if (sc.withOneTimePreKey) assert.equal(bob.preKeys.size, 0, 'bob consumed the one-time prekey');

  return record(sc, drawn, { aliceIdentity, bobIdentity, spk, opk }, messages);
}

// ---- Independent re-derivation and the transcript object ----------------------------------

function record(sc, drawn, keys, messages) {
  const { aliceIdentity, bobIdentity, spk, opk } = keys;
  const privOf = (pub) => {
    const k = drawn.find((d) => d.pub.equals(pub));
    assert.ok(k, `no generated key for ${hex(pub)}`);
    return k.priv;
  };
  const aliceBase = drawn[4];

  // X3DH (Alice's view).
  const dh1 = x25519(aliceIdentity.privKey, spk.keyPair.pubKey);
  const dh2 = x25519(aliceBase.priv, bobIdentity.pubKey);
  const dh3 = x25519(aliceBase.priv, spk.keyPair.pubKey);
  const dh4 = sc.withOneTimePreKey ? x25519(aliceBase.priv, opk.keyPair.pubKey) : null;
  // Bob's view must agree.
  assert.deepEqual(x25519(spk.keyPair.privKey, aliceIdentity.pubKey), dh1);
  assert.deepEqual(x25519(bobIdentity.privKey, aliceBase.pub), dh2);
  assert.deepEqual(x25519(spk.keyPair.privKey, aliceBase.pub), dh3);
  if (dh4) assert.deepEqual(x25519(opk.keyPair.privKey, aliceBase.pub), dh4);
  const ikm = Buffer.concat([Buffer.alloc(32, 0xff), dh1, dh2, dh3, ...(dh4 ? [dh4] : [])]);
  const master = hkdf(ikm, Buffer.alloc(32), 'WhisperText', 64);

  // Parse every message independently.
  for (const m of messages) {
    assert.equal(m.body[0], 0x33);
    let whisper = m.body;
    if (m.type === 3) {
      m.pre = readProto(m.body.subarray(1));
      whisper = m.pre[4];
    }
    m.whisperBytes = whisper;
    assert.equal(whisper[0], 0x33);
    m.protobuf = whisper.subarray(1, whisper.length - 8);
    m.mac8 = whisper.subarray(whisper.length - 8);
    m.w = readProto(m.protobuf);
  }

  // Root chain: the ratchet keys on the wire, in order of first use, alternate senders.
  const ratchetKeys = [];
  for (const m of messages) {
    if (!ratchetKeys.some((r) => r.pub.equals(m.w[1]))) ratchetKeys.push({ pub: Buffer.from(m.w[1]), from: m.from });
  }
  const steps = [];
  let rootKey = master.subarray(0, 32);
  ratchetKeys.forEach((r, i) => {
    assert.equal(r.from, i % 2 === 0 ? 'A' : 'B', 'ratchet keys alternate, Alice first');
    const receiver = i === 0 ? spk.keyPair.pubKey : ratchetKeys[i - 1].pub;
    const dh = x25519(privOf(r.pub), receiver);
    assert.deepEqual(x25519(privOf(receiver), r.pub), dh);
    const out = hkdf(dh, rootKey, 'WhisperRatchet', 64);
    steps.push({
      sender_ratchet_pub: hex(r.pub),
      receiver_ratchet_pub: hex(receiver),
      dh: hex(dh),
      hkdf_salt_root_key_in: hex(rootKey),
      hkdf_info: 'WhisperRatchet',
      root_key_out: hex(out.subarray(0, 32)),
      chain_key_0: hex(out.subarray(32)),
    });
    r.chainKey0 = out.subarray(32);
    rootKey = out.subarray(0, 32);
  });

  // Labels for the drawn keys.
  const labels = ['alice_identity', 'bob_identity', 'bob_signed_prekey',
    sc.withOneTimePreKey ? 'bob_one_time_prekey' : 'bob_one_time_prekey (generated but NOT published in this variant)',
    'alice_base_key (X3DH EK_A)', 'alice_ratchet_key_0'];
  const generated = drawn.map((d, i) => {
    let label = labels[i];
    if (label === undefined) {
      const who = ratchetKeys.find((r) => r.pub.equals(d.pub));
      const idx = ratchetKeys.findIndex((r) => r.pub.equals(d.pub));
      const receiverOf = d.context.replace('after ', '');
      const receiverFrom = messages.find((m) => m.id === receiverOf).from;
      const party = receiverFrom === 'A' ? 'bob' : 'alice';
      label = who ? `${party}_ratchet_key (root-chain step ${idx})`
                  : `${party}_ratchet_key generated after ${receiverOf} (next sending chain; unused on the wire)`;
    }
    return { index: i, label, priv: hex(d.priv), pub: hex(d.pub) };
  });

  const identities = { A: aliceIdentity.pubKey, B: bobIdentity.pubKey };
  const out = messages.map((m) => {
    const r = ratchetKeys.find((k) => k.pub.equals(m.w[1]));
    const counter = m.w[2] ?? 0;
    let ck = r.chainKey0;
    for (let n = 0; n < counter; n++) ck = hmac(ck, Buffer.from([2]));
    const mk = hmac(ck, Buffer.from([1]));
    const keysMat = hkdf(mk, Buffer.alloc(32), 'WhisperMessageKeys', 80);
    const cipherKey = keysMat.subarray(0, 32);
    const macKey = keysMat.subarray(32, 64);
    const iv = keysMat.subarray(64, 80);
    const macInput = Buffer.concat([identities[m.from], identities[m.from === 'A' ? 'B' : 'A'],
      Buffer.from([0x33]), m.protobuf]);
    const macFull = hmac(macKey, macInput);
    assert.deepEqual(macFull.subarray(0, 8), m.mac8, `${m.id}: MAC re-derived`);
    const decipher = crypto.createDecipheriv('aes-256-cbc', cipherKey, iv);
    const plain = Buffer.concat([decipher.update(m.w[4]), decipher.final()]);
    assert.equal(plain.toString('utf8'), m.text, `${m.id}: plaintext re-derived`);

    const entry = {
      id: m.id,
      from: m.from,
      plaintext_utf8: m.text,
      plaintext_hex: hex(Buffer.from(m.text, 'utf8')),
      type: m.type,
      serialized_hex: hex(m.body),
    };
    if (m.type === 3) {
      entry.prekey_fields = {
        registrationId_f5: m.pre[5],
        preKeyId_f1: m.pre[1] ?? null,
        signedPreKeyId_f6: m.pre[6],
        baseKey_f2: hex(m.pre[2]),
        identityKey_f3: hex(m.pre[3]),
        message_f4_len: m.pre[4].length,
      };
      assert.deepEqual(m.pre[2], drawn[4].pub);
      assert.deepEqual(m.pre[3], aliceIdentity.pubKey);
    }
    entry.whisper_message = {
      version_byte: '33',
      protobuf_hex: hex(m.protobuf),
      ratchetKey_f1: hex(m.w[1]),
      counter_f2: counter,
      previousCounter_f3: m.w[3] ?? 0,
      ciphertext_f4: hex(m.w[4]),
      mac8: hex(m.mac8),
    };
    entry.derived = {
      chain_key: hex(ck),
      message_key: hex(mk),
      cipher_key: hex(cipherKey),
      mac_key: hex(macKey),
      iv: hex(iv),
      mac_input_hex: hex(macInput),
      mac_full: hex(macFull),
    };
    return entry;
  });

  return {
    description: DESCRIPTION,
    generator: {
      package: 'libsignal',
      version: require('libsignal/package.json').version,
      node: process.version,
      seed_utf8: sc.seed,
      variant: sc.withOneTimePreKey ? 'with one-time prekey' : 'no one-time prekey',
    },
    conventions: CONVENTIONS,
    alice: {
      registration_id: sc.aliceRegistrationId,
      identity_priv: hex(aliceIdentity.privKey),
      identity_pub: hex(aliceIdentity.pubKey),
    },
    bob: {
      registration_id: sc.bobRegistrationId,
      identity_priv: hex(bobIdentity.privKey),
      identity_pub: hex(bobIdentity.pubKey),
      signed_prekey: {
        id: sc.signedPreKeyId,
        priv: hex(spk.keyPair.privKey),
        pub: hex(spk.keyPair.pubKey),
        signature: hex(spk.signature),
        signature_note: SIGNATURE_NOTE,
      },
      one_time_prekey: sc.withOneTimePreKey
        ? { id: sc.oneTimePreKeyId, priv: hex(opk.keyPair.privKey), pub: hex(opk.keyPair.pubKey) }
        : null,
    },
    alice_base_key: { priv: hex(drawn[4].priv), pub: hex(drawn[4].pub) },
    generated_keys_in_order: generated,
    x3dh: {
      dh1_IKA_SPKB: hex(dh1),
      dh2_EKA_IKB: hex(dh2),
      dh3_EKA_SPKB: hex(dh3),
      dh4_EKA_OPKB: dh4 ? hex(dh4) : null,
      hkdf_ikm: hex(ikm),
      hkdf_salt: hex(Buffer.alloc(32)),
      hkdf_info: 'WhisperText',
      root_key: hex(master.subarray(0, 32)),
      chain_key: hex(master.subarray(32)),
      chain_key_note: CHAIN_KEY_NOTE,
    },
    root_chain_steps: steps,
    messages: out,
    delivery_order: sc.deliveryOrder,
  };
}

// ---- Main ----------------------------------------------------------------------------------

function scenarioOf(shared) {
  const spkId = shared.bob.signed_prekey.id;
  return {
    seed: shared.generator.seed_utf8,
    withOneTimePreKey: shared.bob.one_time_prekey != null,
    aliceRegistrationId: shared.alice.registration_id,
    bobRegistrationId: shared.bob.registration_id,
    signedPreKeyId: spkId,
    oneTimePreKeyId: shared.bob.one_time_prekey?.id ?? 1,
    messages: shared.messages.map((m) => [m.id, m.from, m.plaintext_utf8]),
    deliveryOrder: shared.delivery_order,
  };
}

const args = process.argv.slice(2);
const arg = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const checkPath = arg('--check-shared');
if (checkPath) {
  const shared = JSON.parse(readFileSync(checkPath, 'utf8'));
  const ours = await generate(scenarioOf(shared));
  // Fields that legitimately differ: the node version and the private-key-dependent XEdDSA
  // signature is deterministic, so it must match too.
  ours.generator.node = shared.generator.node;
  if (!shared.bob.one_time_prekey) {
    // The shared file omits the unpublished one-time prekey (schema: absent or null).
    if (!('one_time_prekey' in shared.bob)) delete ours.bob.one_time_prekey;
  }
  assert.deepEqual(ours, shared);
  console.log(`regenerated ${checkPath} identically`);
} else {
  const outPath = arg('--out') ?? join(here, '..', 'vectors', 'signal-v3', 'transcript_opk.json');
  const transcript = await generate(OPK_SCENARIO);
  writeFileSync(outPath, JSON.stringify(transcript, null, 2) + '\n');
  console.log(`wrote ${outPath}: ${transcript.messages.length} messages, ` +
              `${transcript.root_chain_steps.length} root-chain steps, ` +
              `${transcript.generated_keys_in_order.length} generated keys`);
}
