// The viewer: sign-in, the pinned log key, events, one event with its in-browser proof check,
// and the browser as a monitor of the log's history.

import { ApiError, getJSON, getText, memory, recordAccess, session, takeFragmentToken } from "./api.js";
import { drawChart } from "./chart.js";
import { el, renderJSON, renderPayload } from "./jsonview.js";
import {
  VerifyError,
  b64decode,
  b64encode,
  followRotation as followHandovers,
  keyFingerprint,
  parseCheckpoint,
  parseVerifierKey,
  toHex,
  verifyConsistency,
  verifyEvent,
  verifyNote,
} from "./verify.js";

const FILTERS = ["q", "service", "env", "type", "event_name", "request_id", "actor", "since", "until"];
const TIME_FILTERS = new Set(["since", "until"]);
const PAGE_SIZE = 50;
const EXPORT_PAGE = 1000;
const TAIL_INTERVAL_MS = 2000;
const CSV_COLUMNS = [
  "index", "id", "received_at", "type", "event_name", "service", "env", "request_id", "actor",
  "idempotency_key", "payload", "leaf_hash",
];
// Entry fields shown in their own rows of the detail view rather than under "Meta".
const ENTRY_FIELDS = new Set([
  "v", "tenant", "index", "id", "received_at", "idempotency_key", "payload", "erasable_hash", "erased", "tampered",
]);

const $ = (id) => document.getElementById(id);
const state = {
  key: null, // the pinned log key, parsed
  pages: [null], // cursor of each page start; the last is the page shown
  next: null,
  rows: [],
  tail: null,
  view: null, // the AbortController of the requests of the view shown
};

// --- messages ----------------------------------------------------------------------------

function describe(error) {
  if (error instanceof ApiError) {
    if (error.status === 401) return `The server refused the key (${error.reason}): ${error.message}`;
    return `${error.message} (${error.reason})`;
  }
  return error instanceof VerifyError ? error.message : String(error?.message || error);
}

function status(text, isError = false) {
  const node = $("events-status");
  node.textContent = text;
  node.classList.toggle("error", isError);
}

/** A loud warning over the whole page; several can stand at once (a new key and what it broke). */
function alarm(title, text, { repin = null } = {}) {
  const item = el("div", "alarm-item");
  item.append(el("strong", null, title), el("p", null, text));
  const same = [...$("alarm-list").children].find((node) => node.firstChild.textContent === title);
  if (same) same.replaceWith(item);
  else $("alarm-list").append(item);
  $("alarm").hidden = false;
  document.body.classList.add("compromised");
  if (repin) {
    $("alarm-repin").hidden = false;
    $("alarm-repin").onclick = repin;
  }
}

/** A notice that is not an alarm: something changed, and this browser checked it. */
function notice(title, text) {
  $("notice-text").replaceChildren(el("strong", null, title), " ", text);
  $("notice").hidden = false;
}

function clearAlarm() {
  $("alarm-list").replaceChildren();
  $("alarm-repin").hidden = true;
  $("alarm").hidden = true;
  document.body.classList.remove("compromised");
}

function show(...ids) {
  for (const id of ["sign-in", "pin", "events-view", "detail", "integrity"]) $(id).hidden = !ids.includes(id);
  $("sign-out").hidden = ids.includes("sign-in");
}

// --- sign-in and the pinned key ---------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  performance.mark("immutablelog:sign-in"); // User Timing marks: what benchmarks/viewer.py reads
  const input = $("read-key");
  const key = input.value.trim();
  if (await signInWith(key)) input.value = "";
}

/** Records the sign-in (which is where a refused key or link is refused), then enters. */
async function signInWith(key) {
  const error = $("sign-in-error");
  error.hidden = true;
  let answer;
  try {
    answer = await recordAccess("sign_in", {}, { key });
  } catch (failure) {
    show("sign-in");
    error.textContent =
      failure instanceof ApiError && failure.status === 403
        ? `This key may not read the log: ${failure.message}`
        : describe(failure);
    error.hidden = false;
    return false;
  }
  session.signIn(key);
  session.setLink(answer.viewer_link || null);
  await enter();
  return true;
}

