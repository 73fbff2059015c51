// install(): custom and dynamic variables, e-commerce commands, custom errors.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { createBrowser, CookieJar, FakeStorage, useClock } = require("./fake_browser.cjs");

const cvars = (v) => (v.custom_vars || []).map((c) => [c.index, c.name, c.value, c.scope]);

test("custom vars queued before load travel with the natural pageview", (t) => {
  useClock(t);
  const b = createBrowser({
    queue: [
      ["setCustomVariable", 1, "visitor_type", "returning", 2],
      ["setCustomVariable", 2, "plan", "gold"],
      ["setCustomVariable", 3, "page_type", "product", 3],
      ["setCustomVariable", 4, "promo", "bf", 4],
    ],
  });
  b.install().hide();
  assert.deepEqual(cvars(b.views()[0]), [
    [1, "visitor_type", "returning", "session"],
    [2, "plan", "gold", "session"],
    [3, "page_type", "product", "page"],
    [4, "promo", "bf", "page"],
  ]);
});

test("visit scope persists in _cs_cvars and is sent on the next page load of the session", (t) => {
  const clock = useClock(t);
  const jar = new CookieJar();
  const storage = new FakeStorage();
  const first = createBrowser({ jar, storage, queue: [["setCustomVariable", 1, "visitor_type", "returning", "visit"], ["setCustomVariable", 3, "p", "only here", 3]] });
  first.install();
  assert.ok(jar.get("_cs_cvars"), "written to the cookie");
  assert.deepEqual(JSON.parse(decodeURIComponent(jar.get("_cs_cvars"))), [[1, "visitor_type", "returning"]]);
  first.hide();
  clock.advance(60000);
  const second = createBrowser({ jar, storage, url: "https://shop.example/cart" }).install();
  second.hide();
  assert.deepEqual(cvars(second.views()[0]), [[1, "visitor_type", "returning", "session"]], "the page-scope var did not travel");
  assert.equal(second.views()[0].view_number, 2);
});

test("page scope: only on the next natural pageview, not on later trackPageviews", (t) => {
  useClock(t);
  const b = createBrowser({ queue: [["setCustomVariable", 3, "page_type", "product", "page"]] });
  b.install();
  b.push(["trackPageview", "/step-2"]);
  b.hide();
  const [natural, artificial] = b.views();
  assert.deepEqual(cvars(natural), [[3, "page_type", "product", "page"]]);
  assert.equal(artificial.custom_vars, undefined);
});

test("nextPageOnly: sent with the next trackPageview, then cleared", (t) => {
  useClock(t);
  const b = createBrowser().install();
  b.push(["setCustomVariable", 4, "promo", "bf", "nextPageOnly"]);
  b.push(["trackPageview", "/step-2"]);
  b.push(["trackPageview", "/step-3"]);
  b.hide();
  const views = b.views();
  assert.equal(views[0].custom_vars, undefined, "vars set after a pageview do not join it");
  assert.deepEqual(cvars(views[1]), [[4, "promo", "bf", "page"]]);
  assert.equal(views[2].custom_vars, undefined);
});

test("custom vars: bad index ignored, name and value truncated, the last set per index wins", (t) => {
  useClock(t);
  const b = createBrowser({
    queue: [
      ["setCustomVariable", 0, "zero", "x"],
      ["setCustomVariable", 21, "too big", "x"],
      ["setCustomVariable", 1.5, "float", "x"],
      ["setCustomVariable", "2", "string index", "x"],
      ["setCustomVariable", 5, "n".repeat(600), "v".repeat(300), 2],
      ["setCustomVariable", 6, "first", "a", 2],
      ["setCustomVariable", 6, "second", "b", 3],
    ],
  });
  b.install().hide();
  const cv = b.views()[0].custom_vars;
  assert.deepEqual(cv.map((c) => c.index), [5, 6]);
  assert.equal(cv[0].name.length, 512);
  assert.equal(cv[0].value.length, 255);
  assert.deepEqual([cv[1].name, cv[1].scope], ["second", "page"]);
});

