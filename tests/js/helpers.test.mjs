// Pure helpers of the tag, tested directly.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { tag } = require("./fake_browser.cjs");

test("exports install and the pure helpers", () => {
  for (const name of [
    "install",
    "parseCsId",
    "formatCsId",
    "parseSession",
    "formatSession",
    "truncateRevenue",
    "redact",
    "normalizeCustomVar",
    "normalizeDynamicVar",
    "createRageClickDetector",
    "createMultipleButtonDetector",
    "fitBody",
  ]) {
    assert.equal(typeof tag[name], "function", name);
  }
});

test("_cs_id round trip and bad values", () => {
  const id = { user: "8f14e45f-ceea-4e7a-9f1b-3c5a1f0b2d11", created: 1764669000, visits: 3, lastPageview: 1764669500, lastVisit: 1764669400 };
  const text = tag.formatCsId(id);
  assert.equal(text, "8f14e45f-ceea-4e7a-9f1b-3c5a1f0b2d11.1764669000.3.1764669500.1764669400");
  assert.deepEqual(tag.parseCsId(text), id);
  assert.deepEqual(tag.parseCsId(text + ".0.0.1.0"), id, "vendor's extra fields are ignored");
  assert.equal(tag.parseCsId("not-a-uuid.1.2.3.4"), null);
  assert.equal(tag.parseCsId("8f14e45f-ceea-4e7a-9f1b-3c5a1f0b2d11.1.x.3.4"), null);
  assert.equal(tag.parseCsId("8f14e45f-ceea-4e7a-9f1b-3c5a1f0b2d11.1.0.3.4"), null, "visit count starts at 1");
  assert.equal(tag.parseCsId(""), null);
  assert.equal(tag.parseCsId(null), null);
});

test("_cs_s round trip and bad values", () => {
  const s = { pages: 4, start: 1764669000000, expiry: 1764670800000 };
  assert.equal(tag.formatSession(s), "4.1764669000000.1764670800000");
  assert.deepEqual(tag.parseSession("4.1764669000000.1764670800000"), s);
  assert.equal(tag.parseSession("4.1764669000000"), null);
  assert.equal(tag.parseSession("a.b.c"), null);
  assert.equal(tag.parseSession("-1.2.3"), null);
  assert.equal(tag.parseSession(undefined), null);
});

test("truncateRevenue keeps the last 12 integer digits and cuts (never rounds) to 2 decimals", () => {
  assert.equal(tag.truncateRevenue("12345678901234.999"), "345678901234.99");
  assert.equal(tag.truncateRevenue(9.999), "9.99");
  assert.equal(tag.truncateRevenue("9.99"), "9.99");
  assert.equal(tag.truncateRevenue("59.9"), "59.90");
  assert.equal(tag.truncateRevenue(59), "59.00");
  assert.equal(tag.truncateRevenue("007.5"), "7.50");
  assert.equal(tag.truncateRevenue(".5"), "0.50");
  assert.equal(tag.truncateRevenue(0), "0.00");
  assert.equal(tag.truncateRevenue(1e-7), "0.00");
  assert.equal(tag.truncateRevenue("9,5"), "9.50", "a decimal comma, as the server reads it");
  assert.equal(tag.truncateRevenue("+4.2"), "4.20");
  for (const bad of ["", "abc", "-3", -3, NaN, Infinity, null, undefined, {}, "1,299.00", "1.2.3", "."]) {
    assert.equal(tag.truncateRevenue(bad), null, String(bad));
  }
});

test("redact masks e-mails (plain and URL-encoded) and JWTs", () => {
  const jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
  assert.equal(tag.redact("https://shop.example/reset/" + jwt + "?x=1"), "https://shop.example/reset/CS_ANONYMIZED_JWT?x=1");
  assert.equal(tag.redact("https://shop.example/?email=jane.doe+x@mail.example.com&a=1"), "https://shop.example/?email=CS_ANONYMIZED_EMAIL&a=1");
  assert.equal(tag.redact("https://shop.example/?email=jane%40mail.example.com"), "https://shop.example/?email=CS_ANONYMIZED_EMAIL");
  assert.equal(tag.redact("contact jane@x.io or bob@y.fr"), "contact CS_ANONYMIZED_EMAIL or CS_ANONYMIZED_EMAIL");
  assert.equal(tag.redact("https://shop.example/p/1?x=eyJ"), "https://shop.example/p/1?x=eyJ", "no false positive");
  assert.equal(tag.redact("plain text"), "plain text");
});

