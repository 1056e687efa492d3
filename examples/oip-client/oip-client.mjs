#!/usr/bin/env node
// A minimal Open Inference Protocol (KServe v2) client for the modelfleet
// agent's HTTP front end, with no dependencies: Node 18 or newer (built-in
// fetch). It checks the server's health, reads the model's metadata, builds
// the input from it, runs one inference and prints the response JSON.
//
//   node oip-client.mjs --model vibration [--url http://127.0.0.1:8080]
//                       [--data '[[0.1, ...]]'] [--id my-request]
//
// --data is the input's values as JSON, flat or nested; its shape is the
// model's, with a dimension the model leaves open (-1) set from the number
// of values. Without --data, the client sends one window of a sine wave.
// The response goes to stdout; progress and errors go to stderr. The exit
// status is 0 on success, 1 when the server refused or failed, 2 on bad
// usage.

import { parseArgs } from "node:util";

function usage(msg) {
  console.error(`oip-client: ${msg}`);
  console.error("usage: node oip-client.mjs --model NAME [--url URL] [--data JSON] [--id ID]");
  process.exit(2);
}

let args;
try {
  args = parseArgs({
    options: {
      url: { type: "string", default: "http://127.0.0.1:8080" },
      model: { type: "string" },
      data: { type: "string" },
      id: { type: "string", default: `oip-client-${process.pid}` },
    },
  }).values;
} catch (e) {
  usage(e.message);
}
if (!args.model) usage("--model is required");
const base = args.url.replace(/\/+$/, "");
const model = encodeURIComponent(args.model);

// call fetches a path and returns [status, parsed JSON body or null].
async function call(method, path, body) {
  const resp = await fetch(base + path, {
    method,
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await resp.text();
  let json = null;
  if (text) {
    try {
      json = JSON.parse(text);
    } catch {
      json = { error: `not JSON: ${text.slice(0, 200)}` };
    }
  }
  return [resp.status, json];
}

function fail(what, status, body) {
  console.error(`oip-client: ${what}: HTTP ${status}: ${body && body.error ? body.error : "(no message)"}`);
  process.exit(1);
}

// flatten returns the values of a nested array, row-major.
const flatten = (v) => (Array.isArray(v) ? v.flatMap(flatten) : [v]);

async function main() {
  let [status, body] = await call("GET", "/v2/health/live");
  if (status !== 200) fail("server not live", status, body);
  [status, body] = await call("GET", "/v2/health/ready");
  console.error(`server ready: ${status === 200 ? "yes" : `no (${body && body.error})`}`);
  [status, body] = await call("GET", "/v2");
  if (status !== 200) fail("server metadata", status, body);
  console.error(`server: ${body.name} ${body.version}`);

  const [mstatus, meta] = await call("GET", `/v2/models/${model}`);
  if (mstatus !== 200) fail(`model ${args.model}`, mstatus, meta);
  console.error(`model: ${meta.name} versions ${JSON.stringify(meta.versions)} on ${meta.platform}`);
  if (meta.inputs.length !== 1) {
    console.error(`oip-client: model ${meta.name} takes ${meta.inputs.length} inputs; this client feeds models with one`);
    process.exit(2);
  }
  const input = meta.inputs[0];
  const fixed = input.shape.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
  let data;
  if (args.data !== undefined) {
    try {
      data = JSON.parse(args.data);
    } catch (e) {
      usage(`--data is not JSON: ${e.message}`);
    }
  } else {
    data = Array.from({ length: fixed }, (_, i) => Math.sin(i / 4));
  }
  const count = flatten(data).length;
  const open = input.shape.filter((d) => d === -1).length;
  if (open > 1 || count % fixed !== 0 || (open === 0 && count !== fixed)) {
    usage(`${count} values do not fit input ${input.name} of shape ${JSON.stringify(input.shape)}`);
  }
  const shape = input.shape.map((d) => (d === -1 ? count / fixed : d));

  const request = { id: args.id, inputs: [{ name: input.name, shape, datatype: input.datatype, data }] };
  const [istatus, result] = await call("POST", `/v2/models/${model}/infer`, request);
  if (istatus !== 200) fail("inference", istatus, result);
  if (result.id !== args.id) {
    console.error(`oip-client: response id ${result.id} does not match request id ${args.id}`);
    process.exit(1);
  }
  console.log(JSON.stringify(result));
}

main().catch((e) => {
  console.error(`oip-client: ${e.cause ? `${e.message}: ${e.cause.message}` : e.message}`);
  process.exit(1);
});
