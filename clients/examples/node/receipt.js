// The full check of a Sinergi receipt, with node:crypto alone: the reference for clients in other
// languages. It accepts and refuses what the Python library does (clients/_client.py
// verify_receipt, ledger/_note.py, ledger/_merkle.py, ledger/_entry.py), and checks the
// checkpoint's origin as well; the byte formats are in docs/ledger-format.md.
//
//   1. the checkpoint is a C2SP signed note that the ledger's Ed25519 key signed, for a ledger
//      of that key: its name, or an origin under it (section 3);
//   2. the entry hash is the RFC 6962 leaf hash of the entry bytes (section 1.3);
//   3. the inclusion proof of leaf seq - 1 leads to the checkpoint's root (section 2.4);
//   4. the entry records what was asked, by the caller's own agency (section 5).
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");

class LedgerError extends Error {}
class NoteError extends LedgerError {} // a malformed or unsigned note or checkpoint
class ProofError extends LedgerError {} // an inclusion proof that does not hold
class EncodingError extends LedgerError {} // entry bytes that are not a canonical entry
class ReceiptError extends LedgerError {} // what verifyReceipt refuses, one line each
for (const E of [LedgerError, NoteError, ProofError, EncodingError, ReceiptError]) {
  E.prototype.name = E.name;
}

const HASH_SIZE = 32;
const MAX_TREE_SIZE = 2n ** 64n - 1n;
const MAX_PROOF_LENGTH = 65; // no tree of at most 2^64 - 1 leaves needs more
const MAX_SIGNATURES = 100; // C2SP signed-note requires at least 16; Go accepts 100
const ED25519 = 0x01; // C2SP signed-note signature type
const KEY_ID_SIZE = 4;
const SIGNATURE_PREFIX = Buffer.from("\u2014 "); // em dash, space

// C2SP signed-note key names: no Unicode White_Space (what Go's unicode.IsSpace reports), no
// "+", and no control character, since they appear in the note.
const KEY_NAME_REFUSED =
  /[\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000+\x00-\x1f]/;
const NOTE_CONTROL = /[\x00-\x09\x0b-\x1f]/; // every control character but newline
const DECIMAL = /^(0|[1-9][0-9]*)$/;
const HEX8 = /^[0-9a-fA-F]{8}$/;
const HEX64 = /^[0-9a-f]{64}$/;
const TIME = /^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$/;
const ACTIONS = new Set(["START", "PUBLISH", "UPDATE", "CANCEL", "DELIVER", "ACK", "READ",
  "SEARCH", "LEDGER_READ", "REDACT", "DENIED"]);
const ENTRY_FIELDS = ["action", "actor", "digest", "meta", "objects", "outcome", "prev", "seq",
  "time", "v"];

// UTF-8 as Python decodes it: invalid bytes are an error, and a BOM is a character, not skipped.
const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
function utf8(bytes, what, ErrorType) {
  try {
    return UTF8.decode(bytes);
  } catch {
    throw new ErrorType(`${what} is not UTF-8`);
  }
}

// Standard base64 (RFC 4648 section 4) in its canonical form only; null otherwise. Buffer.from
// alone accepts URL-safe characters, missing padding and non-zero padding bits.
function base64Strict(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) return null;
  const raw = Buffer.from(text, "base64");
  return raw.toString("base64") === text ? raw : null;
}

// ---------------------------------------------------------------------------------------------
// Hashes (RFC 6962 section 2.1)

const sha256 = (...parts) => crypto.createHash("sha256").update(Buffer.concat(parts)).digest();
const leafHash = (entry) => sha256(Buffer.from([0x00]), entry); // RFC 6962 2.1: leaf prefix
const nodeHash = (left, right) => sha256(Buffer.from([0x01]), left, right); // interior prefix

// ---------------------------------------------------------------------------------------------
// Keys (C2SP signed-note, Signatures; the vkey format of golang.org/x/mod/sumdb/note)

function validKeyName(name) {
  return typeof name === "string" && name.length > 0 && !KEY_NAME_REFUSED.test(name) &&
    !/\p{Cs}/u.test(name);
}

// Key ID: SHA-256(key name || 0x0A || signature type || public key), first 4 bytes.
function keyId(name, publicKey, alg = ED25519) {
  return sha256(Buffer.from(`${name}\n`), Buffer.from([alg]), publicKey).subarray(0, KEY_ID_SIZE);
}

