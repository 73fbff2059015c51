// install(): automatic collection (errors, API errors, frustration signals) and the transport.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { createBrowser, FakeStorage, FakeResponse, element, useClock, flush, ENDPOINT } = require("./fake_browser.cjs");

test("window error events -> errors; resource load errors ignored", (t) => {
  const clock = useClock(t);
  const b = createBrowser().install();
  const err = new TypeError("x is undefined for jane@mail.example");
  b.win.dispatch("error", { message: "Uncaught " + err.message, filename: "https://shop.example/app.js#l", lineno: 12, colno: 7, error: err });
  b.win.dispatch("error", { target: { nodeName: "IMG" } }); // a broken image, seen through capture
  b.win.dispatch("error", { message: "Script error.", lineno: 0, colno: 0, error: null });
  b.hide();
  assert.deepEqual(b.views()[0].errors, [
    {
      message: "Uncaught x is undefined for CS_ANONYMIZED_EMAIL",
      time: clock.now(),
      filename: "https://shop.example/app.js",
      line: 12,
      col: 7,
      type: "TypeError",
    },
    { message: "Script error.", time: clock.now(), line: 0, col: 0, type: "Error" },
  ]);
});

test("unhandledrejection -> errors with type unhandledrejection", (t) => {
  useClock(t);
  const b = createBrowser().install();
  b.win.dispatch("unhandledrejection", { reason: new Error("boom") });
  b.win.dispatch("unhandledrejection", { reason: "plain reason" });
  b.win.dispatch("unhandledrejection", { reason: undefined });
  b.hide();
  assert.deepEqual(
    b.views()[0].errors.map((e) => [e.message, e.type]),
    [
      ["boom", "unhandledrejection"],
      ["plain reason", "unhandledrejection"],
      ["undefined", "unhandledrejection"],
    ]
  );
});

test("fetch wrapper: 503 after a click is an API error; the same Response comes back", async (t) => {
  const clock = useClock(t);
  const response = new FakeResponse(503);
  const b = createBrowser({ fetchHandler: (url) => (/\/api\/|api\.other/.test(url) ? Promise.resolve(response) : Promise.resolve(new FakeResponse(200))) });
  b.install();
  clock.advance(10000);
  b.click(100, 100);
  clock.advance(500);
  const promise = b.win.fetch("/api/stock?sku=1#x", { method: "get" });
  assert.equal(promise, b.fetchCalls.at(-1).promise, "the very promise the original fetch returned");
  assert.equal(await promise, response, "the page gets the original Response object");
  assert.equal(b.fetchCalls.at(-1).self, b.win, "the original fetch is called on window");
  await b.win.fetch("https://shop.example/ok");
  clock.advance(5000);
  await b.win.fetch(new URL("https://api.other.example/v1/cart"), { method: "POST" }).then(() => {});
  await flush();
  b.hide();
  const errs = b.views()[0].api_errors;
  assert.equal(errs.length, 2);
  assert.deepEqual(errs[0], { url: "/api/stock?sku=1", method: "GET", status: 503, time: clock.now() - 5000, after_click: true });
  assert.deepEqual(errs[1], { url: "https://api.other.example/v1/cart", method: "POST", status: 503, time: clock.now(), after_click: false });
});

test("fetch wrapper: network errors reject unchanged and are recorded with status 0", async (t) => {
  useClock(t);
  const boom = new TypeError("Failed to fetch");
  const b = createBrowser({ fetchHandler: () => Promise.reject(boom) }).install();
  await assert.rejects(b.win.fetch("/api/x"), (e) => e === boom);
  const abort = Object.assign(new Error("aborted"), { name: "AbortError" });
  await assert.rejects(createBrowser({ fetchHandler: () => Promise.reject(abort) }).install().win.fetch("/a"), (e) => e === abort);
  await flush();
  b.hide();
  assert.deepEqual(b.views()[0].api_errors.map((e) => [e.url, e.status, e.after_click]), [["/api/x", 0, false]]);
});

test("fetch wrapper: requests to the tag's own endpoint are not recorded", async (t) => {
  useClock(t);
  const b = createBrowser({ fetchHandler: () => Promise.resolve(new FakeResponse(429)) }).install();
  await b.win.fetch(ENDPOINT, { method: "POST", body: "{}" });
  await b.win.fetch(ENDPOINT + "?x=1");
  await flush();
  b.hide();
  assert.equal(b.views()[0].api_errors, undefined);
});

test("XMLHttpRequest: loadend with status >= 400 or 0 -> API error", (t) => {
  useClock(t);
  const b = createBrowser().install();
  const send = (method, url, status) => {
    const x = new b.win.XMLHttpRequest();
    x.open(method, url);
    x.send();
    x.respond(status);
  };
  send("GET", "/api/ok", 200);
  send("post", "/api/fail", 500);
  send("GET", "/api/offline", 0);
  b.hide();
  assert.deepEqual(b.views()[0].api_errors.map((e) => [e.url, e.method, e.status]), [
    ["/api/fail", "POST", 500],
    ["/api/offline", "GET", 0],
  ]);
});

