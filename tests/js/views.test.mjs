// install(): the _uxa queue, natural and artificial pageviews, when and how views are sent.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { createBrowser, useClock, flush, ENDPOINT } = require("./fake_browser.cjs");

test("the tag does nothing until install, and install twice is a no-op", (t) => {
  useClock(t);
  const b = createBrowser();
  assert.equal(b.win._uxa, undefined);
  assert.equal(b.jar.header, "");
  b.install().install();
  b.hide();
  assert.equal(b.beacons.length, 1);
  assert.equal(b.views().length, 1);
  assert.equal(b.rawBeacons[0].url, ENDPOINT);
});

test("the natural pageview carries page facts; URL without #hash", (t) => {
  const clock = useClock(t);
  const start = clock.now();
  const b = createBrowser().install();
  clock.advance(38120);
  b.hide();
  const [body] = b.beacons;
  assert.equal(body.v, 1);
  assert.match(body.batch, /^[0-9a-f-]{36}$/);
  assert.equal(body.sent_at, start + 38120);
  assert.equal(body.session_number, 1);
  assert.equal(body.session_start, start);
  const [view] = body.views;
  assert.equal(view.view_number, 1);
  assert.equal(view.view_time, start);
  assert.equal(view.url, "https://shop.example/products/1?ref=home");
  assert.equal(view.title, "Product 1");
  assert.equal(view.referrer, "https://search.example/");
  assert.equal(view.artificial, false);
  assert.equal(view.language, "fr-FR");
  assert.deepEqual(view.screen, [1920, 1080]);
  assert.deepEqual(view.window, [1280, 720]);
  assert.deepEqual(view.document, [1280, 4000]);
  assert.deepEqual(view.timings, { dom_interactive: 840, start_render: 650, fully_loaded: 2311 });
  assert.equal(view.duration_ms, 38120);
  assert.equal(view.scroll_rate, 18, "720 / 4000 visible at start");
});

test("a document still loading: fully_loaded is read after load", async (t) => {
  useClock(t);
  const b = createBrowser({ readyState: "loading", navigation: { domInteractive: 500, loadEventEnd: 0 } });
  b.install();
  b.entries.navigation[0] = { domInteractive: 500, loadEventEnd: 1900 };
  b.doc.readyState = "complete";
  b.win.dispatch("load", {});
  await new Promise((r) => setTimeout(r, 5));
  b.entries.navigation[0] = { domInteractive: 500, loadEventEnd: 0 }; // e.g. the buffer was replaced
  b.hide();
  assert.deepEqual(b.views()[0].timings, { dom_interactive: 500, start_render: 650, fully_loaded: 1900 });
});

test("queued commands replay in order, later pushes run at once", (t) => {
  useClock(t);
  const queue = [
    ["trackDynamicVariable", { key: "k", value: "first" }],
    ["trackDynamicVariable", { key: "k", value: "second" }],
    ["trackDynamicVariable", { key: "other", value: 1 }],
  ];
  const b = createBrowser({ queue });
  b.install();
  assert.equal(b.win._uxa, queue, "the page's array object is kept");
  assert.equal(queue.length, 0, "drained");
  const ret = b.win._uxa.push(["trackDynamicVariable", { key: "k", value: "third" }]);
  assert.equal(typeof ret, "number");
  assert.equal(queue.length, 0, "run at once, not queued");
  b.hide();
  assert.deepEqual(b.views()[0].dynamic_vars, [
    { key: "k", value: "third" },
    { key: "other", value: 1 },
  ]);
});

test("a throwing or unknown command never breaks the queue", (t) => {
  useClock(t);
  const b = createBrowser({
    queue: [
      ["afterPageView", () => {
        throw new Error("page bug");
      }],
      ["noSuchCommand", 1, 2],
      "not an array",
      null,
      ["setCustomVariable"],
      ["trackPageEvent", "Clicked CTA"],
      ["identify", "someone"],
      ["trackDynamicVariable", { key: "after", value: 1 }],
    ],
  });
  assert.doesNotThrow(() => b.install());
  assert.doesNotThrow(() => b.push(["nope"], ["ec:transaction:items:add", null]));
  b.hide();
  assert.deepEqual(b.views()[0].dynamic_vars, [{ key: "after", value: 1 }]);
});

test("a trackPageview queued before load renames the natural pageview (one view)", (t) => {
  useClock(t);
  const b = createBrowser({ queue: [["trackPageview", "/app/step-2"]] });
  b.install();
  b.hide();
  const views = b.views();
  assert.equal(views.length, 1);
  assert.equal(views[0].url, "https://shop.example/app/step-2?ref=home");
  assert.equal(views[0].artificial, false);
  assert.equal(views[0].view_number, 1);
});

test("setPath and setQuery before load override the natural pageview's URL", (t) => {
  useClock(t);
  const b = createBrowser({ queue: [["setPath", "/virtual/path"], ["setQuery", "?a=1&b=2"]] });
  b.install().hide();
  assert.equal(b.views()[0].url, "https://shop.example/virtual/path?a=1&b=2");
});

