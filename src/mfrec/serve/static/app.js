// mfrec explorer: talks to the JSON API of the same server. No framework, nothing fetched from
// elsewhere. Text from the server (item labels come from a user's file) is only ever set with
// textContent, never parsed as HTML.
"use strict";

const state = {
  info: null,
  token: sessionStorage.getItem("mfrec-token") || "",
  mine: new Map(),      // JSON of an item id -> {item, name, rating}
  searchTimer: 0,
  newSeq: 0,            // answers to older fold-in requests are dropped
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c) node.append(c);
  return node;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  const res = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (res.status === 401) {
    $("token-box").hidden = false;
    throw new ApiError(401, "This server needs a token.");
  }
  if (!res.ok) {
    let msg = data && data.detail;
    if (Array.isArray(msg)) msg = msg.map((d) => d.msg).join("; ");
    throw new ApiError(res.status, msg || `${res.status} ${res.statusText}`);
  }
  return data;
}

function showError(err) {
  const box = $("error");
  if (!err) { box.hidden = true; return; }
  box.textContent = err.message || String(err);
  box.hidden = false;
}

// ------------------------------------------------------------------ ids in the address bar
function idText(id) { return encodeURIComponent(String(id)); }

function parseId(text, kind) {
  const raw = decodeURIComponent(text);
  if (kind === "integer" || kind === "number") {
    const t = raw.trim();
    if (!/^-?\d+$/.test(t)) throw new ApiError(0, `ids of this model are numbers, not "${raw}"`);
    return Number(t);
  }
  if (kind === "mixed" && /^-?\d+$/.test(raw.trim())) return Number(raw.trim());
  return raw;
}

function itemLabel(item, name) { return name || `item ${item}`; }

function itemLink(item, name) {
  return el("a", { href: `#item/${idText(item)}`, text: itemLabel(item, name) });
}

function fmt(x, digits = 3) {
  return typeof x === "number" ? x.toFixed(digits) : String(x);
}

function fillList(list, rows, render, empty = "Nothing to show.") {
  list.replaceChildren(...(rows.length ? rows.map(render) : [el("li", { class: "hint", text: empty })]));
}

function facts(dl, pairs) {
  dl.replaceChildren();
  for (const [k, v] of pairs) {
    if (v === null || v === undefined) continue;
    dl.append(el("dt", { text: k }), el("dd", { text: typeof v === "object" ? JSON.stringify(v) : String(v) }));
  }
}

// ------------------------------------------------------------------ views
function showView(name) {
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== `view-${name}`;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === name);
}

async function viewUser(idPart) {
  showView("user");
  const out = $("user-out");
  if (!idPart) {
    out.hidden = true;
    if (!$("user-id").value && state.info.examples) $("user-id").value = state.info.examples.user;
    return;
  }
  const user = parseId(idPart, state.info.user_id_type);
  $("user-id").value = String(user);
  const [hist, recs, sim] = await Promise.all([
    api("POST", "/api/user", { user, limit: 50 }),
    api("POST", "/api/recommend", { user, n: 10 }),
    state.info.capabilities.similar ? api("POST", "/api/similar/users", { user, n: 5 })
      : Promise.resolve({ users: [] }),
  ]);
  $("user-count").textContent = hist.n_items > hist.items.length
    ? `(${hist.items.length} of ${hist.n_items})` : `(${hist.n_items})`;
  fillList($("user-history"), hist.items, (r) => el("li", {}, itemLink(r.item, r.name),
    el("span", { class: "value", text: state.info.feedback === "implicit" ? "" : `★ ${fmt(r.rating, 1)}` })));
  fillList($("user-recs"), recs.items, (r) => el("li", {}, itemLink(r.item, r.name),
    el("span", { class: "value", text: fmt(r.score) })));
  fillList($("user-similar"), sim.users, (r) => el("li", {},
    el("a", { href: `#user/${idText(r.user)}`, text: `user ${r.user}` }),
    el("span", { class: "value", text: fmt(r.score) })));
  out.hidden = false;
}

async function viewItem(idPart) {
  showView("item");
  const item = parseId(idPart, state.info.item_id_type);
  const [det, sim] = await Promise.all([
    api("POST", "/api/item", { item }),
    state.info.capabilities.similar ? api("POST", "/api/similar/items", { item, n: 10 })
      : Promise.resolve({ items: [] }),
  ]);
  $("item-name").textContent = itemLabel(det.item, det.name);
  facts($("item-facts"), [["id", det.item], ["ratings", det.n_ratings],
    ["mean rating", det.mean_rating === null ? null : fmt(det.mean_rating, 2)]]);
  fillList($("item-similar"), sim.items, (r) => el("li", {}, itemLink(r.item, r.name),
    el("span", { class: "value", text: fmt(r.score) })));
}

function ratingChoices() {
  if (state.info.feedback === "implicit") return null;
  const [lo, hi] = state.info.training.rating_range || [1, 5];
  const steps = [];
  if (hi - lo >= 1 && hi - lo <= 10 && Number.isInteger(lo) && Number.isInteger(hi)) {
    for (let v = lo; v <= hi; v++) steps.push(v);
  } else {
    for (let k = 0; k < 5; k++) steps.push(Number((lo + (hi - lo) * k / 4).toFixed(2)));
  }
  return steps;
}

