// The demo shop: a catalogue grid, a search box, click and buy buttons; every action is POSTed to
// the gateway as an event, and "Recommended for you" follows the user's SSE stream.
"use strict";

const state = { session: null, items: [], byId: new Map(), sent: new Map(), query: "" };
const $ = (id) => document.getElementById(id);

async function session() {
  const kept = JSON.parse(sessionStorage.getItem("stream-rec-session") || "null");
  if (kept && kept.expires_at * 1000 > Date.now() + 60000) return kept;
  const response = await fetch("/session", { method: "POST" });
  if (!response.ok) throw new Error("no session: " + response.status);
  const fresh = await response.json();
  sessionStorage.setItem("stream-rec-session", JSON.stringify(fresh));
  return fresh;
}

let counter = 0;
function eventId() {
  counter += 1;
  const random = crypto.getRandomValues(new Uint32Array(2));
  return `web-${Date.now().toString(36)}-${random[0].toString(36)}${random[1].toString(36)}-${counter}`;
}

async function post(type, fields, description) {
  const event = { event_id: eventId(), user_id: state.session.user_id, type, ts: Date.now(), ...fields };
  state.sent.set(event.event_id, { at: performance.now(), description });
  const li = document.createElement("li");
  li.textContent = description;
  $("history").prepend(li);
  const response = await fetch("/events", {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: "Bearer " + state.session.token },
    body: JSON.stringify(event),
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    $("status").textContent = `event refused (${response.status}): ${body.reason || ""}`;
  }
  return event.event_id;
}

function itemName(itemId) {
  const item = state.byId.get(itemId);
  return item ? item.name : itemId;
}

function card(item) {
  const div = document.createElement("div");
  div.className = "card";
  div.dataset.item = item.item_id;
  const h3 = document.createElement("h3");
  h3.textContent = item.name;
  const meta = document.createElement("p");
  meta.className = "meta";
  meta.textContent = `${item.category} · ${item.item_id}`;
  const view = document.createElement("button");
  view.className = "view";
  view.textContent = "View";
  view.addEventListener("click", () => {
    div.classList.add("seen");
    post("click", { item_id: item.item_id }, `viewed ${item.name}`);
  });
  const buy = document.createElement("button");
  buy.className = "buy";
  buy.textContent = "Buy";
  buy.addEventListener("click", () => post("purchase", { item_id: item.item_id }, `bought ${item.name}`));
  div.append(h3, meta, view, buy);
  return div;
}

function renderGrid() {
  const q = state.query.toLowerCase();
  const words = q.split(/\s+/).filter(Boolean);
  const shown = state.items
    .filter((it) => words.every((w) => (it.name + " " + it.category).toLowerCase().includes(w)))
    .slice(0, 48);
  $("grid").replaceChildren(...shown.map(card));
  $("catalogue-title").textContent = q ? `Results for "${state.query}" (${shown.length})` : "Catalogue";
}

function renderRecommendations(rec) {
  const now = performance.now();
  const sent = state.sent.get(rec.source_event_id);
  const panel = $("panel");
  if (sent) {
    $("latency").textContent = `${Math.round(now - sent.at)} ms after you ${sent.description}`;
  } else {
    $("latency").textContent = `latest known (event to answer ${rec.emitted_ts - rec.event_ts} ms)`;
  }
  $("recs").replaceChildren(...rec.items.slice(0, 8).map((it) => {
    const li = document.createElement("li");
    li.dataset.item = it.item_id;
    li.append(itemName(it.item_id) + " ");
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = it.score.toFixed(2);
    li.append(score);
    if (it.because) {
      const why = document.createElement("span");
      why.className = "because";
      why.textContent = `because you viewed ${itemName(it.because)}`;
      li.append(why);
    }
    return li;
  }));
  panel.dataset.sourceEvent = rec.source_event_id;
  panel.dataset.updates = String(Number(panel.dataset.updates) + 1);
  panel.classList.remove("fresh");
  void panel.offsetWidth; // restart the flash animation
  panel.classList.add("fresh");
}

function subscribe() {
  const { user_id, token } = state.session;
  const source = new EventSource(`/users/${encodeURIComponent(user_id)}/stream?token=${encodeURIComponent(token)}`);
  source.onopen = () => { $("status").textContent = `live · you are ${user_id}`; };
  source.onmessage = (message) => renderRecommendations(JSON.parse(message.data));
  source.onerror = async () => {
    $("status").textContent = "reconnecting...";
    if (state.session.expires_at * 1000 <= Date.now()) {  // the token ran out: a new session
      source.close();
      sessionStorage.removeItem("stream-rec-session");
      state.session = await session();
      subscribe();
    }
  };
}

async function main() {
  state.session = await session();
  const catalogue = await (await fetch("/catalogue.json")).json();
  state.items = catalogue.items;
  state.items.forEach((it) => state.byId.set(it.item_id, it));
  renderGrid();
  subscribe();
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.query = $("search").value.trim();
    renderGrid();
    if (state.query) post("search", { query: state.query }, `searched "${state.query}"`);
  });
  document.body.dataset.ready = "true";
}

main().catch((err) => { $("status").textContent = "error: " + err.message; });
