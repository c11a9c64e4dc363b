// Proof checks the browser makes itself: RFC 6962/9162 Merkle hashing and proofs, and
// C2SP signed notes (Ed25519 through WebCrypto). No DOM, no network: the page hands in what
// the server sent and gets back the verified values, or a VerifyError saying why not.
//
// Mirrors immutablelog.merkle and immutablelog.checkpoint rule for rule (the test suite runs
// both over the same vectors). Tree sizes and indexes are BigInt: bit operations on plain
// numbers are 32-bit, and sizes go up to 2^63 - 1.

export class VerifyError extends Error {}

export const HASH_SIZE = 32;
export const MAX_TREE_SIZE = (1n << 63n) - 1n;
const MAX_NOTE_BYTES = 1 << 20;
const MAX_SIGNATURES = 100;
const ALG_ED25519 = 0x01;
const SIG_PREFIX = "\u2014 ";
const FORBIDDEN_CONTROL = /[\x00-\x09\x0b-\x1f]/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const DECIMAL = /^(0|[1-9][0-9]*)$/;
const HEX_ID = /^[0-9a-f]{8}$/;
const utf8 = new TextEncoder();

// --- bytes -------------------------------------------------------------------------------

/** Standard base64, accepting only its one canonical spelling (as the Python side does). */
export function b64decode(text, what = "base64") {
  if (typeof text !== "string" || text.length % 4 !== 0 || !BASE64.test(text)) {
    throw new VerifyError(`${what}: invalid base64`);
  }
  const binary = atob(text);
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  if (b64encode(bytes) !== text) throw new VerifyError(`${what}: non-canonical base64`);
  return bytes;
}

