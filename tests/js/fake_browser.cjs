// A small fake of the browser objects the tag touches: window, document, navigator, cookies,
// sessionStorage, performance, fetch and XMLHttpRequest. sendBeacon records the bodies it is given.
"use strict";

const path = require("node:path");

const TAG_PATH = path.join(__dirname, "..", "..", "src", "dataexport", "collect", "static", "uxa.js");
const tag = require(TAG_PATH);

const ENDPOINT = "https://collect.example/collect/v1/tag-1";

/** Cookie jar. Like a real browser under a simulated clock, max-age does not follow Date.now():
 * only max-age <= 0 removes a cookie, so the tag's own expiry check is what ends sessions. */
class CookieJar {
  constructor() {
    this.cookies = new Map(); // name -> {value, attrs}
    this.writes = []; // every raw Set-Cookie string, for attribute assertions
  }
  get header() {
    return Array.from(this.cookies, ([k, c]) => k + "=" + c.value).join("; ");
  }
  set(raw) {
    this.writes.push(raw);
    const [pair, ...attrs] = raw.split(/;\s*/);
    const i = pair.indexOf("=");
    const name = pair.slice(0, i);
    const value = pair.slice(i + 1);
    const maxAge = attrs.find((a) => /^max-age=/i.test(a));
    if (maxAge && Number(maxAge.split("=")[1]) <= 0) this.cookies.delete(name);
    else this.cookies.set(name, { value, attrs });
  }
  get(name) {
    const c = this.cookies.get(name);
    return c ? c.value : undefined;
  }
}

class FakeStorage {
  constructor() {
    this.map = new Map();
  }
  getItem(k) {
    return this.map.has(k) ? this.map.get(k) : null;
  }
  setItem(k, v) {
    this.map.set(k, String(v));
  }
  removeItem(k) {
    this.map.delete(k);
  }
}

class Target {
  constructor() {
    this.listeners = new Map();
  }
  addEventListener(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, []);
    this.listeners.get(type).push(fn);
  }
  dispatch(type, props) {
    const ev = Object.assign({ type, target: this }, props);
    for (const fn of this.listeners.get(type) || []) fn.call(this, ev);
    return ev;
  }
}

/** An element: closest() answers `button` (or null), like Element.closest with the tag's selector. */
function element(button) {
  const el = { closest: () => button };
  return el;
}

class FakeResponse {
  constructor(status) {
    this.status = status;
    this.ok = status >= 200 && status < 300;
  }
}

/**
 * createBrowser(options) -> {win, doc, jar, storage, beacons, rawBeacons, fetchCalls, install, hide, ...}
 * options: url, jar, storage (shared across "page loads"), title, referrer, readyState, beaconResult
 * (bool), noBeacon, fetchHandler(url, init) -> Promise, queue (initial _uxa array), performance entries.
 */
function createBrowser(options) {
  const o = Object.assign(
    {
      url: "https://shop.example/products/1?ref=home#top",
      title: "Product 1",
      referrer: "https://search.example/",
      readyState: "complete",
      beaconResult: true,
      navigation: { domInteractive: 840.4, loadEventEnd: 2310.6 },
      paint: [
        { name: "first-paint", startTime: 650.2 },
        { name: "first-contentful-paint", startTime: 700 },
      ],
    },
    options
  );
  const jar = o.jar || new CookieJar();
  const storage = o.storage || new FakeStorage();
  const u = new URL(o.url);
  const beacons = [];
  const rawBeacons = [];
  const fetchCalls = [];

  const doc = new Target();
  Object.defineProperty(doc, "cookie", {
    get: () => jar.header,
    set: (v) => jar.set(v),
  });
  Object.assign(doc, {
    title: o.title,
    referrer: o.referrer,
    readyState: o.readyState,
    visibilityState: "visible",
    documentElement: { scrollWidth: 1280, scrollHeight: 4000 },
    body: { scrollWidth: 1280, scrollHeight: 4000 },
  });

  const win = new Target();
  const navigator = { language: "fr-FR" };
  if (!o.noBeacon) {
    navigator.sendBeacon = function (url, body) {
      if (this !== navigator) throw new TypeError("Illegal invocation");
      rawBeacons.push({ url, body });
      if (typeof body !== "string") throw new Error("beacon body must be a string");
      const ok = typeof o.beaconResult === "function" ? o.beaconResult(body) : o.beaconResult;
      if (ok) beacons.push(JSON.parse(body));
      return ok;
    };
  }
  const fetchHandler = o.fetchHandler || (() => Promise.resolve(new FakeResponse(204)));
  const entries = { navigation: o.navigation ? [o.navigation] : [], paint: o.paint || [] };

  class XMLHttpRequest extends Target {
    open(method, url) {
      this.method = method;
      this.url = url;
      this.status = 0;
    }
    send() {
      win.xhrs.push(this);
    }
    /** Test side: finish the request with a status (0 = network error). */
    respond(status) {
      this.status = status;
      this.dispatch("loadend", {});
    }
  }

  Object.assign(win, {
    document: doc,
    navigator,
    location: {
      href: u.href,
      origin: u.origin,
      protocol: u.protocol,
      host: u.host,
      hostname: u.hostname,
      pathname: u.pathname,
      search: u.search,
      hash: u.hash,
    },
    screen: { width: 1920, height: 1080 },
    innerWidth: 1280,
    innerHeight: 720,
    scrollY: 0,
    crypto: globalThis.crypto,
    URL,
    sessionStorage: storage,
    performance: { getEntriesByType: (type) => entries[type] || [] },
    setTimeout: (fn, ms) => setTimeout(fn, ms),
    fetch: function (url, init) {
      const call = { url: String(url && url.url ? url.url : url), init, self: this };
      fetchCalls.push(call);
      call.promise = fetchHandler(call.url, init);
      return call.promise;
    },
    XMLHttpRequest,
    xhrs: [],
  });
  if (o.queue) win._uxa = o.queue;

  const b = {
    win,
    doc,
    jar,
    storage,
    beacons,
    rawBeacons,
    fetchCalls,
    entries,
    install(config) {
      tag.install(win, Object.assign({ tagId: "tag-1", endpoint: ENDPOINT, version: "test" }, config));
      return b;
    },
    push(...cmds) {
      for (const c of cmds) win._uxa.push(c);
      return b;
    },
    /** The page is hidden (tab switch, navigation away). */
    hide() {
      doc.visibilityState = "hidden";
      doc.dispatch("visibilitychange", {});
      return b;
    },
    show() {
      doc.visibilityState = "visible";
      doc.dispatch("visibilitychange", {});
      return b;
    },
    click(x, y, target) {
      win.dispatch("click", { clientX: x, clientY: y, target: target || element(null) });
      return b;
    },
    /** All views sent so far, flattened, with their body's session fields. */
    views() {
      return beacons.flatMap((body) =>
        body.views.map((v) => Object.assign({ $user: body.user, $session: body.session_number, $batch: body.batch }, v))
      );
    },
  };
  return b;
}

/** Fake clock on Date.now(), restored with the test (node:test's mock). */
function useClock(t, start) {
  let now = start == null ? Date.UTC(2025, 11, 2, 10, 0, 0) : start;
  t.mock.method(Date, "now", () => now);
  return {
    now: () => now,
    advance(ms) {
      now += ms;
      return now;
    },
  };
}

function flush() {
  return new Promise((r) => setImmediate(r));
}

module.exports = { tag, createBrowser, CookieJar, FakeStorage, FakeResponse, element, useClock, flush, ENDPOINT };
