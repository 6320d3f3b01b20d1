// HMS web pages: the one script (no inline script anywhere: the
// Content-Security-Policy forbids it). Pages work without it; it adds:
// - live boards: an element with data-live="URL" subscribes to that
//   Server-Sent Events stream; `tile` events replace the element with the
//   same id, `census` replaces the census, `snapshot` marks the board fresh;
// - the stale banner: when nothing arrived for 5 s (the server sends a
//   `tick` with its wall clock every 2 s) the banner says so with the time
//   of the data (the hospital's clock, as the tiles show it), the
//   board stays as it was, and the stream reconnects by itself;
// - refreshed regions: an element with data-refresh="URL" is replaced every
//   5 s by the element with the same id that URL answers (the fleet table);
//   a failed fetch leaves it as it was, a lost session goes to sign-in.
"use strict";

(function () {
  const STALE_MS = 5000;

  function clock(d) {
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  }

  function replace(html) {
    const tpl = document.createElement("template");
    tpl.innerHTML = html.trim();
    const fresh = tpl.content.firstElementChild;
    if (!fresh || !fresh.id) return;
    const old = document.getElementById(fresh.id);
    if (!old) return;
    // Keep keyboard focus where it was when the focused control is replaced.
    const focused = old.contains(document.activeElement) ? document.activeElement : null;
    const key = focused && focused.getAttribute("data-key");
    const changed = old.getAttribute("data-version") !== fresh.getAttribute("data-version");
    old.replaceWith(fresh);
    if (changed && fresh.classList.contains("bed")) fresh.classList.add("changed");
    if (key) {
      const again = fresh.querySelector('[data-key="' + CSS.escape(key) + '"]');
      if (again) again.focus();
    }
  }

  function live(el) {
    const url = el.getAttribute("data-live");
    const banner = document.getElementById("live-banner");
    let lastSeen = Date.now();
    // The server's wall clock (the hospital's time zone) at the last tick.
    let lastClock = null;
    let stale = false;
    let source = null;

    function fresh() {
      lastSeen = Date.now();
      if (stale) {
        stale = false;
        banner.hidden = true;
        banner.textContent = "";
        document.body.removeAttribute("data-stale");
      }
      el.setAttribute("data-as-of", new Date(lastSeen).toISOString());
    }

    function connect() {
      source = new EventSource(url);
      source.addEventListener("tile", (e) => { replace(JSON.parse(e.data).html); fresh(); });
      source.addEventListener("census", (e) => { replace(JSON.parse(e.data).html); fresh(); });
      const clocked = (e) => { lastClock = JSON.parse(e.data).clock || null; fresh(); };
      source.addEventListener("snapshot", clocked);
      source.addEventListener("tick", clocked);
      source.addEventListener("error", () => {
        if (source.readyState === EventSource.CLOSED) {
          // Refused (signed out, or the server answered with an error):
          // ask the page itself whether the session still holds.
          source = null;
          fetch(location.href, { method: "HEAD", credentials: "same-origin" })
            .then((r) => {
              if (r.redirected && new URL(r.url).pathname === "/login") {
                location.assign("/login");
              } else {
                setTimeout(connect, 2000);
              }
            })
            .catch(() => setTimeout(connect, 2000));
        }
      });
    }

    setInterval(() => {
      if (Date.now() - lastSeen > STALE_MS && !stale) {
        stale = true;
        document.body.setAttribute("data-stale", "true");
        banner.textContent = "Live updates lost. Showing the board as of " +
          (lastClock || clock(new Date(lastSeen))) + ". Reconnecting…";
        banner.hidden = false;
      }
    }, 1000);
    connect();
  }

  function refresh(el) {
    const url = el.getAttribute("data-refresh");
    setInterval(() => {
      fetch(url, { credentials: "same-origin" })
        .then((r) => {
          if (r.redirected && new URL(r.url).pathname.endsWith("/login")) {
            location.assign(r.url);
            return null;
          }
          return r.ok ? r.text() : null;
        })
        .then((html) => { if (html) replace(html); })
        .catch(() => {});
    }, 5000);
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("[data-live]").forEach(live);
    document.querySelectorAll("[data-refresh]").forEach(refresh);
  });
})();