export function b64encode(bytes) {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function fromHex(text) {
  if (!/^([0-9a-f]{2})*$/.test(text)) throw new VerifyError("invalid hex");
  return Uint8Array.from(text.match(/../g) || [], (h) => parseInt(h, 16));
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function equal(a, b) {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

// --- RFC 6962 hashing and proofs ---------------------------------------------------------

export const EMPTY_ROOT = fromHex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");

/** SHA-256(0x00 || entry): the leaf holding ``entry`` (bytes, or a string taken as UTF-8). */
export function leafHash(entry) {
  const bytes = typeof entry === "string" ? utf8.encode(entry) : entry;
  return sha256(concat(Uint8Array.of(0), bytes));
}

export function nodeHash(left, right) {
  return sha256(concat(Uint8Array.of(1), left, right));
}

function bitLength(n) {
  return n === 0n ? 0 : n.toString(2).length;
}

function bitCount(n) {
  return n.toString(2).replaceAll("0", "").length;
}

function size(value, what) {
  let n;
  try {
    n = BigInt(value);
  } catch {
    throw new VerifyError(`${what} must be an integer`);
  }
  if (n < 0n || n > MAX_TREE_SIZE) throw new VerifyError(`${what} ${n} out of range`);
  return n;
}

function checkHash(what, h) {
  if (!(h instanceof Uint8Array) || h.length !== HASH_SIZE) {
    throw new VerifyError(`${what} must be ${HASH_SIZE} bytes`);
  }
}

function checkProof(proof) {
  if (!Array.isArray(proof)) throw new VerifyError("proof must be a list of hashes");
  proof.forEach((h, i) => checkHash(`proof[${i}]`, h));
}

function checkMatch(what, calculated, expected) {
  if (!equal(calculated, expected)) {
    throw new VerifyError(
      `${what} does not match: calculated root ${toHex(calculated)}, expected ${toHex(expected)}`,
    );
  }
}

/** [inner, border]: path lengths below and above where the paths to index and size-1 part. */
function decompInclusion(index, treeSize) {
  const inner = bitLength(index ^ (treeSize - 1n));
  return [inner, bitCount(index >> BigInt(inner))];
}

async function chainInner(seed, proof, index) {
  for (let i = 0; i < proof.length; i++) {
    seed = (index >> BigInt(i)) & 1n ? await nodeHash(proof[i], seed) : await nodeHash(seed, proof[i]);
  }
  return seed;
}

async function chainInnerLeft(seed, proof, index) {
  for (let i = 0; i < proof.length; i++) {
    if ((index >> BigInt(i)) & 1n) seed = await nodeHash(proof[i], seed);
  }
  return seed;
}

async function chainBorder(seed, proof) {
  for (const h of proof) seed = await nodeHash(h, seed);
  return seed;
}

/** The root that ``proof`` implies for leaf hash ``leaf`` at ``index`` in a tree of ``treeSize``. */
export async function rootFromInclusionProof(index, treeSize, leaf, proof) {
  index = size(index, "leaf index");
  treeSize = size(treeSize, "tree size");
  if (index >= treeSize) {
    throw new VerifyError(`leaf index ${index} out of range for tree size ${treeSize}`);
  }
  checkHash("leaf hash", leaf);
  checkProof(proof);
  const [inner, border] = decompInclusion(index, treeSize);
  if (proof.length !== inner + border) {
    throw new VerifyError(
      `inclusion proof for index ${index} in size ${treeSize} must have ${inner + border} hashes, got ${proof.length}`,
    );
  }
  return chainBorder(await chainInner(leaf, proof.slice(0, inner), index), proof.slice(inner));
}

export async function verifyInclusion(index, treeSize, leaf, proof, root) {
  checkHash("root", root);
  checkMatch("inclusion proof", await rootFromInclusionProof(index, treeSize, leaf, proof), root);
}

/** Checks that the tree (size1, root1) is a prefix of (size2, root2). */
export async function verifyConsistency(size1, size2, proof, root1, root2) {
  size1 = size(size1, "size1");
  size2 = size(size2, "size2");
  if (size1 > size2) throw new VerifyError(`need size1 <= size2, got size1=${size1}, size2=${size2}`);
  checkHash("root1", root1);
  checkHash("root2", root2);
  checkProof(proof);
  if (size1 === 0n || size1 === size2) {
    if (proof.length) throw new VerifyError(`consistency proof ${size1} -> ${size2} must be empty`);
    if (size1 === 0n && !equal(root1, EMPTY_ROOT)) {
      throw new VerifyError(`root1 ${toHex(root1)} of the empty tree is not ${toHex(EMPTY_ROOT)}`);
    }
    if (size1 === size2) checkMatch("consistency proof (equal sizes)", root1, root2);
    return;
  }
  if (!proof.length) throw new VerifyError(`consistency proof ${size1} -> ${size2} is empty`);
  // The proof starts at the rightmost perfect subtree of [0, size1); when size1 is a power
  // of two that subtree is the whole old tree, whose hash is root1 and not repeated.
  const shift = bitLength(size1 & -size1) - 1;
  let [inner, border] = decompInclusion(size1 - 1n, size2);
  inner -= shift;
  const perfect = size1 === 1n << BigInt(shift);
  const [seed, path] = perfect ? [root1, proof] : [proof[0], proof.slice(1)];
  if (path.length !== inner + border) {
    throw new VerifyError(
      `consistency proof ${size1} -> ${size2} must have ${inner + border + proof.length - path.length} hashes, got ${proof.length}`,
    );
  }
  const mask = (size1 - 1n) >> BigInt(shift);
  const innerPath = path.slice(0, inner);
  const borderPath = path.slice(inner);
  if (!perfect) {
    const calculated1 = await chainBorder(await chainInnerLeft(seed, innerPath, mask), borderPath);
    checkMatch("consistency proof (root1)", calculated1, root1);
  }
  const calculated2 = await chainBorder(await chainInner(seed, innerPath, mask), borderPath);
  checkMatch("consistency proof (root2)", calculated2, root2);
}

// --- C2SP signed notes and checkpoints ---------------------------------------------------

function checkText(text, what) {
  if (typeof text !== "string") throw new VerifyError(`${what} must be a string`);
  if (text.length > MAX_NOTE_BYTES) throw new VerifyError(`${what} is larger than ${MAX_NOTE_BYTES} bytes`);
  if (!text.isWellFormed()) throw new VerifyError(`${what} is not valid UTF-8`);
  if (utf8.encode(text).length > MAX_NOTE_BYTES) {
    throw new VerifyError(`${what} is larger than ${MAX_NOTE_BYTES} bytes`);
  }
  const bad = FORBIDDEN_CONTROL.exec(text);
  if (bad) throw new VerifyError(`${what} contains a control character at ${bad.index}`);
}

function checkKeyName(name) {
  if (typeof name !== "string" || !name) throw new VerifyError("key name must be a non-empty string");
  if (name.includes("+")) throw new VerifyError(`key name ${JSON.stringify(name)} must not contain '+'`);
  // Python's str.isspace also counts U+001C..U+001F and U+0085, which \s does not.
  if (/[\s\x00-\x1f\x85]/.test(name) || !name.isWellFormed()) {
    throw new VerifyError(`key name ${JSON.stringify(name)} must not contain spaces or control characters`);
  }
}

async function keyId(name, publicKey) {
  const digest = await sha256(concat(utf8.encode(name), utf8.encode("\n"), Uint8Array.of(ALG_ED25519), publicKey));
  return digest.slice(0, 4);
}

/**
 * Parses ``<name>+<8 hex key id>+<base64(0x01 || 32-byte key)>`` and imports the key.
 * Returns {name, keyId, publicKey (raw bytes), cryptoKey, text}.
 */
export async function parseVerifierKey(text) {
  if (typeof text !== "string") throw new VerifyError("verifier key must be a string");
  const first = text.indexOf("+");
  const second = first < 0 ? -1 : text.indexOf("+", first + 1);
  if (second < 0) throw new VerifyError("verifier key must be <name>+<id>+<key>");
  const name = text.slice(0, first);
  const hexId = text.slice(first + 1, second);
  checkKeyName(name);
  if (!HEX_ID.test(hexId)) throw new VerifyError("verifier key: key id must be 8 lowercase hex digits");
  const raw = b64decode(text.slice(second + 1), "verifier key");
  if (!raw.length || raw[0] !== ALG_ED25519) {
    throw new VerifyError("verifier key: unsupported key algorithm (only Ed25519 = 0x01)");
  }
  if (raw.length !== 33) throw new VerifyError("verifier key: Ed25519 key must be 32 bytes");
  const publicKey = raw.slice(1);
  const id = await keyId(name, publicKey);
  if (toHex(id) !== hexId) throw new VerifyError("verifier key: key id does not match name and key");
  let cryptoKey;
  try {
    cryptoKey = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
  } catch {
    throw new VerifyError("verifier key: invalid Ed25519 public key");
  }
  return { name, keyId: id, publicKey, cryptoKey, text };
}

/** What a person compares out of band: SHA-256 of the raw public key, in groups of four. */
export async function keyFingerprint(key) {
  return toHex(await sha256(key.publicKey)).match(/..../g).join(" ");
}

function splitNote(note) {
  checkText(note, "note");
  const at = note.lastIndexOf("\n\n");
  if (at < 0) throw new VerifyError("note has no blank line separating text from signatures");
  const text = note.slice(0, at + 1);
  const block = note.slice(at + 2);
  if (!block) throw new VerifyError("note has no signature lines");
  if (!block.endsWith("\n")) throw new VerifyError("note must end with a newline");
  const lines = block.slice(0, -1).split("\n");
  if (lines.length > MAX_SIGNATURES) throw new VerifyError(`note has more than ${MAX_SIGNATURES} signature lines`);
  const seen = new Set();
  const signatures = lines.map((line, i) => {
    const n = i + 1;
    if (!line.startsWith(SIG_PREFIX)) throw new VerifyError(`signature line ${n} does not start with '— '`);
    const rest = line.slice(SIG_PREFIX.length);
    const space = rest.indexOf(" ");
    if (space < 0 || space === rest.length - 1) {
      throw new VerifyError(`signature line ${n} must be '— <name> <base64>'`);
    }
    const name = rest.slice(0, space);
    try {
      checkKeyName(name);
    } catch (error) {
      throw new VerifyError(`signature line ${n}: ${error.message}`);
    }
    const raw = b64decode(rest.slice(space + 1), `signature line ${n}`);
    if (raw.length < 5) throw new VerifyError(`signature line ${n}: signature too short`);
    const id = raw.slice(0, 4);
    const tag = `${name}+${toHex(id)}`;
    if (seen.has(tag)) throw new VerifyError(`duplicate signature for key ${tag}`);
    seen.add(tag);
    return { name, keyId: id, signature: raw.slice(4) };
  });
  return [text, signatures];
}

/**
 * The note's text if ``key`` signed it. Other keys' signatures are ignored (cosigners), but
 * a bad signature claiming to be ``key``'s rejects the note: that is tampering.
 */
export async function verifyNote(key, note) {
  const [text, signatures] = splitNote(note);
  const body = utf8.encode(text);
  const tag = `${key.name}+${toHex(key.keyId)}`;
  let found = false;
  for (const sig of signatures) {
    if (sig.name !== key.name || !equal(sig.keyId, key.keyId)) continue;
    const ok =
      sig.signature.length === 64 &&
      (await crypto.subtle.verify({ name: "Ed25519" }, key.cryptoKey, sig.signature, body));
    if (!ok) throw new VerifyError(`invalid signature for key ${tag}`);
    found = true;
  }
  if (!found) throw new VerifyError(`note has no signature from key ${tag}`);
  return text;
}

/** Parses a C2SP tlog-checkpoint body: {origin, size (BigInt), root, extensions}. */
export function parseCheckpoint(text) {
  checkText(text, "checkpoint");
  if (!text.endsWith("\n")) throw new VerifyError("checkpoint must end with a newline");
  const lines = text.slice(0, -1).split("\n");
  if (lines.length < 3) throw new VerifyError("checkpoint needs origin, size and root hash lines");
  const [origin, sizeText, rootText, ...extensions] = lines;
  if (!origin) throw new VerifyError("checkpoint origin is empty");
  if (extensions.some((line) => !line)) throw new VerifyError("checkpoint extension lines must be non-empty");
  if (sizeText.length > 19 || !DECIMAL.test(sizeText)) {
    throw new VerifyError(`checkpoint size ${JSON.stringify(sizeText)} is not a canonical decimal`);
  }
  const treeSize = BigInt(sizeText);
  if (treeSize > MAX_TREE_SIZE) throw new VerifyError(`checkpoint size ${sizeText} is too large`);
  const root = b64decode(rootText, "checkpoint root hash");
  if (root.length !== HASH_SIZE) {
    throw new VerifyError(`checkpoint root hash must be ${HASH_SIZE} bytes, got ${root.length}`);
  }
  return { origin, size: treeSize, root, extensions };
}

/** Verifies a signed checkpoint with ``key`` and parses it; checks the origin when given. */
export async function openCheckpoint(key, note, expectedOrigin = null) {
  const checkpoint = parseCheckpoint(await verifyNote(key, note));
  if (expectedOrigin !== null && checkpoint.origin !== expectedOrigin) {
    throw new VerifyError(
      `checkpoint origin ${JSON.stringify(checkpoint.origin)} does not match expected ${JSON.stringify(expectedOrigin)}`,
    );
  }
  return checkpoint;
}

/**
 * The values of a format 2 entry's erasable part ({salt: hex, values: text}), once
 * SHA-256(0x02 || salt || values) is the entry's erasable_hash; throws a VerifyError if not.
 */
export async function checkErasable(entry, erasable) {
  const salt = fromHex(erasable.salt);
  const digest = toHex(await sha256(concat(Uint8Array.of(2), salt, utf8.encode(erasable.values))));
  if (salt.length !== 16 || digest !== entry.erasable_hash) {
    throw new VerifyError("the erasable part does not match the entry's erasable_hash");
  }
  const values = JSON.parse(erasable.values);
  if (values === null || typeof values !== "object" || typeof values.payload !== "string") {
    throw new VerifyError("the erasable values hold no payload");
  }
  return values;
}

/**
 * The whole check behind an event's badge: the checkpoint is signed by the pinned key for
 * this tenant's log, and the entry's bytes hash through the proof to its root; a format 2
 * entry's erasable part, when given, matches its commitment (and its values are put back).
 * Returns {checkpoint, leaf, entry} or throws a VerifyError naming what failed.
 */
export async function verifyEvent(key, { entryText, erasable, index, treeSize, proof, note }) {
  let entry;
  try {
    entry = JSON.parse(entryText);
  } catch {
    throw new VerifyError("the entry bytes are not JSON");
  }
  if (entry === null || typeof entry !== "object" || Array.isArray(entry)) {
    throw new VerifyError("the entry bytes are not a JSON object");
  }
  if (String(entry.index) !== String(index)) {
    throw new VerifyError(`the entry names index ${entry.index}, but it was served as ${index}`);
  }
  let checkpoint;
  try {
    checkpoint = await openCheckpoint(key, note, `${key.name}/${entry.tenant}`);
  } catch (error) {
    throw new VerifyError(`the checkpoint does not verify against the pinned log key: ${error.message}`);
  }
  if (checkpoint.size !== BigInt(treeSize)) {
    throw new VerifyError(`the proof is for tree size ${treeSize}, the signed checkpoint is of size ${checkpoint.size}`);
  }
  const leaf = await leafHash(entryText);
  try {
    await verifyInclusion(index, checkpoint.size, leaf, proof.map((h) => b64decode(h, "proof hash")), checkpoint.root);
  } catch (error) {
    throw new VerifyError(`the entry is not in the signed tree: ${error.message}`);
  }
  if (entry.erasable_hash !== undefined && erasable) {
    entry = { ...entry, ...(await checkErasable(entry, erasable)) };
  }
  return { checkpoint, leaf, entry };
}

// --- log key rotation --------------------------------------------------------------------

/** More key rotations than this between two visits is not a log's ordinary life. */
export const MAX_ROTATIONS = 16;

/**
 * The key to check ``note`` (the log's latest checkpoint) with: ``trusted``, or its successor
 * if the log rotated its key. Mirrors immutablelog.verify.trust.follow_rotation rule for rule.
 *
 * Only a note carrying a signature of another key of the log's name makes it look: then
 * ``handovers()`` gives the log's handovers ({old_key, new_key, checkpoint}), and each one
 * from the key trusted so far whose checkpoint both keys signed, for ``expectedOrigin`` (else
 * the note's own origin), moves the trust one key on. A key with no such handover from the
 * trusted one is never trusted here; the note then fails against the trusted key as before.
 * Returns {key, rotations: [{oldKey, newKey, size}], ignored: [reason]}.
 */
export async function followRotation(trusted, note, handovers, expectedOrigin = null) {
  const result = { key: trusted, rotations: [], ignored: [] };
  let origin;
  let signatures;
  try {
    let text;
    [text, signatures] = splitNote(note);
    origin = parseCheckpoint(text).origin;
  } catch (error) {
    if (error instanceof VerifyError) return result; // the note's own check says what is wrong
    throw error;
  }
  if (!signatures.some((s) => s.name === trusted.name && !equal(s.keyId, trusted.keyId))) return result;
  origin = expectedOrigin ?? origin;
  const offered = await handovers();
  for (let i = 0; i < MAX_ROTATIONS; i++) {
    const next = await handedOver(result, offered, origin);
    if (next === null) break;
  }
  return result;
}

async function handedOver(result, offered, origin) {
  const trusted = result.key;
  for (const { old_key: oldKey, new_key: newKey, checkpoint: handover } of offered) {
    if (oldKey !== trusted.text) continue;
    let successor;
    let checkpoint;
    try {
      successor = await parseVerifierKey(newKey);
      if (successor.name !== trusted.name) throw new VerifyError(`the new key is named ${JSON.stringify(successor.name)}`);
      await verifyNote(trusted, handover);
      checkpoint = parseCheckpoint(await verifyNote(successor, handover));
      if (checkpoint.origin !== origin) {
        throw new VerifyError(`it is a checkpoint of ${JSON.stringify(checkpoint.origin)}`);
      }
    } catch (error) {
      if (!(error instanceof VerifyError)) throw error;
      result.ignored.push(`ignored a handover from ${oldKey} to ${newKey}: ${error.message}`);
      continue;
    }
    result.rotations.push({ oldKey, newKey, size: checkpoint.size });
    result.key = successor;
    return successor;
  }
  return null;
}