function signOut(message = null) {
  session.signOut();
  stopTail();
  state.key = null;
  clearAlarm();
  $("notice").hidden = true;
  showLink(null);
  $("read-key").value = "";
  show("sign-in");
  if (message) {
    $("sign-in-error").textContent = message;
    $("sign-in-error").hidden = false;
  }
  $("read-key").focus();
}

/** Opened with a viewer link: say what it shows and until when, and fix its filters. */
function showLink(link) {
  const banner = $("link-banner");
  banner.hidden = !link;
  $("int-server").hidden = Boolean(link); // the whole log's check is not a link's to ask for
  const form = $("filters");
  for (const name of FILTERS) form.elements[name].disabled = Boolean(link && link.filter[name] !== undefined);
  if (!link) return;
  const filter = Object.entries(link.filter).map(([name, value]) => `${name}=${value}`).join(", ");
  banner.textContent = `Viewer link: only events with ${filter}; it expires ${new Date(link.expires_at).toLocaleString()}.`;
}

/** After sign-in: make sure a log key is pinned, then open the events. */
async function enter() {
  let served;
  try {
    served = (await getText("v1/log-key")).trim();
  } catch (failure) {
    show("sign-in");
    $("sign-in-error").textContent = describe(failure);
    $("sign-in-error").hidden = false;
    return;
  }
  const pinned = memory.get("log-key");
  if (!pinned) {
    await offerPin(served);
    return;
  }
  try {
    state.key = await parseVerifierKey(pinned.key);
  } catch (failure) {
    alarm("The pinned log key is unreadable", `${describe(failure)}. Nothing this page shows can be checked.`);
    return;
  }
  if (pinned.key !== served) await followRotation(pinned);
  if (state.key.text !== served) {
    let fingerprint = "unreadable";
    try {
      fingerprint = await keyFingerprint(await parseVerifierKey(served));
    } catch {
      // shown as unreadable
    }
    alarm(
      "The log's key has changed",
      `This browser pinned ${state.key.text} (fingerprint ${await keyFingerprint(state.key)}) on ` +
        `${new Date(memory.get("log-key").pinned_at).toLocaleString()}, but the server now presents ${served} ` +
        `(fingerprint ${fingerprint}). Proofs are still checked against the pinned key, so ` +
        `they fail until the change is confirmed with the log's operator.`,
      { repin: () => pin(served) },
    );
  }
  await openLog();
}

/**
 * The server presents another key than the pinned one: follow the log's own handovers from
 * the pinned key (checkpoints signed by it and by the next key, checked here), re-pin the
 * key they lead to, and say so. Without such a handover nothing changes: the caller warns.
 */
async function followRotation(pinned) {
  let followed;
  try {
    const note = await getText("v1/checkpoint");
    followed = await followHandovers(state.key, note, async () => (await getJSON("v1/log-keys")).handovers);
  } catch {
    return; // the checkpoint's own check (monitor) says what is wrong with it
  }
  if (!followed.rotations.length) return;
  const at = new Date().toISOString();
  const rotations = followed.rotations.map((r) => ({ old_key: r.oldKey, new_key: r.newKey, size: String(r.size), at }));
  memory.set("log-key", { key: followed.key.text, pinned_at: at, rotations: [...(pinned.rotations || []), ...rotations] });
  state.key = followed.key;
  const steps = followed.rotations.map((r) => `from ${r.oldKey} to ${r.newKey} (its checkpoint of size ${r.size} is signed by both)`);
  notice(
    "The log's key was rotated",
    `This browser checked the log's handover ${steps.join(", then ")} and now pins ${followed.key.text} ` +
      `(fingerprint ${await keyFingerprint(followed.key)}).`,
  );
}

