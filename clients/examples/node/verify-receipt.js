// Check a receipt obtained elsewhere (by a client in another language, say) as publish.js checks
// its own, and print one JSON line: what it proves.
//
//   SINERGI_IDENTITY=../../../certs/dev/immigration node verify-receipt.js PUBLISH alert:ID <r.json
//
// r.json is a sinergi.v1.Receipt in the proto3 JSON mapping (bytes in base64, int64 as strings;
// what Python's json_format.MessageToJson writes). The receipt must record ACTION on OBJECT by a
// principal of the identity's agency; the ledger key is found as publish.js finds it.
// Exit codes: 0 verified; 1 the receipt does not verify; 2 usage.
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const receipts = require("./receipt");

function fail(message, code) {
  process.stderr.write(`verify-receipt.js: ${message}\n`);
  process.exit(code);
}

// proto3 JSON: either field name (lowerCamelCase or the .proto's), bytes in base64.
function field(object, camel, snake) {
  return object[camel] !== undefined ? object[camel] : object[snake];
}
const bytes = (value) => Buffer.from(value || "", "base64");

function receiptFromJson(json) {
  const checkpoint = json.checkpoint || {};
  return {
    seq: json.seq === undefined ? "0" : String(json.seq),
    entry: bytes(json.entry),
    entry_hash: bytes(field(json, "entryHash", "entry_hash")),
    checkpoint: { note: bytes(checkpoint.note) },
    inclusion_proof: (field(json, "inclusionProof", "inclusion_proof") || []).map(bytes),
  };
}

function main() {
  const [action, object] = process.argv.slice(2);
  const identity = process.env.SINERGI_IDENTITY;
  if (!action || !object || !identity) {
    fail("usage: SINERGI_IDENTITY=DIR node verify-receipt.js ACTION OBJECT < receipt.json", 2);
  }
  let receipt, me, verifier;
  try {
    receipt = receiptFromJson(JSON.parse(fs.readFileSync(0, "utf8")));
  } catch (err) {
    fail(`standard input is not a receipt in JSON: ${err.message}`, 2);
  }
  try {
    me = receipts.principalOf(fs.readFileSync(path.join(identity, "tls.crt")));
    verifier = receipts.loadVerifier(
      receipts.findLedgerKey(identity, process.env.SINERGI_LEDGER_KEY),
    );
  } catch (err) {
    fail(err.message, 2);
  }
  try {
    const { seq, entry, checkpoint } = receipts.verifyReceipt(receipt, {
      action, object, me, verifiers: [verifier],
    });
    process.stdout.write(
      JSON.stringify({
        ok: true,
        seq: Number(seq),
        action: entry.action,
        actor: entry.actor.id,
        checkpoint: {
          origin: checkpoint.origin,
          size: Number(checkpoint.size),
          root: checkpoint.root.toString("hex"),
        },
      }) + "\n",
    );
  } catch (err) {
    if (!(err instanceof receipts.ReceiptError)) throw err;
    fail(`receipt refused: ${err.message}`, 1);
  }
}

main();