test("normalizeCustomVar: index, truncation, scopes", () => {
  assert.deepEqual(tag.normalizeCustomVar(1, "plan", "gold"), { index: 1, name: "plan", value: "gold", scope: "session", kind: "visit" });
  assert.equal(tag.normalizeCustomVar(2, "a", "b", 2).kind, "visit");
  assert.equal(tag.normalizeCustomVar(2, "a", "b", "visit").scope, "session");
  assert.deepEqual([3, "page"].map((s) => tag.normalizeCustomVar(2, "a", "b", s)).map((c) => [c.kind, c.scope]), [["page", "page"], ["page", "page"]]);
  assert.deepEqual([4, "nextPageOnly"].map((s) => tag.normalizeCustomVar(2, "a", "b", s).kind), ["nextPageOnly", "nextPageOnly"]);
  for (const bad of [0, 21, 1.5, "1", null, undefined, NaN]) assert.equal(tag.normalizeCustomVar(bad, "a", "b"), null, String(bad));
  assert.equal(tag.normalizeCustomVar(1, "", "b"), null, "a nameless var is not sent");
  const long = tag.normalizeCustomVar(20, "n".repeat(600), "v".repeat(300));
  assert.equal(long.name.length, 512);
  assert.equal(long.value.length, 255);
  assert.equal(tag.normalizeCustomVar(5, "email", "jane@mail.example").value, "CS_ANONYMIZED_EMAIL");
  assert.equal(tag.normalizeCustomVar(5, "n", 42).value, "42", "values are sent as strings");
});

test("normalizeDynamicVar: strings cut, integers 0..4294967296, the rest ignored", () => {
  assert.deepEqual(tag.normalizeDynamicVar({ key: "cart_size", value: 2 }), { key: "cart_size", value: 2 });
  assert.deepEqual(tag.normalizeDynamicVar({ key: "max", value: 4294967296 }), { key: "max", value: 4294967296 });
  assert.equal(tag.normalizeDynamicVar({ key: "s", value: "x".repeat(300) }).value.length, 255);
  assert.equal(tag.normalizeDynamicVar({ key: "k".repeat(600), value: 1 }).key.length, 512);
  assert.equal(tag.normalizeDynamicVar({ key: "mail", value: "a@b.example" }).value, "CS_ANONYMIZED_EMAIL");
  for (const value of [-1, 4294967297, 1.5, NaN, true, null, undefined, {}]) {
    assert.equal(tag.normalizeDynamicVar({ key: "k", value }), null, String(value));
  }
  assert.equal(tag.normalizeDynamicVar({ value: 1 }), null);
  assert.equal(tag.normalizeDynamicVar(null), null);
});

test("rage click detector: 3 clicks within 1 s and 30 px", () => {
  const click = tag.createRageClickDetector();
  assert.equal(click(0, 100, 100), false);
  assert.equal(click(300, 110, 105), false);
  assert.equal(click(600, 95, 120), true);
  const far = tag.createRageClickDetector();
  far(0, 100, 100);
  far(100, 200, 100);
  assert.equal(far(200, 300, 100), false, "clicks 100 px apart are not a rage click");
  const slow = tag.createRageClickDetector();
  slow(0, 10, 10);
  slow(600, 10, 10);
  assert.equal(slow(1200, 10, 10), false, "the first click is older than 1 s");
  assert.equal(slow(1300, 10, 10), true);
});

test("multiple button detector: the same element 3 times within 10 s", () => {
  const click = tag.createMultipleButtonDetector();
  const a = {};
  const b = {};
  assert.equal(click(a, 0), false);
  assert.equal(click(b, 1000), false);
  assert.equal(click(a, 4000), false);
  assert.equal(click(b, 5000), false);
  assert.equal(click(a, 9000), true);
  const slow = tag.createMultipleButtonDetector();
  slow(a, 0);
  slow(a, 6000);
  assert.equal(slow(a, 12000), false, "the first click is older than 10 s");
});

test("fitBody cuts the longest list until the body fits", () => {
  const errors = Array.from({ length: 400 }, (_, i) => ({ message: "x".repeat(280) + i, time: i, type: "custom" }));
  const body = { v: 1, views: [{ view_number: 1, view_time: 1, url: "https://a.example/", errors, dynamic_vars: [{ key: "k", value: 1 }] }] };
  const small = tag.fitBody(JSON.parse(JSON.stringify(body)), 1e6);
  assert.deepEqual(JSON.parse(small), body, "a body under the cap is unchanged");
  const text = tag.fitBody(body);
  assert.ok(Buffer.byteLength(text) <= 60000);
  const out = JSON.parse(text);
  assert.ok(out.views[0].errors.length > 50 && out.views[0].errors.length < 400);
  assert.deepEqual(out.views[0].dynamic_vars, [{ key: "k", value: 1 }], "short lists are kept");
});

test("uuid has the UUID v4 shape, with or without crypto.randomUUID", () => {
  const re = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
  assert.match(tag.uuid(globalThis.crypto), re);
  assert.match(tag.uuid({ getRandomValues: (b) => globalThis.crypto.getRandomValues(b) }), re);
  assert.match(tag.uuid(undefined), re);
  assert.notEqual(tag.uuid(undefined), tag.uuid(undefined));
});

test("readTimings rounds and omits unknown or zero timings", () => {
  const perf = (nav, paint) => ({ getEntriesByType: (t) => (t === "navigation" ? nav : paint) });
  assert.deepEqual(tag.readTimings(perf([{ domInteractive: 840.4, loadEventEnd: 2310.6 }], [{ name: "first-contentful-paint", startTime: 649.5 }])), {
    dom_interactive: 840,
    fully_loaded: 2311,
    start_render: 650,
  });
  assert.deepEqual(tag.readTimings(perf([{ domInteractive: 840, loadEventEnd: 0 }], [])), { dom_interactive: 840 });
  assert.deepEqual(tag.readTimings(undefined), {});
});