async function offerPin(served) {
  let key;
  try {
    key = await parseVerifierKey(served);
  } catch (failure) {
    show("sign-in");
    $("sign-in-error").textContent = `The server's log key is unusable: ${describe(failure)}`;
    $("sign-in-error").hidden = false;
    return;
  }
  $("pin-key").textContent = served;
  $("pin-fingerprint").textContent = await keyFingerprint(key);
  show("pin");
  $("pin-accept").onclick = () => pin(served);
  $("pin-accept").focus();
}

async function pin(served) {
  memory.set("log-key", { key: served, pinned_at: new Date().toISOString() });
  clearAlarm();
  await enter();
}

async function openLog() {
  showLink(session.link());
  $("log-name").textContent = state.key.name;
  $("int-key").textContent = state.key.text;
  $("int-fingerprint").textContent = await keyFingerprint(state.key);
  const rotations = memory.get("log-key")?.rotations || [];
  $("int-rotations").textContent = rotations
    .map((r) => `from ${r.old_key} at size ${r.size}, followed ${new Date(r.at).toLocaleString()}`)
    .join("; ");
  $("int-rotations").hidden = $("int-rotations-label").hidden = !rotations.length;
  await route();
  await monitor();
}

// --- the browser as a monitor ------------------------------------------------------------

/**
 * Checks the latest checkpoint against the pinned key and, if this browser verified one
 * before, that the log still extends it (consistency proof). A rewritten or rolled-back
 * history turns the whole page red.
 */
async function monitor() {
  let checkpoint;
  try {
    checkpoint = parseCheckpoint(await verifyNote(state.key, await getText("v1/checkpoint")));
    if (!checkpoint.origin.startsWith(`${state.key.name}/`)) {
      throw new VerifyError(`the checkpoint is for ${checkpoint.origin}, not a log named ${state.key.name}`);
    }
  } catch (failure) {
    if (failure instanceof ApiError) {
      $("int-result").textContent = describe(failure);
      return;
    }
    alarm("The log's checkpoint does not verify", `${describe(failure)}.`);
    return;
  }
  const slot = `checkpoint:${checkpoint.origin}`;
  const last = memory.get(slot);
  if (last) {
    const lastSize = BigInt(last.size);
    const when = new Date(last.checked_at).toLocaleString();
    if (checkpoint.size < lastSize) {
      alarm(
        "The log has gone back in time",
        `On ${when} this browser verified a tree of ${last.size} entries; the server now signs a ` +
          `tree of only ${checkpoint.size} entries.`,
      );
      return;
    }
    try {
      const proof = await getJSON("v1/proofs/consistency", { first: last.size, second: checkpoint.size });
      await verifyConsistency(
        lastSize,
        checkpoint.size,
        proof.hashes.map((h) => b64decode(h, "proof hash")),
        b64decode(last.root, "saved root"),
        checkpoint.root,
      );
    } catch (failure) {
      alarm(
        "The log's history was rewritten",
        `On ${when} this browser verified a tree of ${last.size} entries; the log's tree of ` +
          `${checkpoint.size} entries does not extend it: ${describe(failure)}.`,
      );
      return;
    }
  }
  const checkedAt = new Date().toISOString();
  memory.set(slot, { size: String(checkpoint.size), root: b64encode(checkpoint.root), checked_at: checkedAt });
  $("int-size").textContent = String(checkpoint.size);
  $("int-root").textContent = toHex(checkpoint.root);
  $("int-checked").textContent = new Date(checkedAt).toLocaleString();
}

