/*
 * dataexport browser tracking tag.
 *
 * Contract with the server: docs/tag-protocol.md (payload, cookies, loading).
 * Command semantics (`window._uxa`): the vendor digest in the project's spec (tag.md).
 *
 * Loading this file does nothing: the server appends
 *   __dataexportTag.install(window, {tagId, endpoint, version});
 * In node (unit tests) the same object is `module.exports`, so the pure helpers can be tested directly.
 */
(function (root, factory) {
  if (typeof module === "object" && module.exports) module.exports = factory();
  else root.__dataexportTag = factory();
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  const SESSION_MS = 30 * 60 * 1000;
  const THIRTEEN_MONTHS_S = 13 * 31 * 24 * 3600;
  const SESSION_WRITE_EVERY_MS = 5000; // user events rewrite _cs_s at most this often
  const INTERACTION_CAP_MS = 5000; // one user event credits at most this much active time
  const MOVE_THROTTLE_MS = 1000;
  const AFTER_CLICK_MS = 2000;
  const MAX_BODY_BYTES = 60000; // keepalive requests share a 64 KiB budget
  const MAX_PENDING = 20;
  const MAX_LIST = 100; // per view, so a looping error cannot grow memory without bound
  const MAX_DVARS = 40;
  const BUTTON_SELECTOR = "button, a, [role=button], input[type=submit], input[type=button]";

  // ---------------------------------------------------------------- pure helpers

  /** Cut to n characters, counted in code points (like the server) so no surrogate pair is split. */
  function cut(value, n) {
    const s = String(value);
    if (s.length <= n) return s;
    const cps = Array.from(s);
    return cps.length > n ? cps.slice(0, n).join("") : s;
  }

  const JWT_RE = /eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g;
  // `%40` too: e-mails usually appear URL-encoded in query strings.
  const EMAIL_RE = /[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}/g;

  /** Mask JWTs and e-mail addresses (URLs, variable values, error messages). */
  function redact(value) {
    if (value == null) return value;
    return String(value).replace(JWT_RE, "CS_ANONYMIZED_JWT").replace(EMAIL_RE, "CS_ANONYMIZED_EMAIL");
  }

  function stripHash(url) {
    const i = String(url).indexOf("#");
    return i < 0 ? String(url) : String(url).slice(0, i);
  }

  function isCount(x) {
    return Number.isInteger(x) && x >= 0;
  }

  /** `_cs_id`: `<uuid>.<created s>.<visit count>.<last pageview s>.<last visit s>` (extra fields ignored). */
  function parseCsId(value) {
    if (!value) return null;
    const p = String(value).split(".");
    if (p.length < 5 || !/^[0-9a-f-]{36}$/i.test(p[0])) return null;
    const n = p.slice(1, 5).map(Number);
    if (!n.every(isCount) || n[1] < 1) return null;
    return { user: p[0], created: n[0], visits: n[1], lastPageview: n[2], lastVisit: n[3] };
  }

  function formatCsId(id) {
    return [id.user, id.created, id.visits, id.lastPageview, id.lastVisit].join(".");
  }

  /** `_cs_s`: `<page count>.<session start ms>.<expiry ms>`. */
  function parseSession(value) {
    if (!value) return null;
    const p = String(value).split(".");
    if (p.length !== 3) return null;
    const n = p.map(Number);
    if (!n.every(isCount)) return null;
    return { pages: n[0], start: n[1], expiry: n[2] };
  }

  function formatSession(s) {
    return [s.pages, s.start, s.expiry].join(".");
  }

  /** Plain decimal text for a number (no exponent), or null. */
  function numberText(n) {
    if (!Number.isFinite(n) || n < 0 || n >= 1e21) return null;
    const s = String(n);
    return s.indexOf("e") < 0 ? s : n.toFixed(20);
  }

  /**
   * Revenue or price: a string or a number, at most 12 integer digits and 2 decimals (extra decimals are
   * cut, never rounded). Like the server (collect/beacon.py cents_of): the last 12 integer digits are kept,
   * a decimal comma is read as a point. Returns text like "59.90", or null.
   */
  function truncateRevenue(value) {
    let s = typeof value === "number" ? numberText(value) : typeof value === "string" ? value.trim() : null;
    if (s == null) return null;
    if (s.indexOf(".") < 0) s = s.replace(",", ".");
    const m = /^\+?(\d*)(?:\.(\d*))?$/.exec(s);
    if (!m || (m[1] === "" && !m[2])) return null;
    const int = (m[1].replace(/^0+(?=\d)/, "") || "0").slice(-12);
    return int + "." + ((m[2] || "") + "00").slice(0, 2);
  }

  const CVAR_SCOPES = { 2: "visit", visit: "visit", 3: "page", page: "page", 4: "nextPageOnly", nextPageOnly: "nextPageOnly" };

  /**
   * setCustomVariable arguments -> {index, name, value, scope, kind} or null.
   * kind: "visit" (omitted scope too), "page" or "nextPageOnly"; scope is the payload's "session" | "page".
   */
  function normalizeCustomVar(index, name, value, scope) {
    if (!Number.isInteger(index) || index < 1 || index > 20) return null;
    if (name == null || name === "" || value == null) return null; // the server drops nameless vars too
    // Scope 1 and other unknown values are undocumented: handled like an omitted scope.
    const kind = Object.prototype.hasOwnProperty.call(CVAR_SCOPES, scope) ? CVAR_SCOPES[scope] : "visit";
    return {
      index: index,
      name: cut(name, 512),
      value: cut(redact(value), 255),
      scope: kind === "visit" ? "session" : "page",
      kind: kind,
    };
  }

  /** trackDynamicVariable argument -> {key, value} or null (string cut to 255, integer 0..4294967296). */
  function normalizeDynamicVar(arg) {
    if (!arg || typeof arg !== "object" || arg.key == null || arg.key === "") return null;
    const v = arg.value;
    let value;
    if (typeof v === "string") value = cut(redact(v), 255);
    else if (typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 4294967296) value = v;
    else return null;
    return { key: cut(arg.key, 512), value: value };
  }

  /** Returns click(t, x, y) -> true when it is the 3rd+ click within 1 s and 30 px. */
  function createRageClickDetector(options) {
    const o = Object.assign({ windowMs: 1000, radius: 30, count: 3 }, options);
    let clicks = [];
    return function click(t, x, y) {
      clicks = clicks.filter((c) => t - c.t <= o.windowMs);
      clicks.push({ t: t, x: x, y: y });
      const near = clicks.filter((c) => Math.hypot(c.x - x, c.y - y) <= o.radius);
      return near.length >= o.count;
    };
  }

  /** Returns click(key, t) -> true when the same key (element) got its 3rd+ click within 10 s. */
  function createMultipleButtonDetector(options) {
    const o = Object.assign({ windowMs: 10000, count: 3 }, options);
    const times = new Map();
    return function click(key, t) {
      for (const [k, ts] of times) if (t - ts[ts.length - 1] > o.windowMs) times.delete(k);
      const ts = (times.get(key) || []).filter((x) => t - x <= o.windowMs);
      ts.push(t);
      times.set(key, ts);
      return ts.length >= o.count;
    };
  }

  function utf8Length(s) {
    if (typeof TextEncoder !== "undefined") return new TextEncoder().encode(s).length;
    return unescape(encodeURIComponent(s)).length;
  }

  const VIEW_LISTS = ["errors", "api_errors", "custom_vars", "dynamic_vars", "transactions", "cart_adds"];

  /**
   * Serialise a body; when it exceeds the byte cap, repeatedly halve the view's longest list
   * (transaction items included) until it fits. Returns the JSON string.
   */
  function fitBody(body, maxBytes) {
    const limit = maxBytes || MAX_BODY_BYTES;
    let text = JSON.stringify(body);
    while (utf8Length(text) > limit) {
      let best = null;
      let bestLen = 0;
      for (const view of body.views) {
        const lists = VIEW_LISTS.filter((k) => view[k]).map((k) => [view, k]);
        for (const t of view.transactions || []) if (t.items) lists.push([t, "items"]);
        for (const [owner, key] of lists) {
          const len = owner[key].length ? JSON.stringify(owner[key]).length : 0;
          if (len > bestLen) (best = [owner, key]), (bestLen = len);
        }
      }
      if (!best) {
        // Nothing left to cut but the texts themselves.
        for (const view of body.views) for (const k of ["url", "title", "referrer"]) if (view[k]) view[k] = cut(view[k], 2000);
        return JSON.stringify(body);
      }
      const [owner, key] = best;
      owner[key] = owner[key].slice(0, Math.floor(owner[key].length / 2));
      if (!owner[key].length && key !== "items") delete owner[key];
      text = JSON.stringify(body);
    }
    return text;
  }

  function uuid(crypto) {
    if (crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
    const b = new Uint8Array(16);
    if (crypto && typeof crypto.getRandomValues === "function") crypto.getRandomValues(b);
    else for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => (x + 256).toString(16).slice(1)).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  /** Navigation and paint timings, ms from navigation start, rounded; unknown or 0 values omitted. */
  function readTimings(perf) {
    const out = {};
    const put = (k, x) => {
      if (typeof x === "number" && Number.isFinite(x) && Math.round(x) > 0) out[k] = Math.round(x);
    };
    if (!perf || typeof perf.getEntriesByType !== "function") return out;
    const navEntry = perf.getEntriesByType("navigation")[0];
    if (navEntry) {
      put("dom_interactive", navEntry.domInteractive);
      put("fully_loaded", navEntry.loadEventEnd);
    } else if (perf.timing && perf.timing.navigationStart) {
      const t = perf.timing; // older browsers: absolute epoch times
      if (t.domInteractive) put("dom_interactive", t.domInteractive - t.navigationStart);
      if (t.loadEventEnd) put("fully_loaded", t.loadEventEnd - t.navigationStart);
    }
    const paints = perf.getEntriesByType("paint") || [];
    const paint = paints.find((p) => p.name === "first-paint") || paints.find((p) => p.name === "first-contentful-paint");
    if (paint) put("start_render", paint.startTime);
    return out;
  }

  // ---------------------------------------------------------------- install

  function install(win, config) {
    if (!win || win.__dataexportTagInstalled) return; // a second copy of the tag must not double-count
    win.__dataexportTagInstalled = true;
    config = config || {};
    const doc = win.document || {};
    const nav = win.navigator || {};
    const loc = win.location || {};
    const URLc = win.URL || (typeof URL !== "undefined" ? URL : null);
    const endpoint = String(config.endpoint || "");
    const endpointBase = stripHash(endpoint).split("?")[0];
    const secure = loc.protocol === "https:";
    const origFetch = typeof win.fetch === "function" ? win.fetch : null;
    const setTimer = typeof win.setTimeout === "function" ? win.setTimeout.bind(win) : setTimeout;

    let optedOut = false;
    let webView = false;
    let preload = true; // while the pre-load queue is replayed
    const pre = { path: null, query: null }; // natural pageview URL overrides
    let user = null;
    let session = null;
    let sessionCvars = new Map(); // index -> cvar ("visit" kind, persisted in _cs_cvars)
    const pageCvars = new Map(); // cleared after the next natural pageview
    const nextCvars = new Map(); // cleared after the next pageview of any kind
    let cur = newView(); // before the first pageview: a holder whose data the first view adopts
    let lastUrl = null;
    const pvCallbacks = [];
    let lastClick = -Infinity;
    let lastMove = -Infinity;
    let lastSessionWrite = -Infinity;
    const rageClick = createRageClickDetector();
    const multiClick = createMultipleButtonDetector();
    let openTx = null;
    const sentTx = new Set();

    // ---- cookies and storage

    function cookiePairs() {
      try {
        return String(doc.cookie || "")
          .split(/;\s*/)
          .map((kv) => [kv.slice(0, Math.max(0, kv.indexOf("="))), kv.slice(kv.indexOf("=") + 1)])
          .filter((p) => p[0]);
      } catch (e) { return []; /* cookies disabled */ }
    }

    const cookieNames = () => cookiePairs().map((p) => p[0]);

    function getCookie(name) {
      const hit = cookiePairs().find((p) => p[0] === name);
      return hit ? hit[1] : null;
    }

    function writeCookie(name, value, maxAge) {
      let s = name + "=" + value + "; path=/; SameSite=Lax";
      if (maxAge != null) s += "; max-age=" + maxAge;
      if (secure) s += "; Secure";
      try {
        doc.cookie = s;
      } catch (e) { /* cookies disabled */ }
    }

    function setCookie(name, value, maxAge) {
      if (!optedOut) writeCookie(name, value, maxAge); // opted out: no _cs_* cookie but _cs_optout
    }

    const deleteCookie = (name) => writeCookie(name, "", 0);

    function storage() {
      try {
        return win.sessionStorage || null;
      } catch (e) { return null; /* access can throw (sandboxed frames, disabled storage) */ }
    }

    function readPending() {
      try {
        const list = JSON.parse(storage().getItem("_cs_pending") || "[]");
        return Array.isArray(list) ? list.filter((b) => typeof b === "string") : [];
      } catch (e) { return []; }
    }

    function writePending(list) {
      try {
        if (list.length) storage().setItem("_cs_pending", JSON.stringify(list.slice(-MAX_PENDING)));
        else storage().removeItem("_cs_pending");
      } catch (e) { /* quota or no storage: the body is lost */ }
    }

    // ---- sessions

    function readCvarCookie() {
      const map = new Map();
      try {
        for (const [index, name, value] of JSON.parse(decodeURIComponent(getCookie("_cs_cvars") || "[]"))) {
          const cv = normalizeCustomVar(index, name, value, "visit");
          if (cv) map.set(cv.index, Object.assign(cv, { t: 0 }));
        }
      } catch (e) { /* unreadable: start without */ }
      return map;
    }

    function saveCvars() {
      if (optedOut) return;
      if (!sessionCvars.size) return deleteCookie("_cs_cvars");
      // A cookie holds ~4 KB: keep the lowest indexes that fit; all of them stay in memory.
      const rows = [];
      let text = "";
      for (const cv of Array.from(sessionCvars.values()).sort((a, b) => a.index - b.index)) {
        const next = encodeURIComponent(JSON.stringify(rows.concat([[cv.index, cv.name, cv.value]])));
        if (next.length > 3800) break;
        rows.push([cv.index, cv.name, cv.value]);
        text = next;
      }
      setCookie("_cs_cvars", text || encodeURIComponent("[]"));
    }

    function writeSession(now) {
      setCookie("_cs_s", formatSession(session), Math.max(1, Math.round((session.expiry - now) / 1000)));
      lastSessionWrite = now;
    }

    function writeIds(now) {
      setCookie("_cs_id", formatCsId(user), THIRTEEN_MONTHS_S);
      writeSession(now);
    }

    function loadState(now) {
      user = parseCsId(getCookie("_cs_id"));
      if (!user) user = { user: uuid(win.crypto), created: Math.floor(now / 1000), visits: 0, lastPageview: 0, lastVisit: 0 };
      session = parseSession(getCookie("_cs_s")) || { pages: 0, start: 0, expiry: 0 };
      if (session.expiry > now) sessionCvars = readCvarCookie();
    }

    /** Another tab may have moved the session on: adopt the cookie's state when it is live. */
    function syncFromCookies(now) {
      if (optedOut) return;
      const id = parseCsId(getCookie("_cs_id"));
      const s = parseSession(getCookie("_cs_s"));
      if (!id || !s || id.user !== user.user || s.expiry <= now) return;
      if (s.start === session.start) {
        session.pages = Math.max(session.pages, s.pages);
        session.expiry = Math.max(session.expiry, s.expiry);
      } else if (s.start > session.start) {
        const mine = freshCvars();
        sessionCvars = readCvarCookie();
        for (const cv of mine) sessionCvars.set(cv.index, cv);
        session = s;
        user.visits = id.visits;
        user.lastVisit = id.lastVisit;
      }
    }

    /** Session cvars set after the current session expired belong to the next one. */
    function freshCvars() {
      return Array.from(sessionCvars.values()).filter((cv) => cv.t > session.expiry);
    }

    function newSession(now) {
      const keep = freshCvars();
      user.visits += 1;
      user.lastVisit = Math.floor(now / 1000);
      session = { pages: 0, start: now, expiry: now + SESSION_MS };
      sessionCvars = new Map(keep.map((cv) => [cv.index, cv]));
      saveCvars();
    }

    function extendSession(now, force) {
      if (session.expiry <= now && !force) return; // expired: the next pageview opens a new session
      session.expiry = now + SESSION_MS;
      if (force || now - lastSessionWrite >= SESSION_WRITE_EVERY_MS) writeSession(now);
    }

    // ---- views

    function newView() {
      return { started: false, sent: false, dvars: new Map(), transactions: [], cart_adds: [], errors: [], api_errors: [],
        rage: false, multi: false, interaction: 0, lastEvent: null, scroll: null };
    }

    function absolute(url) {
      try {
        return new URLc(url, loc.href).href;
      } catch (e) { return String(url); }
    }

    const cleanUrl = (url) => redact(stripHash(url));

    function decodePath(path, options) {
      let p = String(path);
      try {
        if (options && options.decodeURIDeep) {
          for (let i = 0, prev = null; i < 10 && p !== prev; i++) (prev = p), (p = decodeURIComponent(p));
        } else if (options && options.decodeURI) p = decodeURI(p);
      } catch (e) { /* malformed escape: keep what we have */ }
      return cut(p, 255);
    }

    function pathUrl(path) {
      try {
        return new URLc(path, loc.origin || loc.href).href; // relative paths resolve against the origin
      } catch (e) { return String(path); }
    }

    function naturalUrl() {
      let href = String(loc.href || "");
      try {
        const u = new URLc(href);
        if (pre.path != null) {
          const p = new URLc(pre.path, u.origin);
          u.pathname = p.pathname;
          if (p.search) u.search = p.search;
        }
        if (pre.query != null) u.search = pre.query;
        href = u.href;
      } catch (e) { /* keep the real URL */ }
      return cleanUrl(href);
    }

    function docSize() {
      const de = doc.documentElement || {};
      const body = doc.body || {};
      return [Math.max(de.scrollWidth || 0, body.scrollWidth || 0), Math.max(de.scrollHeight || 0, body.scrollHeight || 0)];
    }

    function pair(a, b) {
      return typeof a === "number" && typeof b === "number" ? [Math.round(a), Math.round(b)] : undefined;
    }

    function measureScroll() {
      if (!cur.started || cur.sent) return;
      const height = docSize()[1];
      if (!height) return;
      const y = win.scrollY || win.pageYOffset || 0;
      const rate = Math.min(100, Math.round(((y + (win.innerHeight || 0)) / height) * 1000) / 10);
      if (cur.scroll == null || rate > cur.scroll) cur.scroll = rate;
    }

    function takeCvars(natural) {
      const merged = new Map();
      for (const store of [sessionCvars, pageCvars, nextCvars]) for (const [i, cv] of store) merged.set(i, cv);
      nextCvars.clear();
      if (natural) pageCvars.clear();
      return Array.from(merged.values())
        .sort((a, b) => a.index - b.index)
        .slice(0, 20)
        .map((cv) => ({ index: cv.index, name: cv.name, value: cv.value, scope: cv.scope }));
    }

    function startView(natural, url, referrer) {
      const now = Date.now();
      let v = cur;
      if (v.started) {
        endView(v, now);
        v = newView();
      }
      syncFromCookies(now);
      if (session.expiry <= now) newSession(now);
      session.pages += 1;
      session.expiry = now + SESSION_MS;
      user.lastPageview = Math.floor(now / 1000);
      writeIds(now);
      const screen = win.screen || {};
      Object.assign(v, {
        started: true,
        natural: natural,
        dropped: optedOut, // a view begun while opted out is never sent, even after optin
        view_number: session.pages,
        view_time: now,
        url: url,
        title: doc.title ? redact(doc.title) : undefined,
        referrer: referrer ? cleanUrl(referrer) : undefined,
        language: nav.language || undefined,
        screen: pair(screen.width, screen.height),
        window: pair(win.innerWidth, win.innerHeight),
        document: docSize(),
        timings: natural ? readTimings(win.performance) : undefined,
        custom_vars: takeCvars(natural),
        meta: { user: user.user, session_number: user.visits, session_start: session.start },
        lastEvent: now, // the view start is the first reference point for interaction time
      });
      cur = v;
      lastUrl = url;
      measureScroll();
      for (const cb of pvCallbacks) callPageView(cb);
    }

    function callPageView(cb) {
      try {
        cb({ projectId: null, sessionKey: cur.meta.user + "." + cur.meta.session_number });
      } catch (e) { /* the page's callback must not break the tag */ }
    }

    function viewPayload(v) {
      const o = { view_number: v.view_number, view_time: v.view_time, url: v.url };
      for (const k of ["title", "referrer"]) if (v[k]) o[k] = v[k];
      o.artificial = !v.natural;
      for (const k of ["language", "screen", "window", "document"]) if (v[k]) o[k] = v[k];
      if (v.natural) {
        const t = Object.assign({}, v.timings, readTimings(win.performance));
        if (Object.keys(t).length) o.timings = t;
      }
      o.duration_ms = Math.max(0, v.end - v.view_time);
      o.interaction_ms = Math.round(v.interaction);
      if (v.scroll != null) o.scroll_rate = v.scroll;
      o.rage_click = v.rage;
      o.multiple_button = v.multi;
      const lists = { api_errors: v.api_errors, errors: v.errors, custom_vars: v.custom_vars,
        dynamic_vars: Array.from(v.dvars.values()), transactions: v.transactions, cart_adds: v.cart_adds };
      for (const k in lists) if (lists[k] && lists[k].length) o[k] = lists[k];
      return o;
    }

    /** A view is sent once, when it ends (next pageview, or the page is hidden). */
    function endView(v, now) {
      if (!v.started || v.sent) return;
      v.sent = true;
      v.end = now;
      if (v.dropped || optedOut) return;
      const m = v.meta;
      const body = { v: 1, batch: uuid(win.crypto), sent_at: now, user: m.user, session_number: m.session_number,
        session_start: m.session_start, views: [viewPayload(v)] };
      send(fitBody(body));
    }

    function send(text) {
      if (optedOut || !endpoint) return;
      try {
        if (typeof nav.sendBeacon === "function" && nav.sendBeacon(endpoint, text)) return;
      } catch (e) { /* fall back to fetch */ }
      if (!origFetch) return writePending(readPending().concat([text]));
      const init = { method: "POST", body: text, keepalive: true, credentials: "omit", mode: "cors",
        headers: { "Content-Type": "text/plain;charset=UTF-8" } };
      let p;
      try {
        p = origFetch.call(win, endpoint, init); // the original fetch: our own beacons are not API errors
      } catch (e) { p = Promise.reject(e); }
      Promise.resolve(p).catch(() => {
        if (!optedOut) writePending(readPending().concat([text]));
      });
    }

    /** Bodies whose fetch failed on a previous page are sent again, same batch, fresh sent_at. */
    function resendPending(now) {
      const list = readPending();
      if (!list.length) return;
      writePending([]);
      if (optedOut) return;
      for (const text of list) {
        try {
          const body = JSON.parse(text);
          body.sent_at = now;
          send(JSON.stringify(body));
        } catch (e) { /* corrupt entry: drop it */ }
      }
    }

    /** Where data recorded now goes: the live view, or (before the first pageview) the holder. */
    const target = () => (cur.sent ? null : cur);

    const pushCapped = (list, item) => list.length < MAX_LIST && list.push(item);

    function addDvar(dv) {
      const v = target();
      if (!v) return;
      if (v.dvars.has(dv.key) || v.dvars.size < MAX_DVARS) v.dvars.set(dv.key, dv);
    }

    function optout() {
      optedOut = true;
      writeCookie("_cs_optout", "1", THIRTEEN_MONTHS_S);
      for (const name of cookieNames()) if (name.indexOf("_cs_") === 0 && name !== "_cs_optout") deleteCookie(name);
      writePending([]);
      // Unsent data is dropped: the live view is never sent, data held for the first view is discarded.
      if (cur.started) cur.dropped = true;
      else cur = newView();
      openTx = null;
      for (const store of [sessionCvars, pageCvars, nextCvars]) store.clear();
    }

    // ---- commands

    const commands = new Map();
    const command = (name, fn) => commands.set(name, fn);

    command("trackPageview", (path, options) => {
      const given = path != null && path !== "";
      if (preload && !webView) {
        // Queued before load: renames the natural pageview, no second view.
        if (given) pre.path = decodePath(path, options);
        return;
      }
      const url = given ? pathUrl(decodePath(path, options)) : loc.href;
      startView(false, cleanUrl(url), lastUrl || doc.referrer);
    });

    // Before load only: they override the natural pageview's URL.
    command("setPath", (path) => preload && path != null && (pre.path = cut(path, 255)));
    command("setQuery", (query) => preload && query != null && (pre.query = String(query)));

    command("setCustomVariable", (index, name, value, scope) => {
      const cv = normalizeCustomVar(index, name, value, scope);
      if (!cv) return;
      cv.t = Date.now();
      for (const store of [sessionCvars, pageCvars, nextCvars]) store.delete(cv.index);
      if (cv.kind === "visit") {
        sessionCvars.set(cv.index, cv);
        saveCvars();
      } else (cv.kind === "page" ? pageCvars : nextCvars).set(cv.index, cv);
    });

    command("trackDynamicVariable", (arg) => {
      const dv = normalizeDynamicVar(arg);
      if (dv) addDvar(dv);
    });

    command("ec:transaction:create", (tx) => {
      if (!tx || tx.id == null || tx.id === "") return;
      const revenue = truncateRevenue(tx.revenue);
      if (revenue == null) return;
      openTx = { id: cut(tx.id, 40), revenue: revenue, items: [] };
      const currency = tx.currency == null ? "" : String(tx.currency).trim().toUpperCase();
      if (/^([A-Z]{3}|\d{3})$/.test(currency)) openTx.currency = currency;
    });

    command("ec:transaction:items:add", (item) => {
      if (!openTx || !item || typeof item !== "object") return;
      const it = { id: cut(item.id != null && item.id !== "" ? item.id : openTx.id, 40) };
      for (const k of ["sku", "name", "merchant"]) if (item[k] != null && item[k] !== "") it[k] = cut(item[k], 255);
      const price = truncateRevenue(item.price);
      if (price != null) it.price = price;
      const q = Number(item.quantity);
      it.quantity = Number.isInteger(q) && q >= 0 ? q : 1;
      pushCapped(openTx.items, it);
    });

    command("ec:transaction:send", () => {
      const v = target();
      if (!openTx || !v || sentTx.has(openTx.id)) return;
      sentTx.add(openTx.id);
      pushCapped(v.transactions, Object.assign({}, openTx, { time: Date.now() }));
      openTx = null;
    });

    command("ec:cart:add", (item) => {
      const v = target();
      if (!v || !item || item.sku == null || item.sku === "") return;
      const entry = { sku: cut(item.sku, 255) };
      if (item.merchant != null && item.merchant !== "") entry.merchant = cut(item.merchant, 255);
      entry.time = Date.now();
      pushCapped(v.cart_adds, entry);
    });

    command("trackError", (message) => {
      // attrs have no field in the protocol: accepted and not sent.
      if (message != null) addError({ message: message, type: "custom" });
    });

    command("trackPageEvent", () => {}); // accepted; nothing of ours records it

    command("extendSession", () => {
      const now = Date.now();
      extendSession(now, true);
      addDvar({ key: "session_expiry_update", value: 1 });
    });

    command("optout", optout);

    command("optin", () => {
      optedOut = false;
      deleteCookie("_cs_optout"); // tracking resumes with the next pageview
    });

    command("afterPageView", (cb) => {
      if (typeof cb !== "function") return;
      pvCallbacks.push(cb);
      if (cur.started) callPageView(cb);
    });

    command("setOption", (name, value) => {
      if (name === "isWebView" && preload) webView = value === true;
    });

    function run(cmd) {
      if (!cmd || typeof cmd.length !== "number" || typeof cmd[0] !== "string") return;
      const fn = commands.get(cmd[0]);
      if (!fn) return; // unknown commands are ignored
      try {
        fn.apply(null, Array.prototype.slice.call(cmd, 1));
      } catch (e) { /* one bad command never breaks the queue */ }
    }

    // ---- automatic collection

    function addError(e) {
      const v = target();
      if (!v) return;
      const entry = { message: cut(redact(e.message == null ? "" : e.message), 300), time: Date.now() };
      if (e.filename) entry.filename = cleanUrl(e.filename);
      if (isCount(e.line)) entry.line = e.line;
      if (isCount(e.col)) entry.col = e.col;
      entry.type = e.type;
      pushCapped(v.errors, entry);
    }

    function isOwnRequest(url) {
      return !!endpointBase && stripHash(absolute(url)).split("?")[0] === endpointBase;
    }

    /** Same-origin requests keep their path, others their absolute URL; redacted, no #hash. */
    function apiUrl(url) {
      const abs = stripHash(absolute(url));
      const origin = loc.origin || "";
      return redact(origin && abs.indexOf(origin + "/") === 0 ? abs.slice(origin.length) : abs);
    }

    function addApiError(url, method, status) {
      const v = target();
      if (!v || !v.started) return;
      const now = Date.now();
      const entry = { url: cut(apiUrl(url), 2048), method: String(method || "GET").toUpperCase(), status: status, time: now };
      entry.after_click = now - lastClick <= AFTER_CLICK_MS;
      pushCapped(v.api_errors, entry);
    }

    function wrapFetch() {
      if (!origFetch) return;
      win.fetch = function fetch(input, init) {
        const p = origFetch.apply(this == null ? win : this, arguments);
        try {
          const url = typeof input === "string" ? input : input && input.url ? input.url : String(input);
          if (!isOwnRequest(url) && p && typeof p.then === "function") {
            const method = (init && init.method) || (input && input.method) || "GET";
            const failed = (status) => addApiError(url, method, status);
            p.then(
              (res) => res && res.status >= 400 && failed(res.status),
              (err) => !(err && err.name === "AbortError") && failed(0) // an abort is the page's choice
            );
          }
        } catch (e) { /* never disturb the page's request */ }
        return p; // the very same promise: result and rejection unchanged
      };
    }

    function wrapXhr() {
      const X = win.XMLHttpRequest;
      if (!X || !X.prototype || typeof X.prototype.open !== "function") return;
      const info = new WeakMap();
      const open = X.prototype.open;
      const sendXhr = X.prototype.send;
      X.prototype.open = function (method, url) {
        try {
          info.set(this, { method: method, url: String(url) });
        } catch (e) { /* ignore */ }
        return open.apply(this, arguments);
      };
      X.prototype.send = function () {
        const req = info.get(this);
        if (req && !isOwnRequest(req.url) && typeof this.addEventListener === "function") {
          const xhr = this;
          let aborted = false;
          xhr.addEventListener("abort", () => (aborted = true));
          xhr.addEventListener("loadend", () => {
            if (!aborted && (xhr.status >= 400 || xhr.status === 0)) addApiError(req.url, req.method, xhr.status);
          });
        }
        return sendXhr.apply(this, arguments);
      };
    }

    const on = (t, type, fn, opts) => t && typeof t.addEventListener === "function" && t.addEventListener(type, fn, opts);

    function userEvent(now) {
      const v = cur;
      if (v.started && !v.sent) {
        if (v.lastEvent != null) v.interaction += Math.min(INTERACTION_CAP_MS, Math.max(0, now - v.lastEvent));
        v.lastEvent = now;
      }
      extendSession(now, false);
    }

    function onClick(e) {
      const now = Date.now();
      userEvent(now);
      lastClick = now;
      if (!cur.started || cur.sent) return;
      if (typeof e.clientX === "number" && rageClick(now, e.clientX, e.clientY || 0)) cur.rage = true;
      const el = e.target && typeof e.target.closest === "function" ? e.target.closest(BUTTON_SELECTOR) : null;
      if (el && multiClick(el, now)) cur.multi = true;
    }

    function listen() {
      const passive = { capture: true, passive: true };
      on(win, "click", onClick, passive);
      for (const type of ["keydown", "touchstart"]) on(win, type, () => userEvent(Date.now()), passive);
      const onMove = () => {
        const now = Date.now();
        if (now - lastMove < MOVE_THROTTLE_MS) return;
        lastMove = now;
        userEvent(now);
      };
      on(win, "pointermove", onMove, passive);
      on(win, "mousemove", onMove, passive);
      const onScroll = () => {
        userEvent(Date.now());
        measureScroll();
      };
      on(win, "scroll", onScroll, { passive: true });
      on(win, "error", (e) => {
        if (!e || (e.target && e.target !== win)) return; // resource load errors (img, script) are not JS errors
        const err = e.error;
        const message = e.message || (err && err.message) || "";
        addError({ message, filename: e.filename, line: e.lineno, col: e.colno, type: (err && err.name) || "Error" });
      });
      on(win, "unhandledrejection", (e) => {
        const r = e && e.reason;
        addError({ message: r && r.message != null ? r.message : String(r), type: "unhandledrejection" });
      });
      const hidden = () => endView(cur, Date.now());
      on(doc, "visibilitychange", () => {
        if (doc.visibilityState === "hidden") hidden();
      });
      on(win, "pagehide", hidden);
      if (doc.readyState && doc.readyState !== "complete") {
        // loadEventEnd is only set once the load handlers have run.
        const natural = cur;
        on(win, "load", () =>
          setTimer(() => {
            if (natural.natural && !natural.sent) natural.timings = Object.assign({}, natural.timings, readTimings(win.performance));
          }, 0)
        );
      }
    }

    // ---- start

    const now = Date.now();
    loadState(now);
    optedOut = getCookie("_cs_optout") === "1";
    if (/[?#&]_cs_optout\b/.test(String(loc.href || ""))) optout();
    resendPending(now);

    let q = win._uxa;
    if (!q || typeof q.length !== "number" || typeof q.push !== "function") q = [];
    win._uxa = q;
    while (q.length) run(Array.prototype.shift.call(q)); // commands pushed while replaying are replayed too
    preload = false;
    q.push = function () {
      for (let i = 0; i < arguments.length; i++) run(arguments[i]);
      return q.length;
    };

    listen();
    wrapFetch();
    wrapXhr();
    if (!webView) startView(true, naturalUrl(), doc.referrer);
  }

  return {
    install, parseCsId, formatCsId, parseSession, formatSession, truncateRevenue, redact, stripHash, cut,
    normalizeCustomVar, normalizeDynamicVar, createRageClickDetector, createMultipleButtonDetector, readTimings, fitBody, uuid,
  };
});