test("a trackPageview after load ends the previous view and starts view 2", (t) => {
  const clock = useClock(t);
  const b = createBrowser().install();
  const first = clock.now();
  clock.advance(4000);
  b.push(["trackPageview", "/app/step-2"]);
  assert.equal(b.beacons.length, 1, "the first view is sent when it ends");
  const v1 = b.views()[0];
  assert.equal(v1.view_time, first);
  assert.equal(v1.duration_ms, 4000);
  clock.advance(1500);
  b.push(["trackPageview", "https://shop.example/app/step-3#x"]);
  clock.advance(500);
  b.push(["trackPageview"]);
  b.hide();
  const views = b.views();
  assert.deepEqual(
    views.map((v) => [v.view_number, v.url, v.referrer, v.artificial, v.duration_ms]),
    [
      [1, "https://shop.example/products/1?ref=home", "https://search.example/", false, 4000],
      [2, "https://shop.example/app/step-2", "https://shop.example/products/1?ref=home", true, 1500],
      [3, "https://shop.example/app/step-3", "https://shop.example/app/step-2", true, 500],
      [4, "https://shop.example/products/1?ref=home", "https://shop.example/app/step-3", true, 0],
    ]
  );
  assert.equal(views[1].timings, undefined, "timings are for natural pageviews only");
  assert.equal(new Set(b.beacons.map((x) => x.batch)).size, 4, "one body per view, each its own batch");
});

test("trackPageview: relative paths resolve against the origin; path cut to 255; decodeURI option", (t) => {
  useClock(t);
  const b = createBrowser().install();
  b.push(["trackPageview", "app/x"]);
  b.push(["trackPageview", "/" + "p".repeat(300)]);
  b.push(["trackPageview", "/caf%C3%A9", { decodeURI: true }]);
  b.hide();
  const urls = b.views().map((v) => v.url);
  assert.equal(urls[1], "https://shop.example/app/x");
  assert.equal(urls[2], "https://shop.example/" + "p".repeat(254));
  assert.equal(decodeURI(urls[3]), "https://shop.example/café");
});

test("hidden -> one beacon; hidden again -> none; pagehide too", (t) => {
  useClock(t);
  const b = createBrowser().install();
  b.hide();
  assert.equal(b.beacons.length, 1);
  b.show();
  b.push(["trackDynamicVariable", { key: "late", value: 1 }]);
  b.hide();
  b.win.dispatch("pagehide", {});
  assert.equal(b.beacons.length, 1, "a view already sent is never sent again");
  b.push(["trackPageview", "/next"]);
  b.win.dispatch("pagehide", {});
  assert.equal(b.beacons.length, 2);
  assert.equal(b.views()[1].view_number, 2);
});

test("isWebView: no natural pageview, trackPageview makes the views", (t) => {
  useClock(t);
  const b = createBrowser({ queue: [["setOption", "isWebView", true], ["trackPageview", "/screen/home"]] });
  b.install();
  b.hide();
  const views = b.views();
  assert.equal(views.length, 1);
  assert.equal(views[0].url, "https://shop.example/screen/home");
  assert.equal(views[0].artificial, true);
});

test("afterPageView gets the session key after each pageview, at once if one started", (t) => {
  useClock(t);
  const calls = [];
  const b = createBrowser({ queue: [["afterPageView", (x) => calls.push(["early", x])]] });
  b.install();
  b.push(["afterPageView", (x) => calls.push(["late", x])]);
  const user = b.jar.get("_cs_id").split(".")[0];
  assert.deepEqual(calls, [
    ["early", { projectId: null, sessionKey: user + ".1" }],
    ["late", { projectId: null, sessionKey: user + ".1" }],
  ]);
  b.push(["trackPageview", "/x"]);
  assert.equal(calls.length, 4);
});

test("scroll rate: deepest point, capped at 100", (t) => {
  useClock(t);
  const b = createBrowser().install();
  b.win.scrollY = 1780; // (1780 + 720) / 4000 = 62.5 %
  b.win.dispatch("scroll", {});
  b.win.scrollY = 200;
  b.win.dispatch("scroll", {});
  b.push(["trackPageview", "/x"]);
  b.win.scrollY = 9000;
  b.win.dispatch("scroll", {});
  b.hide();
  assert.deepEqual(b.views().map((v) => v.scroll_rate), [62.5, 100]);
});

test("interaction time: each user event credits the time since the previous one, at most 5 s", (t) => {
  const clock = useClock(t);
  const b = createBrowser().install();
  clock.advance(1000);
  b.win.dispatch("keydown", {}); // +1000 since the view start
  clock.advance(2000);
  b.click(10, 10); // +2000
  clock.advance(60000);
  b.win.dispatch("touchstart", {}); // +5000 (capped)
  clock.advance(300);
  b.win.dispatch("mousemove", {}); // +300
  clock.advance(300);
  b.win.dispatch("pointermove", {}); // throttled: within 1 s of the last move
  clock.advance(1000);
  b.hide();
  const v = b.views()[0];
  assert.equal(v.interaction_ms, 8300);
  assert.equal(v.duration_ms, 64600);
});