async function serverCheck() {
  const out = $("int-result");
  out.textContent = "The server is checking the whole log…";
  try {
    const report = await getJSON("v1/verify");
    out.textContent = report.valid
      ? `The server checked ${report.events_checked} events and ${report.checkpoints_checked} checkpoints: intact.`
      : `The server found ${report.breaks.length} problem(s): ` +
        report.breaks.map((b) => `${b.kind} at ${b.index ?? "?"}: ${b.message}`).join("; ");
    out.className = report.valid ? "" : "error";
  } catch (failure) {
    out.textContent = describe(failure);
    out.className = "error";
  }
}

// --- URL state ---------------------------------------------------------------------------

function currentFilters() {
  const params = new URLSearchParams(location.search);
  const filters = {};
  for (const name of FILTERS) {
    const value = params.get(name);
    if (value) filters[name] = value;
  }
  // A viewer link's own filters always apply (the server enforces them anyway).
  return { ...filters, ...(session.link()?.filter || {}) };
}

function navigate(filters, eventId = null, replace = false) {
  const params = new URLSearchParams();
  for (const name of FILTERS) if (filters[name]) params.set(name, filters[name]);
  if (eventId) params.set("event", eventId);
  const query = params.toString();
  const url = `${location.pathname}${query ? `?${query}` : ""}`;
  history[replace ? "replaceState" : "pushState"](null, "", url);
  return route();
}

async function route() {
  const eventId = new URLSearchParams(location.search).get("event");
  fillForm(currentFilters());
  if (eventId) {
    supersede();
    stopTail();
    show("detail", "integrity");
    await openEvent(eventId);
  } else {
    show("events-view", "integrity");
    state.pages = [null];
    // Rows first: on a big log the chart's aggregate costs far more than a page of events.
    const signal = supersede();
    await loadPage(signal);
    if (!signal.aborted) loadChart(signal);
  }
}

/**
 * A new view (other filters, an event opened) cancels the requests of the one it replaces:
 * a chart still counting for filters no longer shown would compete with the new search.
 */
function supersede() {
  state.view?.abort();
  state.view = new AbortController();
  return state.view.signal;
}

// datetime-local inputs hold local wall time; the URL and the API hold RFC 3339 in UTC.
function toLocalInput(iso) {
  const moment = new Date(iso);
  if (Number.isNaN(moment.getTime())) return "";
  const local = new Date(moment.getTime() - moment.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 19);
}

function fromLocalInput(value) {
  const moment = new Date(value);
  return Number.isNaN(moment.getTime()) ? "" : moment.toISOString().replace(".000Z", "Z");
}

function fillForm(filters) {
  const form = $("filters");
  for (const name of FILTERS) {
    const value = filters[name] || "";
    form.elements[name].value = TIME_FILTERS.has(name) ? (value ? toLocalInput(value) : "") : value;
  }
}

function readForm() {
  const form = $("filters");
  const filters = {};
  for (const name of FILTERS) {
    const value = form.elements[name].value.trim();
    if (value) filters[name] = TIME_FILTERS.has(name) ? fromLocalInput(value) : value;
  }
  return filters;
}

// --- events ------------------------------------------------------------------------------

function eventRow(event) {
  const row = el("tr");
  row.tabIndex = 0;
  row.dataset.id = event.id;
  const cells = [
    [String(event.index)],
    [event.received_at],
    [event.type, `type type-${["success", "info", "warning", "error"].includes(event.type) ? event.type : "other"}`],
    [event.event_name],
    [event.service, "wide"],
    [event.env ?? "", "wide"],
    [event.actor ?? "", "wide"],
    [event.request_id ?? "", "wide"],
  ];
  for (const [text, className] of cells) row.append(el("td", className, text ?? ""));
  // Seconds are enough to scan a column; the cell's title keeps the full time.
  row.cells[1].textContent = String(event.received_at).slice(0, 19).replace("T", " ");
  row.cells[1].title = event.received_at;
  return row;
}

