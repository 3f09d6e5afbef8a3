// A Sinergi client in Node.js, from the .proto files alone: publish an alert over mutual TLS as
// one identity, then read it back with GetAlert. Prints one JSON line with the ids.
//
//   SINERGI_SERVER=127.0.0.1:50051 SINERGI_IDENTITY=../../../certs/dev/immigration node publish.js
//
// SINERGI_PROTO names the folder holding sinergi/v1/*.proto (default: the repository's proto/).
// Every write is signed with the identity's own key (docs/decisions/0014): a sinergi.v1.Statement
// holding the request is encoded with protobufjs and signed over its DSSE v1 encoding.
// The receipt's entry hash is checked here (SHA-256 of 0x00 || entry); the full verification
// (checkpoint signature, inclusion proof) is what the Python library adds: docs/ledger-format.md.
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

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

// The principal a certificate names: its one spiffe:// URI subjectAltName.
function spiffeId(certPem) {
  const names = new crypto.X509Certificate(certPem).subjectAltName || "";
  const uri = names.split(", ").find((n) => n.startsWith("URI:spiffe://"));
  if (!uri) fail("the identity certificate names no spiffe:// principal");
  return uri.slice("URI:".length);
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
    client, "Publish", signed(statementType(), "publish", request, spiffeId(cert), key),
  );
  const receipt = published.receipt;
  const leaf = crypto
    .createHash("sha256")
    .update(Buffer.concat([Buffer.from([0]), receipt.entry]))
    .digest();
  if (!leaf.equals(receipt.entry_hash)) fail("receipt entry does not match its hash", 1);

  const view = await call(client, "GetAlert", { alert_id: published.alert_id });
  client.close();
  process.stdout.write(
    JSON.stringify({
      ok: true,
      alert_id: published.alert_id,
      seq: Number(receipt.seq),
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