test("dynamic vars: first 40 keys, last value wins, strings cut, bad numbers ignored", (t) => {
  useClock(t);
  const b = createBrowser().install();
  for (let i = 1; i <= 41; i++) b.push(["trackDynamicVariable", { key: "k" + i, value: i }]);
  b.push(
    ["trackDynamicVariable", { key: "k1", value: "changed" }],
    ["trackDynamicVariable", { key: "k2", value: "s".repeat(300) }],
    ["trackDynamicVariable", { key: "k3", value: -1 }],
    ["trackDynamicVariable", { key: "k4", value: 4294967297 }],
    ["trackDynamicVariable", { key: "k5", value: 2.5 }]
  );
  b.hide();
  const dv = b.views()[0].dynamic_vars;
  assert.equal(dv.length, 40);
  assert.ok(!dv.some((d) => d.key === "k41"), "the 41st key is dropped");
  const byKey = Object.fromEntries(dv.map((d) => [d.key, d.value]));
  assert.equal(byKey.k1, "changed");
  assert.equal(byKey.k2, "s".repeat(255));
  assert.deepEqual([byKey.k3, byKey.k4, byKey.k5], [3, 4, 5], "ignored values keep the previous one");
});

test("dynamic vars attach to the current view", (t) => {
  useClock(t);
  const b = createBrowser().install();
  b.push(["trackDynamicVariable", { key: "a", value: 1 }], ["trackPageview", "/2"], ["trackDynamicVariable", { key: "b", value: 2 }]);
  b.hide();
  assert.deepEqual(b.views().map((v) => v.dynamic_vars), [[{ key: "a", value: 1 }], [{ key: "b", value: 2 }]]);
});

test("transaction: revenue truncated, 2 items, attached once", (t) => {
  const clock = useClock(t);
  const b = createBrowser().install();
  b.push(
    ["ec:transaction:create", { id: "T-1", revenue: "12345678901234.999", currency: "eur" }],
    ["ec:transaction:items:add", { sku: "SKU-1", name: "Mug", price: "19.95", quantity: 2, merchant: "shop" }],
    ["ec:transaction:items:add", { id: "T-1", sku: "SKU-2", name: "Tee", price: 9.999, quantity: 1 }],
    ["ec:transaction:send"],
    ["ec:transaction:send"],
    ["ec:transaction:create", { id: "T-1", revenue: 5 }],
    ["ec:transaction:send"],
    ["ec:transaction:create", { id: "T-2".padEnd(50, "x"), revenue: 9.999 }],
    ["ec:transaction:send"]
  );
  b.hide();
  const tx = b.views()[0].transactions;
  assert.equal(tx.length, 2, "a second send of T-1 is ignored");
  assert.deepEqual(tx[0], {
    id: "T-1",
    revenue: "345678901234.99",
    currency: "EUR",
    items: [
      { id: "T-1", sku: "SKU-1", name: "Mug", merchant: "shop", price: "19.95", quantity: 2 },
      { id: "T-1", sku: "SKU-2", name: "Tee", price: "9.99", quantity: 1 },
    ],
    time: clock.now(),
  });
  assert.equal(tx[1].id.length, 40);
  assert.equal(tx[1].revenue, "9.99");
  assert.deepEqual(tx[1].items, []);
});

test("cart add -> cart_adds with time", (t) => {
  const clock = useClock(t);
  const b = createBrowser().install();
  b.push(["ec:cart:add", { sku: "SKU-MUG", merchant: "shop.example" }], ["ec:cart:add", { merchant: "no sku" }]);
  b.hide();
  assert.deepEqual(b.views()[0].cart_adds, [{ sku: "SKU-MUG", merchant: "shop.example", time: clock.now() }]);
});

test("trackError -> custom error, message cut to 300 and redacted", (t) => {
  const clock = useClock(t);
  const b = createBrowser().install();
  b.push(["trackError", "payment failed for jane@mail.example", { step: "pay" }], ["trackError", "x".repeat(400)]);
  b.hide();
  const errors = b.views()[0].errors;
  assert.deepEqual(errors[0], { message: "payment failed for CS_ANONYMIZED_EMAIL", time: clock.now(), type: "custom" });
  assert.equal(errors[1].message.length, 300);
});

test("extendSession moves the expiry and sends session_expiry_update", (t) => {
  const clock = useClock(t);
  const b = createBrowser().install();
  clock.advance(20 * 60000);
  b.push(["extendSession"]);
  const expiry = Number(b.jar.get("_cs_s").split(".")[2]);
  assert.equal(expiry, clock.now() + 30 * 60000);
  b.hide();
  assert.deepEqual(b.views()[0].dynamic_vars, [{ key: "session_expiry_update", value: 1 }]);
});