async function loadPage(signal = state.view?.signal) {
  const filters = currentFilters();
  const cursor = state.pages[state.pages.length - 1];
  status("Loading…");
  let body;
  try {
    body = await getJSON("v1/events", { ...filters, limit: PAGE_SIZE, cursor }, { signal });
  } catch (failure) {
    if (signal?.aborted) return; // a newer view took over
    if (failure instanceof ApiError && failure.status === 401) return signOut(describe(failure));
    status(describe(failure), true);
    renderRows([]);
    return;
  }
  if (signal?.aborted) return;
  state.next = body.next_cursor;
  renderRows(body.events);
  const filtered = Object.keys(filters).length > 0;
  status(body.events.length ? "" : filtered ? "No events match these filters." : "The log has no events yet.");
  $("page-label").textContent = `Page ${state.pages.length}`;
  $("newer").disabled = state.pages.length <= 1;
  $("older").disabled = !state.next;
}

/** The chart of the current filters; a bar narrows the time range to its bucket. */
async function loadChart(signal) {
  const filters = currentFilters();
  const caption = $("chart-caption");
  caption.textContent = "Counting…";
  caption.classList.remove("too-broad", "partial");
  let body;
  try {
    body = await getJSON("v1/event-counts", filters, { signal });
  } catch (failure) {
    if (signal.aborted) return;
    // Too many matches to count in time: a state of its own, not an error of the page.
    const tooBroad = failure instanceof ApiError && failure.reason === "count_too_broad";
    caption.textContent = tooBroad ? `Not charted: ${failure.message}.` : `No chart: ${describe(failure)}`;
    caption.classList.toggle("too-broad", tooBroad);
    drawChart($("chart"), [], null);
    return;
  }
  if (signal.aborted) return;
  const total = body.buckets.reduce((sum, bucket) => sum + bucket.total, 0);
  caption.textContent = body.buckets.length
    ? `${total} events, per ${body.interval}, ${body.buckets[0].start} to ${body.buckets.at(-1).end}`
    : "No events to chart.";
  // Too many matches to count them all in time: the newest were counted, and it says so.
  const partial = body.complete === false;
  caption.classList.toggle("partial", partial);
  if (partial) {
    const range = body.buckets.length
      ? `, per ${body.interval}, ${body.buckets[0].start} to ${body.buckets.at(-1).end}`
      : "";
    caption.textContent =
      `Counted from index ${body.from_index} on only: ${total} events` +
      ` (older events holding these words are not in the chart)${range}.`;
  }
  drawChart($("chart"), body.buckets, (bucket) =>
    navigate({ ...filters, since: bucket.start, until: bucket.end }),
  );
}

function renderRows(events) {
  state.rows = events;
  $("events").tBodies[0].replaceChildren(...events.map(eventRow));
  performance.mark("immutablelog:rows");
}

function page(step) {
  if (step > 0 && state.next) state.pages.push(state.next);
  if (step < 0 && state.pages.length > 1) state.pages.pop();
  return loadPage();
}

// Live tail: poll for events after the newest one shown, oldest first, and put them on top.
function startTail() {
  if (state.tail) clearInterval(state.tail);
  if (state.pages.length > 1) {
    state.pages = [null];
    loadPage();
  }
  state.tail = setInterval(tailOnce, TAIL_INTERVAL_MS);
}

function stopTail() {
  if (state.tail) clearInterval(state.tail);
  state.tail = null;
  $("live-tail").checked = false;
}

async function tailOnce() {
  const top = state.rows.length ? state.rows[0].index : null;
  let body;
  try {
    body = await getJSON("v1/events", { ...currentFilters(), order: "asc", after: top ?? undefined, limit: 100 });
  } catch (failure) {
    status(describe(failure), true);
    return;
  }
  const fresh = top === null ? body.events : body.events.filter((e) => e.index > top);
  if (!fresh.length || !state.tail) return;
  fresh.reverse();
  const rows = fresh.map(eventRow);
  for (const row of rows) row.classList.add("fresh");
  $("events").tBodies[0].prepend(...rows);
  state.rows = [...fresh, ...state.rows];
  status("");
}

