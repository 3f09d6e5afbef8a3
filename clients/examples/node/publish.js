// A Sinergi client in Node.js, from the .proto files alone: publish an alert over mutual TLS as
// one identity, check its receipt, then read it back with GetAlert. Prints one JSON line.
//
//   SINERGI_SERVER=127.0.0.1:50051 SINERGI_IDENTITY=../../../certs/dev/immigration node publish.js
//
// SINERGI_PROTO names the folder holding sinergi/v1/*.proto (default: the repository's proto/);
// SINERGI_LEDGER_KEY the ledger's verifier key (default: ledger.vkey in the identity directory,
// else in its parent). Every write is signed with the identity's own key (docs/decisions/0014):
// a sinergi.v1.Statement holding the request is encoded with protobufjs and signed over its
// DSSE v1 encoding. The receipt is checked in full, as the Python library checks it (receipt.js):
// the checkpoint's signature, the entry hash, the inclusion proof and what the entry records.
// Exit codes: 0 ok; 1 refused, or the receipt does not verify; 2 usage; 3 unreachable.
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");
const receipts = require("./receipt");

const server = process.env.SINERGI_SERVER || "127.0.0.1:50051";
const identity = process.env.SINERGI_IDENTITY;
const protoDir = process.env.SINERGI_PROTO || path.join(__dirname, "..", "..", "..", "proto");

function fail(message, code = 2) {
  process.stderr.write(`publish.js: ${message}\n`);
  process.exit(code);
}

function readIdentity(dir) {
  if (!dir) fail("set SINERGI_IDENTITY to an identity directory (tls.crt, tls.key, ca.crt)");
  const read = (name) => {
    const file = path.join(dir, name);
    try {
      return fs.readFileSync(file);
    } catch (err) {
      return fail(`cannot read ${file}: ${err.code}`);
    }
  };
  return { cert: read("tls.crt"), key: read("tls.key"), ca: read("ca.crt") };
}

const STATEMENT_TYPE = "application/vnd.sinergi.statement.v1+proto";

// DSSE v1 pre-authentication encoding: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body.
function pae(type, body) {
  const kind = Buffer.from(type, "utf8");
  return Buffer.concat([
    Buffer.from(`DSSEv1 ${kind.length} `), kind, Buffer.from(` ${body.length} `), body,
  ]);
}

// Who we are (the certificate's SPIFFE ID) and the ledger key receipts must be signed with:
// both before anything is published, so that a receipt can always be checked.
function principalAndVerifier(dir, cert) {
  try {
    const me = receipts.principalOf(cert);
    const file = receipts.findLedgerKey(dir, process.env.SINERGI_LEDGER_KEY);
    return { me, verifier: receipts.loadVerifier(file) };
  } catch (err) {
    if (!(err instanceof receipts.LedgerError)) throw err;
    return fail(err.message);
  }
}

// `request` with its signature: over a Statement holding it (`kind`: publish, update or cancel).
function signed(Statement, kind, request, sender, keyPem) {
  const now = Date.now();
  const statement = Statement.encode(
    Statement.fromObject({
      sender,
      signed_at: { seconds: Math.floor(now / 1000), nanos: (now % 1000) * 1e6 },
      [kind]: request,
    }),
  ).finish();
  const key = crypto.createPrivateKey(keyPem);
  const digest = key.asymmetricKeyType === "ed25519" ? null : "sha256"; // ECDSA: DER signature
  const signature = crypto.sign(digest, pae(STATEMENT_TYPE, Buffer.from(statement)), key);
  return { ...request, signature: { statement: Buffer.from(statement), signature } };
}

function statementType() {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => path.join(protoDir, target);
  root.loadSync("sinergi/v1/exchange.proto", { keepCase: true });
  return root.lookupType("sinergi.v1.Statement");
}

function call(client, method, request) {
  const deadline = new Date(Date.now() + 10000);
  return new Promise((resolve, reject) => {
    client[method](request, { deadline }, (err, reply) => (err ? reject(err) : resolve(reply)));
  });
}

async function main() {
  const definition = protoLoader.loadSync("sinergi/v1/exchange.proto", {
    includeDirs: [protoDir],
    keepCase: true,
    enums: String,
    longs: String,
    defaults: true,
    oneofs: true,
  });
  const { Exchange } = grpc.loadPackageDefinition(definition).sinergi.v1;
  const { cert, key, ca } = readIdentity(identity);
  const { me, verifier } = principalAndVerifier(identity, cert);
  const credentials = grpc.credentials.createSsl(ca, key, cert);
  // The dev server certificate names localhost and 127.0.0.1; checking the name "localhost"
  // avoids grpc-js's warning about IP addresses in TLS server names.
  const client = new Exchange(server, credentials, {
    "grpc.ssl_target_name_override": "localhost",
    "grpc.default_authority": "localhost",
  });

  const request = {
    idempotency_key: crypto.randomUUID(), // reuse it to retry safely
    alert: {
      status: "STATUS_ACTUAL",
      message_type: "MESSAGE_TYPE_ALERT",
      category: "CATEGORY_PASSPORT_HOLD",
      severity: "SEVERITY_SEVERE",
      urgency: "URGENCY_EXPECTED",
      certainty: "CERTAINTY_LIKELY",
      handling: "TLP_AMBER",
      recipients: ["police"],
      subjects: [{ person: { passport_number: "C9900112", nationality: "ID" } }],
      summary: "Passport applicant recruited by an unlicensed agent (sent from Node.js)",
    },
  };
  const published = await call(
    client, "Publish", signed(statementType(), "publish", request, me.id, key),
  );
  let verified;
  try {
    verified = receipts.verifyReceipt(published.receipt, {
      action: "PUBLISH", object: `alert:${published.alert_id}`, me, verifiers: [verifier],
    });
  } catch (err) {
    if (!(err instanceof receipts.ReceiptError)) throw err;
    client.close();
    fail(`receipt refused: ${err.message}`, 1);
  }
  const { checkpoint } = verified;

  const view = await call(client, "GetAlert", { alert_id: published.alert_id });
  client.close();
  process.stdout.write(
    JSON.stringify({
      ok: true,
      alert_id: published.alert_id,
      seq: Number(verified.seq),
      checkpoint: {
        origin: checkpoint.origin,
        size: Number(checkpoint.size),
        root: checkpoint.root.toString("hex"),
      },
      read_back: view.id,
      state: view.state,
      sender: view.current.sender,
      summary: view.current.summary,
    }) + "\n",
  );
}

main().catch((err) => {
  // A refusal's status; INVALID_ARGUMENT also carries a google.rpc.BadRequest with the fields,
  // in the grpc-status-details-bin trailer (err.metadata).
  const details = err.metadata ? err.metadata.get("grpc-status-details-bin") : [];
  const unreachable = err.code === grpc.status.UNAVAILABLE || err.code === grpc.status.DEADLINE_EXCEEDED;
  fail(
    `${grpc.status[err.code] || "ERROR"}: ${err.details || err.message}` +
      (details.length ? ` (${details[0].length} bytes of status details)` : ""),
    unreachable ? 3 : 1,
  );
});
