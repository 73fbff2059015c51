// install(): sessions and cookies, opt-out, redaction.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { createBrowser, CookieJar, FakeStorage, useClock } = require("./fake_browser.cjs");

const MIN = 60000;

test("new visitor: session 1, view 1, cookies written with the protocol's format and attributes", (t) => {
  const clock = useClock(t);
  const now = clock.now();
  const b = createBrowser().install();
  const id = b.jar.get("_cs_id").split(".");
  assert.match(id[0], /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.deepEqual(id.slice(1).map(Number), [Math.floor(now / 1000), 1, Math.floor(now / 1000), Math.floor(now / 1000)]);
  assert.equal(b.jar.get("_cs_s"), `1.${now}.${now + 30 * MIN}`);
  const idWrite = b.jar.writes.find((w) => w.startsWith("_cs_id="));
  assert.match(idWrite, /; path=\/; SameSite=Lax; max-age=\d+; Secure$/);
  assert.ok(Number(/max-age=(\d+)/.exec(idWrite)[1]) >= 395 * 86400, "13 months");
  assert.match(b.jar.writes.find((w) => w.startsWith("_cs_s=")), /max-age=1800/);
  assert.ok(!b.jar.writes.some((w) => /domain=/i.test(w)));
  b.hide();
  const [body] = b.beacons;
  assert.equal(body.user, id[0]);
  assert.equal(body.session_number, 1);
  assert.equal(body.views[0].view_number, 1);
});

test("no Secure attribute on http pages", (t) => {
  useClock(t);
  const b = createBrowser({ url: "http://shop.example/" }).install();
  assert.ok(b.jar.writes.length > 0);
  assert.ok(b.jar.writes.every((w) => !/Secure/.test(w)));
});

test("a reload within 30 min keeps the session; after 31 idle minutes a new one starts", (t) => {
  const clock = useClock(t);
  const jar = new CookieJar();
  const storage = new FakeStorage();
  const start = clock.now();
  const load = (url) => createBrowser({ jar, storage, url }).install();

  const p1 = load("https://shop.example/");
  clock.advance(10 * MIN);
  p1.hide();
  const p2 = load("https://shop.example/cart");
  clock.advance(MIN);
  p2.hide();
  const v2 = p2.beacons[0];
  assert.equal(v2.user, p1.beacons[0].user);
  assert.equal(v2.session_number, 1);
  assert.equal(v2.session_start, start);
  assert.equal(v2.views[0].view_number, 2);

  clock.advance(31 * MIN); // the cookie still exists (browser clock), its expiry value is past
  const p3 = load("https://shop.example/again");
  p3.hide();
  const v3 = p3.beacons[0];
  assert.equal(v3.user, v2.user, "same visitor");
  assert.equal(v3.session_number, 2);
  assert.equal(v3.session_start, clock.now());
  assert.equal(v3.views[0].view_number, 1);
  assert.equal(jar.get("_cs_id").split(".")[2], "2");
});

test("a trackPageview after 31 minutes of inactivity in the same tab starts a new session", (t) => {
  const clock = useClock(t);
  const b = createBrowser().install();
  clock.advance(31 * MIN);
  b.push(["trackPageview", "/later"]);
  b.hide();
  assert.deepEqual(b.beacons.map((x) => [x.session_number, x.views[0].view_number]), [[1, 1], [2, 1]]);
});

test("user events extend the session (cookie rewritten at most every 5 s)", (t) => {
  const clock = useClock(t);
  const b = createBrowser().install();
  clock.advance(20 * MIN);
  b.click(1, 1);
  const expiry = () => Number(b.jar.get("_cs_s").split(".")[2]);
  assert.equal(expiry(), clock.now() + 30 * MIN);
  const writes = b.jar.writes.length;
  clock.advance(2000);
  b.win.dispatch("keydown", {});
  assert.equal(b.jar.writes.length, writes, "no rewrite within 5 s");
  clock.advance(25 * MIN); // 45 min after the pageview, 25 after the last event
  b.push(["trackPageview", "/still-same-session"]);
  b.hide();
  assert.deepEqual(b.beacons.map((x) => [x.session_number, x.views[0].view_number]), [[1, 1], [1, 2]]);
});

test("session custom vars are dropped with a new session", (t) => {
  const clock = useClock(t);
  const jar = new CookieJar();
  createBrowser({ jar, queue: [["setCustomVariable", 1, "plan", "gold", 2]] }).install().hide();
  clock.advance(40 * MIN);
  const b = createBrowser({ jar }).install();
  b.hide();
  assert.equal(b.views()[0].custom_vars, undefined);
  assert.equal(jar.get("_cs_cvars"), undefined);
});

test("optout: cookies deleted, no beacon, _cs_optout for 13 months; optin removes it", (t) => {
  useClock(t);
  const jar = new CookieJar();
  const storage = new FakeStorage();
  const b = createBrowser({ jar, storage }).install();
  b.push(["setCustomVariable", 1, "plan", "gold", 2]);
  jar.set("_cs_c=1; path=/");
  assert.ok(jar.get("_cs_id") && jar.get("_cs_s") && jar.get("_cs_cvars"));
  b.push(["trackDynamicVariable", { key: "k", value: 1 }], ["optout"]);
  assert.deepEqual(Array.from(jar.cookies.keys()), ["_cs_optout"]);
  assert.equal(jar.get("_cs_optout"), "1");
  assert.match(jar.writes.find((w) => w.startsWith("_cs_optout=")), /max-age=3\d{7}/);
  b.push(["trackPageview", "/x"], ["ec:cart:add", { sku: "S" }]);
  b.hide();
  assert.equal(b.rawBeacons.length + b.fetchCalls.length, 0, "nothing sent");
  assert.deepEqual(Array.from(jar.cookies.keys()), ["_cs_optout"], "no cookie written while opted out");

  const next = createBrowser({ jar, storage }).install();
  next.push(["trackPageview", "/y"]);
  next.hide();
  assert.equal(next.rawBeacons.length, 0, "the cookie keeps the visitor opted out");
  next.push(["optin"]);
  assert.equal(jar.get("_cs_optout"), undefined);
  next.push(["trackPageview", "/z"]);
  next.win.dispatch("pagehide", {});
  assert.equal(next.beacons.length, 1, "tracking resumes at the next pageview");
  assert.equal(next.views()[0].url, "https://shop.example/z");
});

test("a URL with ?_cs_optout or #_cs_optout opts out", (t) => {
  useClock(t);
  for (const url of ["https://shop.example/?_cs_optout", "https://shop.example/p#_cs_optout", "https://shop.example/?a=1&_cs_optout=1"]) {
    const jar = new CookieJar();
    jar.set("_cs_id=8f14e45f-ceea-4e7a-9f1b-3c5a1f0b2d11.1.1.1.1; path=/");
    const b = createBrowser({ jar, url }).install();
    b.hide();
    assert.equal(b.rawBeacons.length, 0, url);
    assert.deepEqual(Array.from(jar.cookies.keys()), ["_cs_optout"], url);
  }
  const b = createBrowser({ url: "https://shop.example/?_cs_optout_not" }).install();
  b.hide();
  assert.equal(b.beacons.length, 1, "another parameter is not an opt-out");
});

test("e-mails and JWTs are redacted in the URL, referrer, custom vars and dynamic vars", (t) => {
  useClock(t);
  const jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl";
  const b = createBrowser({
    url: `https://shop.example/reset/${jwt}?email=jane.doe@mail.example&x=1#frag`,
    referrer: "https://mail.example/?to=bob%40mail.example",
    queue: [["setCustomVariable", 1, "email", "jane@mail.example"], ["trackDynamicVariable", { key: "who", value: "bob@mail.example" }]],
  });
  b.install();
  b.push(["trackPageview", "/account/jane@mail.example"]);
  b.hide();
  const [natural, artificial] = b.views();
  assert.equal(natural.url, "https://shop.example/reset/CS_ANONYMIZED_JWT?email=CS_ANONYMIZED_EMAIL&x=1");
  assert.equal(natural.referrer, "https://mail.example/?to=CS_ANONYMIZED_EMAIL");
  assert.equal(natural.custom_vars[0].value, "CS_ANONYMIZED_EMAIL");
  assert.equal(natural.dynamic_vars[0].value, "CS_ANONYMIZED_EMAIL");
  assert.equal(artificial.url, "https://shop.example/account/CS_ANONYMIZED_EMAIL");
  assert.ok(!JSON.stringify(b.beacons).includes("mail.example&"), "no address left");
  assert.ok(!JSON.stringify(b.beacons).includes("jane"));
});

test("a visit var set before load on a page that opens a new session is kept for that session", (t) => {
  const clock = useClock(t);
  const jar = new CookieJar();
  createBrowser({ jar, queue: [["setCustomVariable", 1, "old", "x", 2]] }).install().hide();
  clock.advance(40 * MIN);
  const b = createBrowser({ jar, queue: [["setCustomVariable", 2, "new", "y", 2]] }).install();
  b.hide();
  assert.equal(b.beacons[0].session_number, 2);
  assert.deepEqual(b.views()[0].custom_vars.map((c) => c.name), ["new"]);
  assert.deepEqual(JSON.parse(decodeURIComponent(jar.get("_cs_cvars"))), [[2, "new", "y"]]);
});

test("two tabs share the session through the cookies: view numbers do not collide", (t) => {
  const clock = useClock(t);
  const jar = new CookieJar();
  const tabA = createBrowser({ jar }).install();
  clock.advance(1000);
  const tabB = createBrowser({ jar, url: "https://shop.example/other" }).install();
  clock.advance(1000);
  tabA.push(["trackPageview", "/a2"]);
  tabA.hide();
  tabB.hide();
  const views = [...tabA.beacons, ...tabB.beacons].map((x) => [x.session_number, x.views[0].view_number]).sort();
  assert.deepEqual(views, [[1, 1], [1, 2], [1, 3]]);
});
