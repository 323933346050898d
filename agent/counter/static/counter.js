"use strict";
// The counter page: redraws from /api/state whenever /api/events says something
// changed. Every text from the scanner (codes, warnings) goes in with textContent.
(function () {
  const t = JSON.parse(document.getElementById("strings").textContent);
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);
  const FACTS_MS = 5000;
  let shown = -1;
  let lastBanner = null;
  let current = null;
  // the figures of the batch in view, kept from one redraw to the next so that a
  // thumbnail is fetched once, not again at every change (thumbnails are no-store)
  let figures = new Map();

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  async function post(path, body) {
    const r = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body || {}),
      credentials: "same-origin",
    });
    return r;
  }

  function mb(bytes) {
    if (bytes >= 1073741824) return (bytes / 1073741824).toFixed(1) + " GB";
    return (bytes / 1048576).toFixed(1) + " MB";
  }

  function duration(s) {
    if (s < 90) return Math.round(s) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    return (s / 3600).toFixed(1) + " h";
  }

  function renderFacts(state) {
    const sc = state.scanner || {};
    const key = "scanner_" + (sc.state || "error");
    const scanner = $("scanner-state");
    scanner.textContent = (t[key] || t.scanner_error) + (sc.model ? " · " + sc.model : "");
    scanner.className = sc.state === "ready" ? "ok" : sc.state === "unknown" ? "unknown" : "bad";
    $("disk-free").textContent = mb((state.disk || {}).free_bytes || 0);
    const sync = state.sync || {};
    const link = $("link-state");
    link.textContent = sync.link_up ? t.link_up : t.link_down;
    link.className = sync.link_up ? "ok" : "bad";
    let waiting = (sync.pending_docs || 0) + " " + t.documents + " · " + mb(sync.pending_bytes || 0);
    if (sync.eta_s) waiting += " · " + t.eta + " " + duration(sync.eta_s);
    $("waiting").textContent = waiting;
    $("last-receipt").textContent = sync.last_receipt || t.never;
  }

  function badge(name) {
    return el("span", "badge badge-" + name, t["badge_" + name] || name);
  }

  function documentList(docs, review, batchId) {
    const list = el("ol", "documents");
    docs.forEach((d, i) => {
      const item = el("li", "document");
      const title = d.doc_type || t.document + " " + (i + 1);
      item.append(el("strong", null, title + " · " + d.pages + " " + t.pages));
      // the label in the page's font: monospace fonts lack Vietnamese letters (ồ, ị)
      const line = (label, code) => {
        const div = el("div", "code-line", label + ": ");
        div.append(el("span", "code", code));
        return div;
      };
      if (d.dossier_code) item.append(line(t.dossier, d.dossier_code));
      if (d.owner_id) item.append(line(t.owner, d.owner_id));
      if (d.certified) {
        const c = d.certified;
        item.append(el("div", "badge badge-certified", t.certified + " " + c.number + " · " + t.book + " " + c.book));
      }
      if (d.unsigned) item.append(el("div", "badge flag-unsigned", t.not_signed + ": " + d.unsigned));
      if ((d.flags || []).length) {
        const flags = el("div", "flags");
        d.flags.forEach((f) => flags.append(el("span", "badge flag-" + f, t["flag_" + f] || f)));
        item.append(flags);
      }
      if (review && d.page_indexes) {
        const pages = el("div", "review-pages");
        // "a new document starts here" on a page inside a document moves a boundary
        // to it: the next document's (its start comes up to this page), or for the
        // last document its own (the pages before this one join the document before)
        const boundary = i + 1 < docs.length ? i + 1 : i;
        d.page_indexes.forEach((p, k) => {
          const b = el("span", "review-page");
          b.dataset.page = String(p);
          b.append(el("b", "page-no", p + 1));
          if (i > 0 && k === 0) b.classList.add("starts");
          if (k > 0 && boundary > 0) {
            const start = el("button", "small move", t.starts_here);
            start.dataset.doc = String(boundary);
            start.dataset.page = String(p);
            start.addEventListener("click", () => edit(batchId, "move", p, boundary));
            b.append(start);
          }
          const drop = el("button", "small drop", t.drop_page);
          drop.dataset.page = String(p);
          drop.addEventListener("click", () => edit(batchId, "drop", p, -1));
          b.append(drop);
          if (current && current.source !== "folder") {
            // the officer puts the sheet back in the feeder: it replaces this page
            const again = el("button", "small rescan", t.rescan_page);
            again.dataset.page = String(p);
            again.addEventListener("click", () => edit(batchId, "rescan", p, -1));
            b.append(again);
          }
          pages.append(b);
        });
        item.append(pages);
      }
      list.append(item);
    });
    return list;
  }

  function warnings(list) {
    const box = el("ul", "warnings");
    list.forEach((w) => box.append(el("li", "warning", w)));
    return box;
  }

  function pageFigure(batchId, p) {
    const fig = el("figure", "page");
    fig.dataset.index = String(p.index);
    if (p.thumb) {
      const img = el("img");
      img.alt = String(p.index + 1);
      img.src = "/api/thumb/" + encodeURIComponent(batchId) + "/" + p.index;
      fig.append(img);
    }
    const cap = el("figcaption", null, p.index + 1);
    p.badges.forEach((b) => cap.append(badge(b)));
    fig.append(cap);
    return fig;
  }

  function renderBatch(batch, running) {
    current = batch;
    $("batch").dataset.running = running ? "1" : "0";
    $("batch").dataset.batch = batch ? batch.batch_id : "";
    $("batch-title").textContent = running || !batch ? t.batch : t.batch_last;
    $("batch-status").textContent = batch ? t["status_" + batch.status] || batch.status : "";
    $("no-batch").hidden = !!batch;
    $("review").hidden = !(batch && batch.status === "review");
    $("batch-documents").replaceChildren();
    $("page-count").textContent = batch ? "(" + batch.pages.length + " " + t.pages + ")" : "";
    const kept = new Map();
    const shownFigures = (batch ? batch.pages : []).map((p) => {
      const key = [batch.batch_id, p.index, p.thumb, p.badges.join(" ")].join("/");
      const fig = figures.get(key) || pageFigure(batch.batch_id, p);
      kept.set(key, fig);
      return fig;
    });
    figures = kept;
    $("pages").replaceChildren(...shownFigures);
    if (!batch) return;
    if (batch.status === "review") {
      $("batch-documents").append(documentList(batch.documents, true, batch.batch_id));
    }
  }

  function renderHistory(batches) {
    const box = $("last-batches");
    box.replaceChildren();
    batches.forEach((b) => {
      const art = el("article", "past status-" + b.status);
      art.dataset.batch = b.batch_id;
      art.append(el("h3", null, (t["status_" + b.status] || b.status) + " · " + b.pages_in + " " + t.pages));
      art.append(documentList(b.documents, false, b.batch_id));
      if (b.warnings.length) art.append(warnings(b.warnings));
      box.append(art);
    });
  }

  function beep(ok) {
    try {
      const ctx = new (window.AudioContext || window.webkitAudioContext)();
      const osc = ctx.createOscillator();
      osc.frequency.value = ok ? 880 : 220;
      osc.connect(ctx.destination);
      osc.start();
      osc.stop(ctx.currentTime + (ok ? 0.2 : 0.6));
    } catch (e) {
      /* no sound on this screen */
    }
  }

  function renderBanner(banner) {
    const box = $("banner");
    if (!banner) {
      box.hidden = true;
      return;
    }
    const id = banner.batch_id + ":" + banner.kind;
    box.textContent = t[banner.kind] || banner.kind;
    box.className = "banner banner-" + banner.kind;
    box.hidden = false;
    if (lastBanner !== null && lastBanner !== id) beep(banner.kind === "batch_done");
    lastBanner = id;
  }

  function renderSigning(signing) {
    const s = signing || {};
    $("signing").hidden = !s.available;
    $("pin-form").hidden = !!s.open;
    $("signing-open").hidden = !s.open;
    $("signer").textContent = s.open ? s.signer + (s.title ? " — " + s.title : "") : "";
    $("certify-next").checked = !!s.certify_next;
  }

  function render(state) {
    // scanner, disk and link change without the batch changing: always redrawn
    renderFacts(state);
    renderSigning(state.signing);
    if (state.version === shown) return;
    shown = state.version;
    // the batch in progress, else the last one, so its pages stay in view
    renderBatch(state.batch || (state.last_batches || [])[0] || null, !!state.batch);
    renderHistory(state.last_batches || []);
    renderBanner(state.banner);
    document.body.dataset.version = String(state.version);
  }

  let fetching = false;
  let again = false;

  // one request at a time: events that come while one is out ask for one more after it
  async function refresh() {
    if (fetching) {
      again = true;
      return;
    }
    fetching = true;
    try {
      const r = await fetch("/api/state", { credentials: "same-origin" });
      if (r.status === 401) {
        window.location.assign("/login");
        return;
      }
      if (r.ok) render(await r.json());
    } finally {
      fetching = false;
      if (again) {
        again = false;
        refresh();
      }
    }
  }

  async function edit(batchId, action, page, doc) {
    await post("/api/review/" + encodeURIComponent(batchId), { action, page, doc });
  }

  function say(r, ok) {
    r.json().then((body) => {
      $("action-result").textContent = r.ok ? t[ok] || ok : body.error || String(r.status);
    });
  }

  $("start-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const r = await post("/api/batch", { profile: $("profile").value });
    say(r, "requested");
  });
  $("dossier-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const r = await post("/api/dossier", { code: $("dossier-code").value });
    if (r.ok) $("dossier-code").value = "";
    say(r, "dossier_set");
  });
  $("pin-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const pin = $("pin");
    const r = await post("/api/signing/open", { pin: pin.value });
    pin.value = ""; // the PIN stays nowhere on the page
    say(r, "signing_open");
    refresh();
  });
  $("close-signing").addEventListener("click", async () => {
    say(await post("/api/signing/close", {}), "signing_closed");
    refresh();
  });
  $("certify-next").addEventListener("change", async (ev) => {
    const on = ev.target.checked;
    const r = await post("/api/signing/next", { on });
    say(r, on ? "certify_on" : "certify_off");
    refresh();
  });
  $("confirm").addEventListener("click", () => {
    if (current) edit(current.batch_id, "confirm", -1, -1);
  });
  $("sheet-kind").addEventListener("change", () => {
    $("sheet-tthc").hidden = $("sheet-kind").value !== "DOSSIER";
  });
  $("sheet-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const kind = $("sheet-kind").value;
    const field = $("sheet-field").value;
    const body = { kind, copies: $("sheet-copies").value };
    if (kind === "DOC") body.type = field;
    if (kind === "DOSSIER") {
      body.dossier = field;
      body.tthc = $("sheet-tthc").value; // a dossier cover sheet needs its procedure code
    }
    const r = await post("/api/sheets", body);
    if (!r.ok) return say(r, "print");
    const url = URL.createObjectURL(await r.blob());
    window.open(url, "_blank");
  });
  $("sign-out").addEventListener("click", async () => {
    await post("/api/logout", {});
    window.location.assign("/login");
  });

  render(JSON.parse($("initial-state").textContent));
  const events = new EventSource("/api/events");
  events.addEventListener("state", (ev) => {
    if (Number(ev.data) !== shown) refresh();
  });
  events.onerror = () => setTimeout(refresh, 2000);
  setInterval(refresh, FACTS_MS); // the sync service's progress, a scanner error
})();