// A verifier from `<name>+<8 hex digits key ID>+<base64(0x01 || 32-byte Ed25519 key)>`.
function parseVerifierKey(vkey) {
  if (typeof vkey !== "string") throw new NoteError("a verifier key is a string");
  const first = vkey.indexOf("+");
  const second = first < 0 ? -1 : vkey.indexOf("+", first + 1);
  if (second < 0) throw new NoteError("malformed verifier key: want <name>+<key id>+<key>");
  const name = vkey.slice(0, first);
  const hexId = vkey.slice(first + 1, second);
  if (!validKeyName(name) || !HEX8.test(hexId)) {
    throw new NoteError("malformed verifier key: bad name or key id");
  }
  const raw = base64Strict(vkey.slice(second + 1));
  if (raw === null || raw.length === 0) {
    throw new NoteError("malformed verifier key: key is not base64");
  }
  const alg = raw[0];
  const publicKey = Buffer.from(raw.subarray(1));
  if (!Buffer.from(hexId, "hex").equals(keyId(name, publicKey, alg))) {
    throw new NoteError("verifier key id does not match its name and key");
  }
  if (alg !== ED25519) {
    const hex = alg.toString(16).padStart(2, "0");
    throw new NoteError(`unsupported verifier key algorithm 0x${hex}`);
  }
  if (publicKey.length !== 32) {
    throw new NoteError("malformed verifier key: an Ed25519 key is 32 bytes");
  }
  return { name, keyId: keyId(name, publicKey), publicKey };
}

// Ed25519 as libsodium checks it, as the Python library does (docs/ledger-format.md 3.2):
// OpenSSL's RFC 8032 check, plus a canonical public key and no public key or R of small order
// (libsodium's blocklist). Without them, the identity point as a key verifies any "signature".
// S below the group order is checked here too, though OpenSSL does it: not every library does.
const P = 2n ** 255n - 19n;
const L = 2n ** 252n + 27742317777372353535851937790883648493n;
const Y8 = 2707385501144840649318225287225658788936804267575313519463743609750303402022n;
const SMALL_ORDER_Y = new Set([0n, 1n, P - 1n, Y8, P - Y8, P, P + 1n]); // libsodium's blocklist

const littleEndian = (bytes) => BigInt(`0x${Buffer.from(bytes).reverse().toString("hex") || 0}`);
const pointY = (bytes) => littleEndian(bytes) & (2n ** 255n - 1n); // without the sign of x