test("rage click: 3 clicks within 1 s and 30 px", (t) => {
  const clock = useClock(t);
  const b = createBrowser().install();
  b.click(100, 100);
  clock.advance(300);
  b.click(300, 100); // far away
  clock.advance(300);
  b.click(110, 90);
  b.push(["trackPageview", "/2"]);
  b.click(100, 100);
  clock.advance(200);
  b.click(105, 100);
  clock.advance(200);
  b.click(95, 110);
  b.hide();
  assert.deepEqual(b.views().map((v) => v.rage_click), [false, true]);
});

test("multiple button interaction: the same button 3 times within 10 s", (t) => {
  const clock = useClock(t);
  const b = createBrowser().install();
  const buy = {};
  const other = {};
  for (const el of [buy, other, buy]) {
    b.click(10, 10 + clock.advance(3000) % 500, element(el));
  }
  b.click(500, 500, element(null)); // not a button
  b.push(["trackPageview", "/2"]);
  for (let i = 0; i < 3; i++) {
    clock.advance(3000);
    b.click(10 * i, 400, element(buy));
  }
  b.hide();
  assert.deepEqual(b.views().map((v) => [v.multiple_button, v.rage_click]), [[false, false], [true, false]]);
});

test("sendBeacon gets the endpoint and a JSON string body", (t) => {
  useClock(t);
  const b = createBrowser().install().hide();
  assert.equal(b.rawBeacons.length, 1);
  assert.equal(b.rawBeacons[0].url, ENDPOINT);
  assert.equal(typeof b.rawBeacons[0].body, "string");
  assert.equal(b.fetchCalls.length, 0);
});

test("sendBeacon returning false (or missing) -> fetch keepalive with the same body", (t) => {
  useClock(t);
  for (const opts of [{ beaconResult: false }, { noBeacon: true }]) {
    const b = createBrowser(opts).install().hide();
    assert.equal(b.fetchCalls.length, 1);
    const { url, init } = b.fetchCalls[0];
    assert.equal(url, ENDPOINT);
    assert.deepEqual(
      { ...init, body: undefined },
      { method: "POST", body: undefined, keepalive: true, credentials: "omit", mode: "cors", headers: { "Content-Type": "text/plain;charset=UTF-8" } }
    );
    const body = JSON.parse(init.body);
    assert.equal(body.views[0].view_number, 1);
    if (opts.beaconResult === false) assert.equal(b.rawBeacons[0].body, init.body);
  }
});

test("the fallback uses the original fetch, so a failed beacon is not an API error", async (t) => {
  useClock(t);
  let calls = 0;
  const b = createBrowser({ beaconResult: false, fetchHandler: () => Promise.resolve(new FakeResponse(500 + calls++)) }).install();
  const original = b.win.fetch;
  b.win.fetch = () => {
    throw new Error("the page replaced fetch after the tag loaded");
  };
  b.push(["trackPageview", "/2"]);
  await flush();
  b.win.fetch = original;
  b.hide();
  assert.equal(b.fetchCalls.length, 2);
  assert.equal(JSON.parse(b.fetchCalls[1].init.body).views[0].api_errors, undefined);
});

test("fetch network failure -> kept in sessionStorage, resent with the same batch on the next load", async (t) => {
  const clock = useClock(t);
  const storage = new FakeStorage();
  const offline = createBrowser({ storage, beaconResult: false, fetchHandler: () => Promise.reject(new TypeError("Failed to fetch")) });
  offline.install().hide();
  await flush();
  const pending = JSON.parse(storage.getItem("_cs_pending"));
  assert.equal(pending.length, 1);
  const lost = JSON.parse(pending[0]);
  clock.advance(60000);
  const online = createBrowser({ storage, jar: offline.jar }).install();
  assert.equal(storage.getItem("_cs_pending"), null, "taken out of storage");
  assert.equal(online.beacons.length, 1, "resent at install");
  const resent = online.beacons[0];
  assert.equal(resent.batch, lost.batch);
  assert.deepEqual(resent.views, lost.views);
  assert.equal(resent.sent_at, clock.now());
  online.hide();
  assert.equal(online.beacons.length, 2);
  assert.notEqual(online.beacons[1].batch, lost.batch);
});

test("at most 20 pending bodies are kept", async (t) => {
  useClock(t);
  const storage = new FakeStorage();
  const b = createBrowser({ storage, beaconResult: false, fetchHandler: () => Promise.reject(new TypeError("offline")) }).install();
  for (let i = 0; i < 25; i++) b.push(["trackPageview", "/p" + i]);
  b.hide();
  await flush();
  const pending = JSON.parse(storage.getItem("_cs_pending")).map((x) => JSON.parse(x).views[0].url);
  assert.equal(pending.length, 20);
  assert.equal(pending.at(-1), "https://shop.example/p24", "the newest are kept");
});

test("a view too big for one body is sent with its longest list cut", (t) => {
  useClock(t);
  const b = createBrowser().install();
  for (let i = 0; i < 100; i++) b.push(["trackError", "e".repeat(299) + (i % 10)]);
  for (let i = 0; i < 100; i++) b.win.dispatch("error", { message: "m".repeat(300), filename: "https://shop.example/" + "f".repeat(1000), lineno: 1, colno: 1, error: new Error() });
  b.hide();
  assert.equal(b.beacons.length, 1);
  assert.ok(Buffer.byteLength(b.rawBeacons[0].body) <= 60000);
  assert.ok(b.views()[0].errors.length >= 25);
});