// --- export ------------------------------------------------------------------------------

function csvCell(value) {
  const text = value === null || value === undefined ? "" : String(value);
  // A leading = + - @ would make a spreadsheet evaluate the cell: keep it text.
  const safe = /^[=+\-@\t\r]/.test(text) ? `'${text}` : text;
  return /[",\r\n]/.test(safe) ? `"${safe.replaceAll('"', '""')}"` : safe;
}

async function exportEvents(format) {
  const out = $("export-status");
  const filters = currentFilters();
  const parts = format === "csv" ? [CSV_COLUMNS.join(",") + "\r\n"] : [];
  let cursor = null;
  let count = 0;
  try {
    await recordAccess("export", { format, filters });
    do {
      out.textContent = `Exporting… ${count} events`;
      const body = await getJSON("v1/events", { ...filters, limit: EXPORT_PAGE, cursor });
      for (const event of body.events) {
        parts.push(
          format === "csv"
            ? CSV_COLUMNS.map((c) => csvCell(event[c])).join(",") + "\r\n"
            : JSON.stringify(event) + "\n",
        );
      }
      count += body.events.length;
      cursor = body.next_cursor;
    } while (cursor);
  } catch (failure) {
    out.textContent = `Export failed: ${describe(failure)}`;
    return;
  }
  const type = format === "csv" ? "text/csv" : "application/x-ndjson";
  const link = el("a");
  link.href = URL.createObjectURL(new Blob(parts, { type }));
  link.download = `events-${new Date().toISOString().replaceAll(":", "")}.${format}`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  out.textContent = `Exported ${count} events.`;
}

// --- one event ---------------------------------------------------------------------------

function badge(ok, text) {
  const node = $("badge");
  node.className = `badge ${ok === null ? "" : ok ? "verified" : "failed"}`;
  node.textContent = text;
}

function field(list, name, value) {
  const dd = el("dd");
  if (value instanceof Node) dd.append(value);
  else dd.textContent = value ?? "";
  list.append(el("dt", null, name), dd);
}

function requestLink(requestId) {
  const params = new URLSearchParams({ request_id: requestId });
  const link = el("a", null, requestId);
  link.href = `${location.pathname}?${params}`;
  link.title = "Every event of this request";
  link.addEventListener("click", (event) => {
    event.preventDefault();
    navigate({ request_id: requestId });
  });
  return link;
}

function renderEvent(entry, leafHex) {
  $("detail-title").textContent = entry.event_name ?? entry.id ?? "";
  const list = $("detail-fields");
  list.replaceChildren();
  field(list, "Index", String(entry.index));
  field(list, "Id", entry.id);
  field(list, "Time", entry.received_at);
  field(list, "Type", entry.type);
  field(list, "Service", entry.service);
  if (entry.env) field(list, "Env", entry.env);
  if (entry.actor) field(list, "Actor", entry.actor);
  if (entry.request_id) field(list, "Request", requestLink(entry.request_id));
  field(list, "Leaf hash", el("code", null, leafHex));
  const erased = entry.erased;
  $("detail-payload").replaceChildren(
    erased
      ? el("p", "erased", `Erased ${erased.at} by ${erased.by}: ${erased.reason} (erasure record ${erased.index})`)
      : entry.payload == null
        ? el("p", "erased", `Values missing: ${entry.tampered ?? "not served"}`)
        : renderPayload(entry.payload),
  );
  const meta = Object.fromEntries(Object.entries(entry).filter(([name]) => !ENTRY_FIELDS.has(name) && name !== "leaf_hash"));
  $("detail-meta").replaceChildren(renderJSON(meta));
}

async function openEvent(eventId) {
  badge(null, "Checking this event in the browser…");
  $("detail-title").textContent = "";
  $("detail-fields").replaceChildren();
  $("detail-payload").replaceChildren();
  $("detail-meta").replaceChildren();
  let body;
  let entryText;
  let erasable;
  try {
    body = await getJSON(`v1/events/${encodeURIComponent(eventId)}`);
    const page = await getJSON("v1/entries", { start: body.index, end: body.index + 1 });
    const item = page.entries.find((e) => e.index === body.index);
    entryText = item?.entry;
    erasable = item?.erasable;
  } catch (failure) {
    if (failure instanceof ApiError && failure.status === 401) return signOut(describe(failure));
    badge(false, `Not verified: ${describe(failure)}`);
    return;
  }
  if (typeof entryText !== "string") {
    renderEvent(body.event, body.leaf_hash);
    badge(false, "Not verified: the server did not hand out this entry's bytes.");
    return;
  }
  performance.mark("immutablelog:verify");
  try {
    const { checkpoint, leaf, entry } = await verifyEvent(state.key, {
      entryText,
      erasable,
      index: body.index,
      treeSize: body.tree_size,
      proof: body.inclusion_proof,
      note: body.checkpoint,
    });
    if (entry.id !== eventId) throw new VerifyError(`the entry at index ${body.index} is ${entry.id}, not ${eventId}`);
    const took = performance.measure("immutablelog:verified", "immutablelog:verify").duration.toFixed(1);
    // What is shown is what was hashed, not the server's rendering of it (an erasure is
    // the server's word: its record is an entry of the same log).
    renderEvent({ ...entry, erased: body.event.erased }, toHex(leaf));
    badge(
      true,
      `Verified in this browser: entry ${body.index} is in the log's tree of ${checkpoint.size} ` +
        `entries, whose root is signed by the pinned key ${state.key.name} (${took} ms).`,
    );
  } catch (failure) {
    renderEvent(body.event, body.leaf_hash);
    badge(false, `Not verified: ${describe(failure)}`);
  }
}

// --- wiring ------------------------------------------------------------------------------

function wire() {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut());
  $("pin-cancel").addEventListener("click", () => signOut());
  $("notice-close").addEventListener("click", () => ($("notice").hidden = true));
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    performance.mark("immutablelog:search");
    navigate(readForm());
  });
  $("clear-filters").addEventListener("click", () => navigate({}));
  $("newer").addEventListener("click", () => page(-1));
  $("older").addEventListener("click", () => page(1));
  $("live-tail").addEventListener("change", (event) => (event.target.checked ? startTail() : stopTail()));
  $("export-csv").addEventListener("click", () => exportEvents("csv"));
  $("export-jsonl").addEventListener("click", () => exportEvents("jsonl"));
  $("detail-close").addEventListener("click", () => navigate(currentFilters()));
  $("int-check").addEventListener("click", monitor);
  $("int-server").addEventListener("click", serverCheck);
  $("events").tBodies[0].addEventListener("click", (event) => {
    const row = event.target.closest("tr");
    if (row) navigate(currentFilters(), row.dataset.id);
  });
  $("events").tBodies[0].addEventListener("keydown", (event) => {
    const row = event.target.closest("tr");
    if (!row) return;
    if (event.key === "Enter") navigate(currentFilters(), row.dataset.id);
    if (event.key === "ArrowDown") row.nextElementSibling?.focus();
    if (event.key === "ArrowUp") row.previousElementSibling?.focus();
  });
  document.addEventListener("keydown", (event) => {
    const typing = event.target.closest("input, select, textarea");
    if (event.key === "/" && !typing && !$("events-view").hidden) {
      event.preventDefault();
      $("filters").elements.q.focus();
    }
    if (event.key === "Escape" && !$("detail").hidden) navigate(currentFilters());
  });
  window.addEventListener("popstate", () => state.key && route());
}

wire();
const linkToken = takeFragmentToken();
if (linkToken) signInWith(linkToken);
else if (session.key()) enter();
else show("sign-in");