function ed25519Verify(publicKey, text, signature) {
  if (signature.length !== 64) return false;
  const a = pointY(publicKey);
  if (a >= P || SMALL_ORDER_Y.has(a)) return false;
  if (SMALL_ORDER_Y.has(pointY(signature.subarray(0, 32)))) return false;
  if (littleEndian(signature.subarray(32)) >= L) return false;
  try {
    const key = crypto.createPublicKey({
      key: { kty: "OKP", crv: "Ed25519", x: publicKey.toString("base64url") },
      format: "jwk",
    });
    return crypto.verify(null, text, key, signature); // pure Ed25519: no digest
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Signed notes (C2SP signed-note) and checkpoints (C2SP tlog-checkpoint)

// The text and the signature lines of a note: the text ends at the newline before the last
// blank line.
function splitNote(note) {
  const decoded = utf8(note, "note", NoteError);
  const control = NOTE_CONTROL.exec(decoded);
  if (control) {
    const code = control[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, "0");
    throw new NoteError(`note contains control character U+${code}`);
  }
  const split = note.lastIndexOf("\n\n");
  if (split < 0) throw new NoteError("note has no blank line before its signatures");
  const text = note.subarray(0, split + 1);
  const block = note.subarray(split + 2);
  if (block.length === 0 || block[block.length - 1] !== 0x0a) {
    throw new NoteError("note has no signature lines, or they do not end in a newline");
  }
  const lines = [];
  for (let start = 0; start < block.length;) {
    const end = block.indexOf(0x0a, start);
    lines.push(block.subarray(start, end));
    start = end + 1;
  }
  if (lines.length > MAX_SIGNATURES) {
    throw new NoteError(`note has more than ${MAX_SIGNATURES} signatures`);
  }
  return { text, lines };
}

// `— <name> <base64(key ID || signature)>` -> { name, keyId, signature }
function parseSignatureLine(line) {
  if (!line.subarray(0, SIGNATURE_PREFIX.length).equals(SIGNATURE_PREFIX)) {
    throw new NoteError("signature line does not start with an em dash and a space");
  }
  const rest = line.subarray(SIGNATURE_PREFIX.length).toString("utf8");
  const space = rest.indexOf(" ");
  const name = space < 0 ? "" : rest.slice(0, space);
  if (!validKeyName(name)) throw new NoteError("signature line has no valid key name");
  const raw = base64Strict(rest.slice(space + 1));
  if (raw === null || raw.length <= KEY_ID_SIZE) {
    throw new NoteError("signature line has no valid base64 signature");
  }
  return { name, keyId: raw.subarray(0, KEY_ID_SIZE), signature: raw.subarray(KEY_ID_SIZE) };
}

// Open a signed note: its text and the names of the known keys that signed it. A key is known by
// name AND key ID; lines by other keys are ignored (rotation, witnesses' cosignatures), but a
// bad signature by a known key is tampering, and at least one known key must have signed.
function openNote(note, verifiers) {
  if (!Buffer.isBuffer(note)) throw new NoteError("a note is bytes");
  const { text, lines } = splitNote(note);
  const known = new Map();
  for (const v of verifiers) {
    const id = `${v.name}+${v.keyId.toString("hex")}`;
    const same = known.get(id) || [];
    if (same.every((o) => !o.publicKey.equals(v.publicKey))) same.push(v);
    known.set(id, same);
  }
  const verified = [];
  const verifiedKeys = new Set();
  for (const line of lines) {
    const { name, keyId: kid, signature } = parseSignatureLine(line);
    const id = `${name}+${kid.toString("hex")}`;
    const candidates = known.get(id);
    if (candidates === undefined) continue; // an unknown key: ignored, as the spec requires
    if (candidates.length > 1) throw new NoteError(`ambiguous verifiers for key ${id}`);
    if (!ed25519Verify(candidates[0].publicKey, text, signature)) {
      throw new NoteError(`invalid signature by known key ${id}`);
    }
    if (!verifiedKeys.has(id)) {
      verifiedKeys.add(id);
      verified.push(name);
    }
  }
  if (verified.length === 0) throw new NoteError("note has no verifying signature by a known key");
  return { text, verified };
}

// The checkpoint body (C2SP tlog-checkpoint): origin, decimal size without leading zeros that
// fits 64 bits, canonical base64 of the 32-byte root, then optional extension lines.
function parseCheckpoint(text) {
  const decoded = utf8(text, "checkpoint", NoteError);
  if (!decoded.endsWith("\n")) throw new NoteError("checkpoint must end in a newline");
  const lines = decoded.slice(0, -1).split("\n");
  if (lines.length < 3) throw new NoteError("checkpoint has fewer than three lines");
  if (lines.some((line) => line === "")) throw new NoteError("checkpoint has an empty line");
  const [origin, sizeText, rootText, ...extensions] = lines;
  if (!DECIMAL.test(sizeText)) {
    throw new NoteError(
      `checkpoint size ${JSON.stringify(sizeText)} is not a decimal without leading zeros`,
    );
  }
  const size = BigInt(sizeText);
  if (size > MAX_TREE_SIZE) throw new NoteError("checkpoint size does not fit in 64 bits");
  const root = base64Strict(rootText);
  if (root === null || root.length !== HASH_SIZE) {
    throw new NoteError(`checkpoint root is not the base64 of ${HASH_SIZE} bytes`);
  }
  for (const line of [origin, ...extensions]) {
    if (/[\x00-\x1f]/.test(line) || /\p{Cs}/u.test(line)) {
      throw new NoteError("checkpoint line contains a control character or is not Unicode");
    }
  }
  return { origin, size, root, extensions };
}

// A signed checkpoint: openNote, then parseCheckpoint; with `origin`, it must be that log's.
function openCheckpoint(note, verifiers, { origin } = {}) {
  const { text } = openNote(note, verifiers);
  const checkpoint = parseCheckpoint(text);
  if (origin !== undefined && checkpoint.origin !== origin) {
    const [found, wanted] = [checkpoint.origin, origin].map((o) => JSON.stringify(o));
    throw new NoteError(`checkpoint is for origin ${found}, not ${wanted}`);
  }
  return checkpoint;
}

// Whether a checkpoint of `origin` may be signed by the key named `keyName`: the name itself
// (ledgers from before per-ledger origins) or a ledger under it, `<key name>/<yyyymmdd>-<8 hex>`
// (ledger.under_key).
function underKey(origin, keyName) {
  return origin === keyName || origin.startsWith(`${keyName}/`);
}

// ---------------------------------------------------------------------------------------------
// Inclusion proofs (RFC 9162 section 2.1.3.2; docs/ledger-format.md 2.4)

function treeSize(value, what) {
  let n = null;
  if (typeof value === "bigint") n = value;
  else if (typeof value === "number" && Number.isSafeInteger(value)) n = BigInt(value);
  else if (typeof value === "string" && /^-?[0-9]+$/.test(value)) n = BigInt(value);
  if (n === null || n < 0n || n > MAX_TREE_SIZE) {
    throw new ProofError(`${what} is not an integer in [0, 2**64 - 1]: ${String(value)}`);
  }
  return n;
}

function checkHash(value, what) {
  if (!Buffer.isBuffer(value) || value.length !== HASH_SIZE) {
    throw new ProofError(`${what} is not a ${HASH_SIZE}-byte hash`);
  }
}

// Throws ProofError unless `proof` is the audit path of leaf `index` in the tree of `size`
// leaves whose root is `root` (RFC 6962 2.1.1 PATH, nearest the leaf first).
function verifyInclusion(index, size, leaf, proof, root) {
  const m = treeSize(index, "index");
  const n = treeSize(size, "size");
  if (m >= n) throw new ProofError(`leaf index ${m} is not below tree size ${n}`);
  checkHash(leaf, "leaf hash");
  checkHash(root, "root hash");
  if (!Array.isArray(proof)) throw new ProofError("a proof is a sequence of hashes");
  if (proof.length > MAX_PROOF_LENGTH) {
    throw new ProofError(`proof has ${proof.length} hashes, more than any tree needs`);
  }
  proof.forEach((p, i) => checkHash(p, `proof[${i}]`));

  let fn = m;
  let sn = n - 1n;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0n) throw new ProofError("inclusion proof is too long");
    if ((fn & 1n) === 1n || fn === sn) {
      r = nodeHash(p, r);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      r = nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw new ProofError("inclusion proof is too short");
  if (!r.equals(root)) throw new ProofError("inclusion proof does not lead to the root hash");
}

// ---------------------------------------------------------------------------------------------
// Entries (docs/ledger-format.md 1.1 and 1.2)

// The canonical JSON of a parsed value (the RFC 8785 subset of section 1.2), or EncodingError.
function canonicalJson(value) {
  if (value === null || typeof value === "boolean") return String(value);
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new EncodingError(`non-integer number ${value}`);
    return String(value);
  }
  if (typeof value === "string") {
    if (/\p{Cs}/u.test(value)) throw new EncodingError("string is not valid Unicode");
    return JSON.stringify(value); // escapes exactly ", \ and U+0000..U+001F (\b \t \n \f \r)
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const keys = Object.keys(value);
  if (keys.some((k) => !/^[\x00-\x7f]*$/.test(k))) {
    throw new EncodingError("object keys must be ASCII strings");
  }
  keys.sort(); // ASCII keys: byte order
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(",")}}`;
}

const isString = (v) => typeof v === "string";
const isObject = (v) => typeof v === "object" && v !== null && !Array.isArray(v);
const hasExactly = (o, keys) =>
  isObject(o) && Object.keys(o).length === keys.length && keys.every((k) => Object.hasOwn(o, k));

// Parse entry bytes strictly: bytes that do not re-encode to themselves, unknown or missing
// fields, and fields of the wrong type are refused.
function decodeEntry(bytes) {
  let entry;
  try {
    entry = JSON.parse(utf8(bytes, "entry", EncodingError));
  } catch (err) {
    if (err instanceof EncodingError) throw err;
    throw new EncodingError(`not JSON: ${err.message}`);
  }
  if (!Buffer.from(canonicalJson(entry), "utf8").equals(bytes)) {
    throw new EncodingError("JSON is not in canonical form");
  }
  if (!hasExactly(entry, ENTRY_FIELDS)) {
    throw new EncodingError("entry must be an object with exactly the fields of format v1");
  }
  if (entry.v !== 1) throw new EncodingError(`unsupported entry format version ${entry.v}`);
  const { seq, time, action, actor, objects, outcome } = entry;
  const checks = {
    seq: Number.isSafeInteger(seq) && seq >= 1,
    time: typeof time === "string" && TIME.test(time),
    action: ACTIONS.has(action),
    actor: hasExactly(actor, ["id", "cert"]) && Object.values(actor).every(isString),
    objects: Array.isArray(objects) && objects.every(isString),
    digest: isString(entry.digest),
    outcome: (hasExactly(outcome, ["status"]) || hasExactly(outcome, ["status", "reason"])) &&
      Object.values(outcome).every(isString),
    meta: isObject(entry.meta),
    prev: isString(entry.prev) && HEX64.test(entry.prev),
  };
  for (const [field, ok] of Object.entries(checks)) {
    if (!ok) throw new EncodingError(`entry field ${JSON.stringify(field)} is invalid`);
  }
  return entry;
}

// ---------------------------------------------------------------------------------------------
// Principals: spiffe://<trust-domain>/agency/<agency>/<kind>/<name> (certs/_names.py)

const TRUST_DOMAIN = /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/;
const SEGMENT = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const KINDS = new Set(["system", "officer"]);

// The parts of a Sinergi SPIFFE ID, or null: the strict subset the exchange issues, so exactly
// one string names each principal.
function parseSpiffeId(uri) {
  if (typeof uri !== "string" || !uri.startsWith("spiffe://")) return null;
  const rest = uri.slice("spiffe://".length);
  if (/[?#%@:]/.test(rest)) return null; // a query, fragment, escape, userinfo or port
  const slash = rest.indexOf("/");
  if (slash < 0) return null;
  const trustDomain = rest.slice(0, slash);
  const segments = rest.slice(slash + 1).split("/");
  if (segments.length !== 4 || segments[0] !== "agency") return null;
  const [, agency, kind, name] = segments;
  if (!TRUST_DOMAIN.test(trustDomain) || !SEGMENT.test(agency) || !KINDS.has(kind) ||
    !SEGMENT.test(name)) {
    return null;
  }
  return { trustDomain, agency, kind, name, id: uri };
}

// The principal a certificate names: its one URI subjectAltName (RFC 5280 4.2.1.6).
function principalOf(certPem) {
  const names = new crypto.X509Certificate(certPem).subjectAltName || "";
  // "URI:spiffe://..., DNS:..."; Node quotes a value holding a comma or a quote as JSON.
  const uris = [...names.matchAll(/(?:^|, )([A-Za-z ]+):("(?:[^"\\]|\\.)*"|[^,]*)/g)]
    .filter((m) => m[1] === "URI")
    .map((m) => (m[2].startsWith('"') ? JSON.parse(m[2]) : m[2]));
  if (uris.length !== 1) {
    throw new LedgerError(`the certificate has ${uris.length} URI subjectAltNames, not one`);
  }
  const principal = parseSpiffeId(uris[0]);
  if (principal === null) throw new LedgerError(`${JSON.stringify(uris[0])} is not a SPIFFE ID`);
  return principal;
}

// ---------------------------------------------------------------------------------------------
// The ledger's verifier key: as the Python library finds it (clients/_client.py find_ledger_key)

const LEDGER_KEY_FILE = "ledger.vkey";

// SINERGI_LEDGER_KEY (`explicit`), else ledger.vkey in the identity directory, else in its parent.
function findLedgerKey(identityDir, explicit) {
  if (explicit) return explicit;
  const candidates = [path.join(identityDir, LEDGER_KEY_FILE),
    path.join(path.dirname(path.resolve(identityDir)), LEDGER_KEY_FILE)];
  const found = candidates.find((file) => fs.statSync(file, { throwIfNoEntry: false })?.isFile());
  if (found) return found;
  throw new LedgerError(
    `no ledger verifier key: expected ${candidates[0]} or ${candidates[1]} ` +
      "(or set SINERGI_LEDGER_KEY)",
  );
}

function loadVerifier(file) {
  let bytes;
  try {
    bytes = fs.readFileSync(file);
  } catch (err) {
    throw new LedgerError(`cannot read ledger key ${file}: ${err.code}`);
  }
  try {
    if (bytes.some((b) => b > 0x7f)) throw new NoteError("it is not ASCII");
    const vkey = bytes.toString("ascii").replace(/^[\t-\r\x1c-\x20]+|[\t-\r\x1c-\x20]+$/g, "");
    return parseVerifierKey(vkey);
  } catch (err) {
    throw new LedgerError(`ledger key ${file} is not a verifier key: ${err.message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Receipts (docs/ledger-format.md section 5)

// Check `receipt` (a sinergi.v1.Receipt as @grpc/proto-loader gives it with keepCase: bytes as
// Buffers, seq as a string, number or bigint) for the act `action` on `object` by principal `me`
// (principalOf). Returns { seq, entry, checkpoint }; throws ReceiptError naming what is wrong.
// A verifier must check the checkpoint's origin (docs/ledger-format.md 3.1). Each ledger the
// exchange creates has its own origin under its key's name, so by default the origin must be a
// ledger of a trusted key (underKey); pass `origin` to require one ledger, the one you keep.
function verifyReceipt(receipt, { action, object, me, verifiers, origin }) {
  const note = receipt.checkpoint?.note;
  let checkpoint;
  try {
    checkpoint = openCheckpoint(Buffer.from(note || []), verifiers, { origin });
    if (origin === undefined && !verifiers.some((v) => underKey(checkpoint.origin, v.name))) {
      const [found, key] = [checkpoint.origin, verifiers[0]?.name].map((o) => JSON.stringify(o));
      throw new NoteError(`checkpoint is for origin ${found}, not a ledger of the key ${key}`);
    }
  } catch (err) {
    throw wrap(err, "checkpoint does not verify");
  }
  const entryBytes = Buffer.from(receipt.entry || []);
  const entryHash = Buffer.from(receipt.entry_hash || []);
  if (!leafHash(entryBytes).equals(entryHash)) {
    throw new ReceiptError("receipt entry does not match its hash");
  }
  let entry;
  try {
    entry = decodeEntry(entryBytes);
  } catch (err) {
    throw wrap(err, "receipt entry is not a ledger entry");
  }
  let seq;
  try {
    seq = treeSize(receipt.seq, "seq");
    const proof = (receipt.inclusion_proof || []).map((p) => Buffer.from(p));
    verifyInclusion(seq - 1n, checkpoint.size, entryHash, proof, checkpoint.root);
  } catch (err) {
    throw wrap(err, `inclusion of entry ${receipt.seq} in the checkpoint of size ` +
      `${checkpoint.size} does not verify`);
  }
  if (BigInt(entry.seq) !== seq) {
    throw new ReceiptError(`receipt is for entry ${seq}, but its entry is entry ${entry.seq}`);
  }
  if (entry.action !== action || !entry.objects.includes(object)) {
    const recorded = `${entry.action} of ${JSON.stringify(entry.objects)}`;
    throw new ReceiptError(`receipt records ${recorded}, not ${action} of ${object}`);
  }
  // A retried write is answered with the first attempt's entry, which another system of the same
  // agency may have made; anyone else's is not our receipt.
  const actor = parseSpiffeId(entry.actor.id);
  if (actor === null || actor.agency !== me.agency) {
    throw new ReceiptError(
      `receipt attributes the act to ${entry.actor.id}, not to agency ${me.agency} (${me.id})`,
    );
  }
  return { seq, entry, checkpoint };
}

function wrap(err, context) {
  if (!(err instanceof LedgerError)) throw err; // a bug, not a refusal
  return new ReceiptError(`${context}: ${err.message}`);
}

module.exports = {
  LedgerError, NoteError, ProofError, EncodingError, ReceiptError,
  leafHash, nodeHash, keyId, parseVerifierKey, openNote, parseCheckpoint, openCheckpoint, underKey,
  verifyInclusion, canonicalJson, decodeEntry, parseSpiffeId, principalOf,
  findLedgerKey, loadVerifier, verifyReceipt,
};