function rateControls(item, name) {
  const key = JSON.stringify(item);
  const current = state.mine.get(key);
  const choices = ratingChoices();
  if (!choices) {
    return el("button", {
      type: "button", class: "small secondary", "aria-pressed": current ? "true" : "false",
      "aria-label": `pick ${itemLabel(item, name)}`, text: current ? "✓" : "+",
      on: { click: () => setMine(item, name, current ? null : 1) },
    });
  }
  return el("span", { class: "stars" }, ...choices.map((v) => el("button", {
    type: "button", class: "small secondary",
    "aria-pressed": current && current.rating === v ? "true" : "false",
    "aria-label": `rate ${itemLabel(item, name)} ${v}`, text: String(v),
    on: { click: () => setMine(item, name, v) },
  })));
}

function setMine(item, name, rating) {
  const key = JSON.stringify(item);
  if (rating === null) state.mine.delete(key); else state.mine.set(key, { item, name, rating });
  renderMine();
  renderSearch(state.lastSearch || []);
  updateNewRecs().catch(showError);
}

function renderMine() {
  const rows = [...state.mine.values()];
  $("mine-count").textContent = rows.length ? `(${rows.length})` : "";
  fillList($("mine"), rows, (r) => el("li", {}, itemLink(r.item, r.name),
    el("span", { class: "value", text: state.info.feedback === "implicit" ? "" : `★ ${r.rating}` }),
    el("button", { type: "button", class: "small secondary", "aria-label": `remove ${itemLabel(r.item, r.name)}`,
      text: "×", on: { click: () => setMine(r.item, r.name, null) } })),
  "Nothing yet: search and rate.");
}

function renderSearch(items) {
  state.lastSearch = items;
  fillList($("search-results"), items, (r) => el("li", {}, itemLink(r.item, r.name),
    rateControls(r.item, r.name)), "No item matches.");
}

async function runSearch() {
  const q = $("search").value;
  const res = await api("GET", `/api/items/search?q=${encodeURIComponent(q)}&limit=15`);
  if ($("search").value === q) renderSearch(res.items);
}

async function updateNewRecs() {
  const seq = ++state.newSeq;
  const ratings = [...state.mine.values()].map((r) => ({ item: r.item, rating: r.rating }));
  if (!ratings.length) {
    $("new-hint").hidden = false;
    $("new-recs").replaceChildren();
    return;
  }
  const res = await api("POST", "/api/recommend/new", { ratings, n: 10 });
  if (seq !== state.newSeq) return;
  $("new-hint").hidden = true;
  fillList($("new-recs"), res.items, (r) => el("li", {}, itemLink(r.item, r.name),
    el("span", { class: "value", text: fmt(r.score) })));
}

async function viewNew() {
  showView("new");
  renderMine();
  if (!state.lastSearch) await runSearch();
  await updateNewRecs();
}

function viewModel() {
  showView("model");
  const i = state.info;
  facts($("model-facts"), [["class", i.class], ["feedback", i.feedback], ["users", i.n_users],
    ["items", i.n_items], ["factors", i.n_factors], ["user ids", i.user_id_type],
    ["item ids", i.item_id_type], ["file", `${i.file} (${(i.file_size / 1e6).toFixed(2)} MB)`],
    ["saved", i.created], ["mfrec", `${i.mfrec_version} (format ${i.format_version})`],
    ["loaded", `${i.loaded_at} (generation ${i.generation})`], ["item labels", i.labels ? "yes" : "no"]]);
  const t = i.training;
  facts($("model-training"), [["ratings", t.n_ratings], ["density", `${(100 * t.density).toFixed(3)} %`],
    ["rating range", t.rating_range ? t.rating_range.join(" – ") : null],
    ["global mean", fmt(t.global_mean)], ["epochs run", t.epochs],
    ["final loss", t.final_loss === null ? null : fmt(t.final_loss, 4)]]);
  facts($("model-params"), Object.entries(i.params));
}

// ------------------------------------------------------------------ start
function renderSummary() {
  const i = state.info;
  $("summary").textContent = `${i.class} · ${i.n_users.toLocaleString()} users · ` +
    `${i.n_items.toLocaleString()} items · ${i.training.n_ratings.toLocaleString()} ratings`;
}

async function route() {
  showError(null);
  try {
    if (!state.info) {
      state.info = await api("GET", "/api/info");
      $("token-box").hidden = true;
      renderSummary();
    }
    const [view, ...rest] = location.hash.replace(/^#/, "").split("/");
    const arg = rest.join("/");
    if (view === "item" && arg) await viewItem(arg);
    else if (view === "new") await viewNew();
    else if (view === "model") viewModel();
    else await viewUser(view === "user" ? arg : "");
  } catch (err) {
    showError(err);
  }
}

function start() {
  $("user-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = $("user-id").value.trim();
    if (v) location.hash = `#user/${idText(v)}`;
  });
  $("search").addEventListener("input", () => {
    clearTimeout(state.searchTimer);
    state.searchTimer = setTimeout(() => runSearch().catch(showError), 150);
  });
  $("mine-clear").addEventListener("click", () => {
    state.mine.clear();
    renderMine();
    renderSearch(state.lastSearch || []);
    updateNewRecs().catch(showError);
  });
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.token = $("token").value;
    sessionStorage.setItem("mfrec-token", state.token);
    route();
  });
  window.addEventListener("hashchange", route);
  route();
}

document.addEventListener("DOMContentLoaded", start);
